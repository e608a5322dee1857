//! Twilio's Messages API: hands an outbound message to Twilio, with
//! `StatusCallback` pointing at our status webhook. A request is retried only
//! where Twilio's answer says it was not acted on (429, 503, or no connection
//! at all): a timeout or another 5xx may have sent the SMS already.

use std::time::Duration;

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
    /// Twilio could not be reached, or answered in a way that does not say
    /// whether the SMS went out.
    Unavailable(String),
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

/// A client of Twilio's Messages API.
#[derive(Debug, Clone)]
pub struct TwilioClient {
    http: reqwest::Client,
    config: TwilioConfig,
    messages_url: String,
    status_callback: String,
}

impl TwilioClient {
    /// A client for the account, posting to `api_base`, with status callbacks
    /// to `public_url`.
    pub fn new(config: TwilioConfig, api_base: &str, public_url: &str) -> Self {
        let messages_url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            api_base.trim_end_matches('/'),
            config.account_sid
        );
        TwilioClient {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap_or_default(),
            config,
            messages_url,
            status_callback: format!(
                "{}/api/webhooks/twilio/status",
                public_url.trim_end_matches('/')
            ),
        }
    }

    /// Sends one SMS from the team's number.
    pub async fn send(&self, from: &str, to: &str, body: &str) -> Result<Accepted, SendError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (status, outcome) = self.attempt(from, to, body).await;
            match outcome {
                Err(SendError::Unavailable(why)) if attempt < 3 && may_retry(status) => {
                    tracing::warn!(attempt, %why, "Twilio unavailable; retrying");
                    tokio::time::sleep(Duration::from_millis(500 * attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn attempt(
        &self,
        from: &str,
        to: &str,
        body: &str,
    ) -> (Option<u16>, Result<Accepted, SendError>) {
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
            Err(e) if e.is_connect() => return (None, Err(SendError::Unavailable(e.to_string()))),
            // A timeout may come after Twilio accepted: never retried.
            Err(e) => return (Some(0), Err(SendError::Unavailable(e.to_string()))),
        };
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        if (200..300).contains(&status) {
            return match serde_json::from_str::<Accepted>(&text) {
                Ok(accepted) => (Some(status), Ok(accepted)),
                Err(e) => (
                    Some(status),
                    Err(SendError::Unavailable(format!(
                        "unreadable answer from Twilio: {e}"
                    ))),
                ),
            };
        }
        if status == 429 || status >= 500 {
            return (
                Some(status),
                Err(SendError::Unavailable(format!("Twilio answered {status}"))),
            );
        }
        let error: Option<ErrorBody> = serde_json::from_str(&text).ok();
        let code = error
            .as_ref()
            .and_then(|e| e.code)
            .map_or_else(|| status.to_string(), |c| c.to_string());
        let message = error.and_then(|e| e.message).unwrap_or(text);
        (Some(status), Err(SendError::Refused { code, message }))
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
}
