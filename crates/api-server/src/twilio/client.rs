//! Twilio's Messages API: hands an outbound message to Twilio, with
//! `StatusCallback` pointing at our status webhook, and looks up the
//! messages already sent to a number (to learn whether an attempt whose
//! answer was lost went out). One call is one attempt: the SMS worker
//! (`twilio/delivery.rs`) decides what to try next from the [`SendError`].

use std::time::Duration;

use chrono::{NaiveDateTime, Utc};
use serde::Deserialize;

use crate::config::TwilioConfig;

/// What Twilio answered for an accepted message.
#[derive(Debug, Clone, Deserialize)]
pub struct Accepted {
    /// The message's SID (`SM…`).
    pub sid: String,
    /// Its status, usually `queued` or `accepted`.
    pub status: String,
}

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Twilio refused it; `code` is Twilio's error code (e.g. 21211).
    Refused {
        /// Twilio's error code, or the HTTP status when it gave none.
        code: String,
        /// Twilio's explanation.
        message: String,
    },
    /// Nothing was sent: no connection was made, or Twilio answered 429 or
    /// 503. Safe to try again.
    NotSent(String),
    /// Twilio may have sent it: the request timed out, the connection broke
    /// after it was sent, or Twilio answered another 5xx or an unreadable
    /// 2xx. Look it up before trying again.
    Unknown(String),
}

#[derive(Deserialize)]
struct ErrorBody {
    code: Option<i64>,
    message: Option<String>,
}

/// Whether an attempt may be repeated without risking a second SMS.
/// `status` is Twilio's HTTP status, `None` when no connection was made.
pub fn may_retry(status: Option<u16>) -> bool {
    matches!(status, None | Some(429) | Some(503))
}

/// One message of Twilio's Messages list, as much as a lookup reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Listed {
    /// `SM…`.
    pub sid: String,
    /// Its status now.
    pub status: String,
    /// The text (null once redacted).
    #[serde(default)]
    pub body: Option<String>,
    /// The recipient.
    #[serde(default)]
    pub to: Option<String>,
    /// The sender.
    #[serde(default)]
    pub from: Option<String>,
    /// `outbound-api` for messages created through the API.
    #[serde(default)]
    pub direction: Option<String>,
    /// RFC 2822, e.g. `Thu, 30 Jul 2015 20:12:31 +0000`.
    #[serde(default)]
    pub date_created: Option<String>,
}

#[derive(Deserialize)]
struct ListPage {
    #[serde(default)]
    messages: Vec<Listed>,
    #[serde(default)]
    next_page_uri: Option<String>,
}

/// How far before the first attempt a listed message still counts (clocks
/// differ; Twilio dates have whole seconds).
pub const LOOKUP_SLACK: Duration = Duration::from_secs(120);
/// Messages per page of a lookup, and pages read at most.
const LOOKUP_PAGE_SIZE: &str = "50";
const LOOKUP_PAGES: usize = 4;

/// Whether `listed` is the message `from` → `to` with `body` created at or
/// after `since` (less [`LOOKUP_SLACK`]). An unreadable date counts as in
/// the window: adopting a twin is better than sending twice.
pub fn matches(listed: &Listed, from: &str, to: &str, body: &str, since: NaiveDateTime) -> bool {
    let outbound = listed
        .direction
        .as_deref()
        .is_none_or(|d| d.starts_with("outbound"));
    let in_window = listed
        .date_created
        .as_deref()
        .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
        .is_none_or(|created| {
            let start = since - chrono::Duration::from_std(LOOKUP_SLACK).unwrap_or_default();
            created.with_timezone(&Utc).naive_utc() >= start
        });
    outbound
        && in_window
        && listed.to.as_deref() == Some(to)
        && listed.from.as_deref() == Some(from)
        && listed.body.as_deref() == Some(body)
}

/// A client of Twilio's Messages API.
#[derive(Debug, Clone)]
pub struct TwilioClient {
    http: reqwest::Client,
    config: TwilioConfig,
    api_base: String,
    /// `/2010-04-01/Accounts/{sid}/Messages.json?`: what a next page starts with.
    messages_path: String,
    messages_url: String,
    status_callback: String,
}

impl TwilioClient {
    /// A client for the account, calling `api_base`, with status callbacks
    /// to `public_url`; each request gives up after `timeout`.
    pub fn new(config: TwilioConfig, api_base: &str, public_url: &str, timeout: Duration) -> Self {
        let api_base = api_base.trim_end_matches('/').to_owned();
        let messages_path = format!("/2010-04-01/Accounts/{}/Messages.json?", config.account_sid);
        let messages_url = format!("{api_base}{}", messages_path.trim_end_matches('?'));
        TwilioClient {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .unwrap_or_default(),
            config,
            api_base,
            messages_path,
            messages_url,
            status_callback: format!(
                "{}/api/webhooks/twilio/status",
                public_url.trim_end_matches('/')
            ),
        }
    }

    /// Sends one SMS from the team's number: one request, never repeated
    /// here.
    pub async fn send(&self, from: &str, to: &str, body: &str) -> Result<Accepted, SendError> {
        let form = [
            ("To", to),
            ("From", from),
            ("Body", body),
            ("StatusCallback", self.status_callback.as_str()),
        ];
        let answer = self
            .http
            .post(&self.messages_url)
            .basic_auth(
                &self.config.account_sid,
                Some(self.config.auth_token.expose()),
            )
            .form(&form)
            .send()
            .await;
        let response = match answer {
            Ok(response) => response,
            // Without the URL: the lookup's carries phone numbers.
            Err(e) if e.is_connect() => {
                return Err(SendError::NotSent(e.without_url().to_string()))
            }
            // A timeout may come after Twilio accepted.
            Err(e) => return Err(SendError::Unknown(e.without_url().to_string())),
        };
        let status = response.status().as_u16();
        let text = match response.text().await {
            Ok(text) => text,
            Err(e) if may_retry(Some(status)) => {
                return Err(SendError::NotSent(e.without_url().to_string()))
            }
            Err(e) => return Err(SendError::Unknown(e.without_url().to_string())),
        };
        if (200..300).contains(&status) {
            return serde_json::from_str::<Accepted>(&text)
                .map_err(|e| SendError::Unknown(format!("unreadable answer from Twilio: {e}")));
        }
        if may_retry(Some(status)) {
            return Err(SendError::NotSent(format!("Twilio answered {status}")));
        }
        if status >= 500 {
            return Err(SendError::Unknown(format!("Twilio answered {status}")));
        }
        let error: Option<ErrorBody> = serde_json::from_str(&text).ok();
        let code = error
            .as_ref()
            .and_then(|e| e.code)
            .map_or_else(|| status.to_string(), |c| c.to_string());
        let message = error.and_then(|e| e.message).unwrap_or(text);
        Err(SendError::Refused { code, message })
    }

    /// The messages Twilio holds that match the send `from` → `to` of `body`
    /// first attempted at `since` (see [`matches`]), oldest first; empty
    /// when Twilio has none, so a new attempt cannot send it twice. An
    /// error when Twilio could not say.
    ///
    /// Two reads of the Messages list, both filtered by `To` and `From`: one
    /// with `DateSent>=` the day of `since` (following `next_page_uri` for a
    /// few pages), and one without, since a message still waiting in
    /// Twilio's queue has no `date_sent` yet.
    pub async fn find_sent(
        &self,
        from: &str,
        to: &str,
        body: &str,
        since: NaiveDateTime,
    ) -> Result<Vec<Listed>, String> {
        let day = (since - chrono::Duration::from_std(LOOKUP_SLACK).unwrap_or_default())
            .date()
            .format("%Y-%m-%d")
            .to_string();
        let mut found = Vec::new();
        let dated = [
            ("To", to),
            ("From", from),
            ("DateSent>", day.as_str()),
            ("PageSize", LOOKUP_PAGE_SIZE),
        ];
        let mut next = Some(self.list_url(&dated)?);
        for _ in 0..LOOKUP_PAGES {
            let Some(url) = next.take() else { break };
            let page = self.list(&url).await?;
            found.extend(page.messages);
            next = match page.next_page_uri {
                // Only a further page of this list: the credentials go
                // nowhere else, whatever the answer says.
                Some(uri) if uri.starts_with(&self.messages_path) => {
                    Some(format!("{}{uri}", self.api_base))
                }
                Some(_) => return Err("Twilio named a next page outside the Messages list".into()),
                None => None,
            };
        }
        let undated = [("To", to), ("From", from), ("PageSize", LOOKUP_PAGE_SIZE)];
        found.extend(self.list(&self.list_url(&undated)?).await?.messages);
        found.retain(|m| matches(m, from, to, body, since));
        // Both reads may list the same message.
        let mut seen = std::collections::HashSet::new();
        found.retain(|m| seen.insert(m.sid.clone()));
        found.sort_by_key(|m| {
            m.date_created
                .as_deref()
                .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
                .map(|d| d.timestamp())
        });
        Ok(found)
    }

    fn list_url(&self, query: &[(&str, &str)]) -> Result<String, String> {
        url::Url::parse_with_params(&self.messages_url, query)
            .map(String::from)
            .map_err(|e| format!("bad Twilio URL: {e}"))
    }

    async fn list(&self, url: &str) -> Result<ListPage, String> {
        let response = self
            .http
            .get(url)
            .basic_auth(
                &self.config.account_sid,
                Some(self.config.auth_token.expose()),
            )
            .send()
            .await
            .map_err(|e| {
                format!(
                    "looking the message up at Twilio failed: {}",
                    e.without_url()
                )
            })?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| {
            format!(
                "looking the message up at Twilio failed: {}",
                e.without_url()
            )
        })?;
        if !(200..300).contains(&status) {
            return Err(format!("Twilio answered {status} to the lookup"));
        }
        serde_json::from_str(&text)
            .map_err(|e| format!("unreadable lookup answer from Twilio: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_answers_that_prove_nothing_was_sent_are_retried() {
        assert!(may_retry(None));
        assert!(may_retry(Some(429)));
        assert!(may_retry(Some(503)));
        for status in [0, 400, 401, 404, 500, 502, 504] {
            assert!(!may_retry(Some(status)), "{status}");
        }
    }

    fn listed(body: &str, created: &str) -> Listed {
        Listed {
            sid: "SM1".into(),
            status: "sent".into(),
            body: Some(body.into()),
            to: Some("+14155550111".into()),
            from: Some("+14155550100".into()),
            direction: Some("outbound-api".into()),
            date_created: Some(created.into()),
        }
    }

    #[test]
    fn a_listed_message_matches_on_numbers_body_and_time() {
        let since = chrono::NaiveDate::from_ymd_opt(2026, 1, 2)
            .and_then(|d| d.and_hms_opt(10, 0, 0))
            .unwrap();
        let (from, to) = ("+14155550100", "+14155550111");
        let fresh = listed("hi", "Fri, 02 Jan 2026 10:00:05 +0000");
        assert!(matches(&fresh, from, to, "hi", since));
        assert!(!matches(&fresh, from, to, "hi!", since));
        assert!(!matches(&fresh, to, from, "hi", since));
        // Within the slack before the first attempt: still ours.
        let early = listed("hi", "Fri, 02 Jan 2026 09:59:00 +0000");
        assert!(matches(&early, from, to, "hi", since));
        // An older twin was another send.
        let old = listed("hi", "Fri, 02 Jan 2026 09:50:00 +0000");
        assert!(!matches(&old, from, to, "hi", since));
        let mut inbound = fresh.clone();
        inbound.direction = Some("inbound".into());
        assert!(!matches(&inbound, from, to, "hi", since));
        let mut undated = fresh;
        undated.date_created = Some("yesterday".into());
        assert!(matches(&undated, from, to, "hi", since));
    }
}
