//! The SMS worker: sends the outbound messages queued in `sms_outbox` (in
//! the same transaction as the message) through Twilio, and records (and
//! publishes) what Twilio answered.
//!
//! It runs on its own thread and runtime, woken by each send and polling
//! for due jobs. A job is claimed with a lease, so a job whose claimer died
//! (a stop, a kill -9) is taken again once the lease has passed; every claim
//! marks the job `sent_unknown` until its outcome is recorded, so a job
//! taken again, or one whose request timed out or got a 5xx, is first looked
//! up in Twilio's Messages list and its SID adopted if Twilio has it. A new
//! request goes out only when nothing can have been sent: no connection,
//! 429, 503, or a lookup that found nothing. Retries back off; when the
//! attempts are spent the message ends `failed` (`twilio_unavailable`).
//! Twilio's refusals end it at once with Twilio's code.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tracing::Instrument;

use crate::app::AppState;
use crate::background::{Signals, WorkerThread};
use crate::config::ConfigError;
use crate::db::write_transaction;
use crate::error::AppError;
use crate::models::contact::Contact;
use crate::models::early_status::EarlyStatus;
use crate::models::message::{Message, STATUS_QUEUED};
use crate::models::sms_outbox::{Claimed, SmsJob};
use crate::models::team::Team;
use crate::realtime::{notify_contact, ContactEvent};
use crate::twilio::client::SendError;
use crate::twilio::status::may_move;

/// The error code of a message Twilio could not be made to take.
pub const TWILIO_UNAVAILABLE: &str = "twilio_unavailable";
/// A job whose message is older than this is not sent any more (it is
/// still looked up, in case an earlier attempt went out): a send left
/// behind by a long stop fails rather than reach the contact hours late.
pub const MAX_AGE: Duration = Duration::from_secs(3600);
/// Sends under way at once, per instance.
const IN_FLIGHT: usize = 16;
/// The longest the worker sleeps between looks at the queue.
const POLL: Duration = Duration::from_secs(1);

/// How sends are tried (`TWILIO_SEND_ATTEMPTS`, `TWILIO_RETRY_BASE_MS`,
/// `TWILIO_RETRY_MAX_MS`, `TWILIO_TIMEOUT_MS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendSettings {
    /// Attempts before a message ends `failed` (default 8).
    pub max_attempts: i32,
    /// The wait after the first failed attempt, doubling after each one
    /// (default 2 s).
    pub retry_base: Duration,
    /// The longest wait between attempts (default 3 min).
    pub retry_max: Duration,
    /// How long one request to Twilio may take (default 15 s).
    pub timeout: Duration,
}

impl Default for SendSettings {
    fn default() -> Self {
        SendSettings {
            max_attempts: 8,
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(180),
            timeout: Duration::from_secs(15),
        }
    }
}

impl SendSettings {
    /// Reads the settings through `get` (unset: the defaults).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let number = |variable: &'static str, max: u64| -> Result<Option<u64>, ConfigError> {
            get(variable)
                .map(|v| {
                    v.trim()
                        .parse::<u64>()
                        .ok()
                        .filter(|n| (1..=max).contains(n))
                        .ok_or_else(|| ConfigError {
                            variable,
                            message: format!("{v:?} is not a whole number from 1 to {max}"),
                        })
                })
                .transpose()
        };
        let defaults = SendSettings::default();
        let millis = |variable, default: Duration| -> Result<Duration, ConfigError> {
            Ok(number(variable, 86_400_000)?.map_or(default, Duration::from_millis))
        };
        Ok(SendSettings {
            max_attempts: number("TWILIO_SEND_ATTEMPTS", 100)?
                .map_or(defaults.max_attempts, |n| n as i32),
            retry_base: millis("TWILIO_RETRY_BASE_MS", defaults.retry_base)?,
            retry_max: millis("TWILIO_RETRY_MAX_MS", defaults.retry_max)?,
            timeout: millis("TWILIO_TIMEOUT_MS", defaults.timeout)?,
        })
    }

    /// How long a claim holds a job: longer than one attempt can take (two
    /// lookup reads of a few pages and the send, each bounded by
    /// `timeout`), so a live claimer is never overtaken mid-request.
    pub fn lease(&self) -> Duration {
        self.timeout * 8 + Duration::from_secs(2)
    }

    /// The wait after failed attempt number `attempt` (1 for the first).
    pub fn backoff(&self, attempt: i32) -> Duration {
        let doublings = attempt.saturating_sub(1).clamp(0, 20) as u32;
        self.retry_base
            .saturating_mul(1u32 << doublings)
            .min(self.retry_max)
    }
}

/// What follows a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again after this wait.
    Retry(Duration),
    /// The attempts are spent: the message fails.
    GiveUp,
}

/// The retry decision, after failed attempt number `attempt` whose SMS
/// `may_be_sent`. An attempt that may have sent the SMS always gets one
/// more round, even past the last attempt: that round only looks the
/// message up (and adopts what Twilio has) before giving up.
pub fn after_failure(settings: &SendSettings, attempt: i32, may_be_sent: bool) -> Next {
    if attempt < settings.max_attempts || (may_be_sent && attempt == settings.max_attempts) {
        Next::Retry(settings.backoff(attempt))
    } else {
        Next::GiveUp
    }
}

/// A handle on the SMS worker; started (by `app::build`) only when Twilio is
/// configured.
#[derive(Debug, Default)]
pub struct SmsWorker {
    /// Its thread; a stop's deadline is until when sends under way may finish.
    thread: WorkerThread,
}

impl SmsWorker {
    /// A worker not started yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the worker's thread for `state` (held weakly: the worker ends
    /// when the application does).
    pub fn start(&self, state: &Arc<AppState>) -> std::io::Result<()> {
        let state = Arc::downgrade(state);
        self.thread.spawn("sms-worker", move |runtime, signals| {
            runtime.block_on(run(state, signals))
        })
    }

    /// Tells the worker a send was queued.
    pub fn wake(&self) {
        self.thread.wake();
    }

    /// Stops claiming, lets the sends under way finish for at most
    /// `timeout`, then stops. A send still under way then is dropped with
    /// its job claimed: after the lease, the next start (or another
    /// instance) looks it up at Twilio and sends it only if Twilio has not.
    pub fn shutdown(&self, timeout: Duration) {
        // The runtime drops what is left at the deadline; recording an
        // answer already received takes a moment more.
        if !self.thread.stop(timeout, Duration::from_secs(2)) {
            tracing::warn!("the SMS worker did not stop in time; its claimed sends are taken again after their lease");
        }
    }
}

async fn run(state: Weak<AppState>, signals: Signals) {
    let mut sends: JoinSet<()> = JoinSet::new();
    loop {
        if signals.stop_by().is_some() {
            break;
        }
        let Some(app) = state.upgrade() else { break };
        let free = IN_FLIGHT.saturating_sub(sends.len());
        let mut wait = POLL;
        if free > 0 {
            // One read of the queue a pass: a claim only when a job is due
            // (an idle queue costs no write transaction), else a wait until
            // the next one is.
            match next_due(&app).await {
                Ok(Some(due)) if due <= crate::models::now() => {
                    match claim(&app, free as i64).await {
                        // Claimed: look again at once for what is due next.
                        Ok(claimed) if !claimed.is_empty() => {
                            for job in claimed {
                                sends.spawn(process(app.clone(), job));
                            }
                            wait = Duration::ZERO;
                        }
                        // Due but nothing claimed (another instance holds
                        // the rows): the poll, not a spin.
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "could not claim queued SMS"),
                    }
                }
                Ok(Some(due)) => {
                    wait = (due - crate::models::now())
                        .to_std()
                        .unwrap_or(Duration::ZERO)
                        .clamp(Duration::from_millis(5), POLL);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "could not read the SMS queue"),
            }
        }
        drop(app);
        tokio::select! {
            _ = signals.woken() => {}
            _ = tokio::time::sleep(wait) => {}
            Some(_) = sends.join_next(), if !sends.is_empty() => {}
        }
    }
    let deadline = signals.stop_by().unwrap_or_else(Instant::now);
    while !sends.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, sends.join_next()).await.is_err() {
            tracing::warn!(
                sends = sends.len(),
                "SMS sends still under way at shutdown are left claimed; they are looked up and resumed after their lease"
            );
            break;
        }
    }
    sends.abort_all();
}

async fn claim(state: &AppState, limit: i64) -> Result<Vec<Claimed>, AppError> {
    let lease = state.config.twilio_send.lease();
    state
        .write(move |conn| {
            write_transaction(conn, |conn| {
                Ok(SmsJob::claim(conn, crate::models::now(), limit, lease)?)
            })
        })
        .await
}

async fn next_due(state: &AppState) -> Result<Option<chrono::NaiveDateTime>, AppError> {
    state.db(|conn| Ok(SmsJob::next_due(conn)?)).await
}

async fn process(state: Arc<AppState>, claimed: Claimed) {
    let message_id = claimed.job.message_id;
    let span = tracing::info_span!("sms", message_id, attempt = claimed.attempt);
    if let Err(e) = try_process(&state, &claimed).instrument(span).await {
        // The job stays claimed; after its lease it is looked up and tried again.
        tracing::error!(message_id, error = %e, "could not handle a queued SMS");
    }
}

async fn try_process(state: &AppState, claimed: &Claimed) -> Result<(), AppError> {
    let Some(twilio) = state.twilio.clone() else {
        return Ok(());
    };
    let message_id = claimed.job.message_id;
    let loaded = state
        .db(move |conn| {
            let message = Message::reload(conn, message_id)?;
            let team = Team::find(conn, message.team_id)?;
            let contact = Contact::find_in_team(conn, team.id, message.contact_id)?;
            Ok((message, contact, team))
        })
        .await?;
    let (message, Some(contact), team) = loaded else {
        // The contact is gone: nothing to send to.
        state
            .write(move |conn| Ok(SmsJob::remove(conn, message_id)?))
            .await?;
        return Ok(());
    };
    if message.twilio_sid.is_some() || message.status != STATUS_QUEUED {
        // Recorded already (by an earlier claimer whose lease ran out).
        state
            .write(move |conn| Ok(SmsJob::remove(conn, message_id)?))
            .await?;
        return Ok(());
    }
    let settings = state.config.twilio_send.clone();
    let now = crate::models::now();
    let too_old = (now - message.created_at)
        .to_std()
        .is_ok_and(|age| age > MAX_AGE);
    let spent = claimed.job.attempts >= settings.max_attempts || too_old;
    let (from, to, body) = (
        team.phone_number.as_str(),
        contact.phone.as_str(),
        message.body.as_str(),
    );
    if claimed.job.sent_unknown {
        let since = claimed.job.first_attempt_at.unwrap_or(message.created_at);
        match twilio.find_sent(from, to, body, since).await {
            Ok(found) if !found.is_empty() => {
                let candidates = found.into_iter().map(|m| (m.sid, m.status)).collect();
                // Which of them is free is decided in the transaction that
                // records it: another message may adopt a twin meanwhile.
                if record_sent(state, &contact, message_id, candidates, Adopt::FreeOnly).await? {
                    tracing::info!(
                        message_id,
                        "Twilio had the message already; its SID is adopted"
                    );
                    return Ok(());
                }
            }
            Ok(_) => {}
            Err(why) => {
                tracing::warn!(message_id, %why, "could not learn whether Twilio has the message");
                return retry_or_fail(state, &contact, claimed, true, why, spent).await;
            }
        }
    }
    if spent {
        let why = claimed
            .job
            .last_error
            .clone()
            .unwrap_or_else(|| "too old to send".to_owned());
        return fail(state, &contact, claimed, TWILIO_UNAVAILABLE, &why).await;
    }
    match twilio.send(from, to, body).await {
        Ok(accepted) => {
            let candidates = vec![(accepted.sid, accepted.status)];
            record_sent(state, &contact, message_id, candidates, Adopt::Sent)
                .await
                .map(|_| ())
        }
        Err(SendError::Refused { code, message }) => {
            tracing::warn!(message_id, %code, %message, "Twilio refused the message");
            fail(state, &contact, claimed, &code, &message).await
        }
        Err(SendError::NotSent(why)) => {
            tracing::warn!(message_id, %why, "Twilio did not take the message");
            retry_or_fail(state, &contact, claimed, false, why, false).await
        }
        Err(SendError::Unknown(why)) => {
            tracing::warn!(message_id, %why, "Twilio may have taken the message; it is looked up before any new attempt");
            retry_or_fail(state, &contact, claimed, true, why, false).await
        }
    }
}

/// Puts the job back with its backoff, or fails the message when the
/// attempts are spent (`spent`: this round was the last one anyway).
async fn retry_or_fail(
    state: &AppState,
    contact: &Contact,
    claimed: &Claimed,
    may_be_sent: bool,
    why: String,
    spent: bool,
) -> Result<(), AppError> {
    let next = if spent {
        Next::GiveUp
    } else {
        after_failure(&state.config.twilio_send, claimed.attempt, may_be_sent)
    };
    let wait = match next {
        Next::Retry(wait) => wait,
        Next::GiveUp => return fail(state, contact, claimed, TWILIO_UNAVAILABLE, &why).await,
    };
    let (message_id, token) = (claimed.job.message_id, claimed.token.clone());
    let at = crate::models::now() + chrono::Duration::from_std(wait).unwrap_or_default();
    let kept = state
        .write(move |conn| {
            Ok(SmsJob::retry_at(
                conn,
                message_id,
                &token,
                at,
                may_be_sent,
                &why,
            )?)
        })
        .await?;
    if kept {
        state.metrics.sms_retried.inc();
    }
    Ok(())
}

/// Ends the message `failed` with `code`, if this claim still holds its job.
async fn fail(
    state: &AppState,
    contact: &Contact,
    claimed: &Claimed,
    code: &str,
    why: &str,
) -> Result<(), AppError> {
    tracing::warn!(message_id = claimed.job.message_id, %code, %why, "the message could not be sent");
    let (message_id, token, code) = (
        claimed.job.message_id,
        claimed.token.clone(),
        code.to_owned(),
    );
    let contact = contact.clone();
    let outcome = state
        .write(move |conn| {
            write_transaction(conn, |conn| {
                if !SmsJob::remove_claimed(conn, message_id, &token)? {
                    // Another claim took it over (this one's lease ran out).
                    return Ok(None);
                }
                let current = Message::reload(conn, message_id)?;
                if current.twilio_sid.is_some() || !may_move(&current.status, "failed") {
                    return Ok(Some(false));
                }
                Message::set_delivery(conn, message_id, None, "failed", Some(&code))?;
                let updated = Message::reload(conn, message_id)?;
                notify_contact(conn, &contact, ContactEvent::MessageStatus(&updated), None)?;
                Ok::<_, AppError>(Some(true))
            })
        })
        .await?;
    if outcome == Some(true) {
        state.metrics.sms_failed.inc();
        state.dispatcher.wake();
    }
    Ok(())
}

/// Where the SIDs given to [`record_sent`] come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Adopt {
    /// A lookup's matches, oldest first: a SID another message holds is a
    /// twin's and is passed over; none free means Twilio does not have ours.
    FreeOnly,
    /// Twilio's answer to our own send: the message went out whatever else
    /// holds that SID, so its job ends.
    Sent,
}

/// Records the SID Twilio gave (or that a lookup found) and its status,
/// with any status callback that came first; removes the job whoever holds
/// it, since the message is sent. Answers whether a SID was recorded (or
/// the message had one already).
async fn record_sent(
    state: &AppState,
    contact: &Contact,
    message_id: i64,
    candidates: Vec<(String, String)>,
    adopt: Adopt,
) -> Result<bool, AppError> {
    let contact = contact.clone();
    let recorded = state
        .write(move |conn| {
            write_transaction(conn, |conn| {
                record_in(conn, &contact, message_id, &candidates, adopt)
            })
        })
        .await?;
    if recorded == Recorded::Now {
        state.metrics.sms_sent.inc();
        state.dispatcher.wake();
    }
    Ok(recorded != Recorded::NoneFree)
}

/// What [`record_in`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recorded {
    /// The message got its SID (or, sent, its status) and its event.
    Now,
    /// It had its SID already (an earlier claimer recorded it).
    Already,
    /// Every SID of a lookup is another message's: nothing recorded.
    NoneFree,
}

/// [`record_sent`]'s transaction. The SIDs other messages hold are read
/// here, in the transaction that stores ours: read before it, a twin
/// message could adopt the same SID in between, and ours would then fail on
/// the UNIQUE `twilio_sid` instead of passing to the next match.
fn record_in(
    conn: &mut crate::db::DbConnection,
    contact: &Contact,
    message_id: i64,
    candidates: &[(String, String)],
    adopt: Adopt,
) -> Result<Recorded, AppError> {
    let current = Message::reload(conn, message_id)?;
    if current.twilio_sid.is_some() {
        SmsJob::remove(conn, message_id)?;
        return Ok(Recorded::Already);
    }
    let mut free = None;
    for (sid, status) in candidates {
        match Message::by_twilio_sid(conn, sid)? {
            Some(holder) if holder.id != message_id => {}
            _ => {
                free = Some((sid.as_str(), status.as_str()));
                break;
            }
        }
    }
    let (sid, status) = match (free, adopt, candidates.first()) {
        (Some(found), _, _) => (Some(found.0), found.1),
        (None, Adopt::FreeOnly, _) | (None, Adopt::Sent, None) => return Ok(Recorded::NoneFree),
        (None, Adopt::Sent, Some((sid, status))) => {
            // Twilio took our send, but a twin's lookup adopted its SID
            // first: the message is sent all the same; its status is kept,
            // without the SID another message holds.
            tracing::warn!(message_id, %sid, "the SID of a sent message is held by another message");
            (None, status.as_str())
        }
    };
    SmsJob::remove(conn, message_id)?;
    // A status callback may have come before this answer and been kept.
    let early = match sid {
        Some(sid) => EarlyStatus::take(conn, sid)?,
        None => None,
    };
    let mut status = if may_move(&current.status, status) {
        status.to_owned()
    } else {
        current.status.clone()
    };
    let mut error_code = current.error_code.clone();
    if let Some(early) = early.filter(|e| may_move(&status, &e.status)) {
        status = early.status;
        error_code = early.error_code.or(error_code);
    }
    Message::set_delivery(conn, message_id, sid, &status, error_code.as_deref())?;
    let updated = Message::reload(conn, message_id)?;
    notify_contact(conn, contact, ContactEvent::MessageStatus(&updated), None)?;
    Ok(Recorded::Now)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A migrated SQLite database of its own, with a team, a contact and two
    /// outbound messages with the same body (twins), each queued.
    fn twins() -> (crate::db::TestDatabase, Contact, i64, i64) {
        use crate::models::contact::NewContact;
        use crate::models::message::NewMessage;
        let mut db = crate::db::TestDatabase::new();
        let conn = &mut db.conn;
        let team = crate::cli::create_team(conn, "Team", "+14155550100").unwrap();
        let now = crate::models::now();
        let contact = Contact::create(
            conn,
            &NewContact {
                team_id: team,
                name: "Carol",
                phone: "+14155550123",
                created_at: now,
                updated_at: now,
            },
        )
        .unwrap();
        let mut message = || {
            let id = Message::create(
                conn,
                &NewMessage {
                    team_id: team,
                    contact_id: contact.id,
                    direction: "outbound",
                    body: "same words",
                    media: "[]".into(),
                    status: STATUS_QUEUED,
                    error_code: None,
                    twilio_sid: None,
                    sent_by: None,
                    created_at: now,
                },
            )
            .unwrap()
            .id;
            SmsJob::enqueue(conn, id, now).unwrap();
            id
        };
        let (first, second) = (message(), message());
        (db, contact, first, second)
    }

    fn sid_of(conn: &mut crate::db::DbConnection, id: i64) -> Option<String> {
        Message::reload(conn, id).unwrap().twilio_sid
    }

    #[test]
    fn an_adopted_sid_is_checked_in_the_transaction_that_records_it() {
        let (mut db, contact, first, second) = twins();
        let conn = &mut db.conn;
        let found = vec![
            ("SM1".to_owned(), "sent".to_owned()),
            ("SM2".to_owned(), "sent".to_owned()),
        ];
        // The twin adopted SM1 after our lookup read the SIDs held: ours
        // passes to SM2 instead of failing on the UNIQUE SID.
        assert_eq!(
            record_in(conn, &contact, first, &found[..1], Adopt::FreeOnly).unwrap(),
            Recorded::Now
        );
        assert_eq!(
            record_in(conn, &contact, second, &found, Adopt::FreeOnly).unwrap(),
            Recorded::Now
        );
        assert_eq!(sid_of(conn, first).as_deref(), Some("SM1"));
        assert_eq!(sid_of(conn, second).as_deref(), Some("SM2"));
        assert!(SmsJob::find(conn, second).unwrap().is_none());
    }

    #[test]
    fn a_lookup_whose_matches_are_all_held_records_nothing_and_a_send_still_ends() {
        let (mut db, contact, first, second) = twins();
        let conn = &mut db.conn;
        let held = vec![("SM1".to_owned(), "sent".to_owned())];
        record_in(conn, &contact, first, &held, Adopt::FreeOnly).unwrap();
        // Nothing of ours: the job stays, to be sent.
        assert_eq!(
            record_in(conn, &contact, second, &held, Adopt::FreeOnly).unwrap(),
            Recorded::NoneFree
        );
        assert_eq!(sid_of(conn, second), None);
        assert!(SmsJob::find(conn, second).unwrap().is_some());
        // Our own send's SID, already adopted by the twin: sent all the same.
        assert_eq!(
            record_in(conn, &contact, second, &held, Adopt::Sent).unwrap(),
            Recorded::Now
        );
        let message = Message::reload(conn, second).unwrap();
        assert_eq!(
            (message.twilio_sid, message.status.as_str()),
            (None, "sent")
        );
        assert!(SmsJob::find(conn, second).unwrap().is_none());
        // Recorded once: a later claimer finds it done.
        assert_eq!(
            record_in(conn, &contact, first, &held, Adopt::FreeOnly).unwrap(),
            Recorded::Already
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let settings = SendSettings::default();
        assert_eq!(settings.backoff(1), Duration::from_secs(2));
        assert_eq!(settings.backoff(2), Duration::from_secs(4));
        assert_eq!(settings.backoff(7), Duration::from_secs(128));
        assert_eq!(settings.backoff(8), Duration::from_secs(180));
        assert_eq!(settings.backoff(1000), Duration::from_secs(180));
        assert_eq!(settings.backoff(-1), Duration::from_secs(2));
    }

    #[test]
    fn attempts_stop_at_the_maximum_but_an_uncertain_one_is_looked_up() {
        let settings = SendSettings::default();
        assert_eq!(
            after_failure(&settings, 1, false),
            Next::Retry(Duration::from_secs(2))
        );
        assert_eq!(
            after_failure(&settings, 7, true),
            Next::Retry(Duration::from_secs(128))
        );
        assert_eq!(after_failure(&settings, 8, false), Next::GiveUp);
        assert_eq!(
            after_failure(&settings, 8, true),
            Next::Retry(Duration::from_secs(180))
        );
        assert_eq!(after_failure(&settings, 9, true), Next::GiveUp);
    }

    #[test]
    fn settings_are_read_and_checked() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            SendSettings::from_lookup(vars(&[])).unwrap(),
            SendSettings::default()
        );
        let short = SendSettings::from_lookup(vars(&[
            ("TWILIO_SEND_ATTEMPTS", "3"),
            ("TWILIO_RETRY_BASE_MS", "10"),
            ("TWILIO_RETRY_MAX_MS", "40"),
            ("TWILIO_TIMEOUT_MS", "500"),
        ]))
        .unwrap();
        assert_eq!(short.max_attempts, 3);
        assert_eq!(short.backoff(5), Duration::from_millis(40));
        assert_eq!(short.timeout, Duration::from_millis(500));
        for (variable, value) in [
            ("TWILIO_SEND_ATTEMPTS", "0"),
            ("TWILIO_SEND_ATTEMPTS", "many"),
            ("TWILIO_TIMEOUT_MS", "-5"),
        ] {
            let error = SendSettings::from_lookup(|name: &str| {
                (name == variable).then(|| value.to_owned())
            })
            .unwrap_err();
            assert_eq!(error.variable, variable);
        }
    }
}
