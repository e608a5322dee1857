//! The periodic clean-up: rows that nothing else removes and that would
//! otherwise pile up forever (expired sessions, idempotency keys past their
//! use, early Twilio statuses that never met their message, login failures
//! forgotten by the login limit).
//!
//! Deletes go in batches of [`BATCH`] rows, each its own write (on SQLite
//! through the one writer), so a large backlog never holds the database's
//! writer for long: other requests' writes queue between two batches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use actix_web::web;
use chrono::NaiveDateTime;

use crate::app::AppState;
use crate::db::DbConnection;
use crate::error::AppError;
use crate::models::early_status::EarlyStatus;
use crate::models::idempotency;
use crate::models::login_failure::LoginFailure;
use crate::models::session::Session;

/// Rows deleted by one statement.
pub const BATCH: i64 = 500;

/// How long an idempotency key is kept: a client retries a send within
/// minutes; a day leaves room for one that was offline.
pub const IDEMPOTENCY_KEY_LIFETIME: chrono::Duration = chrono::Duration::hours(24);

/// How long a status that arrived before its message's SID is kept. The
/// SID is stored within seconds of the send, or never.
pub const EARLY_STATUS_LIFETIME: chrono::Duration = chrono::Duration::hours(24);

/// The first clean-up after start-up (not at once: start-up has its own
/// work, such as publishing what the outbox kept).
pub const FIRST_RUN_AFTER: Duration = Duration::from_secs(60);

/// Between two clean-ups.
pub const INTERVAL: Duration = Duration::from_secs(10 * 60);

/// What one clean-up removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Expired sessions.
    pub sessions: usize,
    /// Idempotency keys older than [`IDEMPOTENCY_KEY_LIFETIME`].
    pub idempotency_keys: usize,
    /// Early statuses older than [`EARLY_STATUS_LIFETIME`].
    pub early_statuses: usize,
    /// Login failures past their expiry (an hour after a key's last one).
    pub login_failures: usize,
}

impl Swept {
    /// Rows removed in all.
    pub fn total(&self) -> usize {
        self.sessions + self.idempotency_keys + self.early_statuses + self.login_failures
    }
}

/// Removes, as of `now`, every row past its time; answers how many of each.
pub async fn sweep(state: &AppState, now: NaiveDateTime) -> Result<Swept, AppError> {
    Ok(Swept {
        sessions: drain(state, move |conn| Session::delete_expired(conn, now, BATCH)).await?,
        idempotency_keys: drain(state, move |conn| {
            idempotency::delete_older_than(conn, now - IDEMPOTENCY_KEY_LIFETIME, BATCH)
        })
        .await?,
        early_statuses: drain(state, move |conn| {
            EarlyStatus::delete_older_than(conn, now - EARLY_STATUS_LIFETIME, BATCH)
        })
        .await?,
        login_failures: drain(state, move |conn| {
            LoginFailure::delete_expired(conn, now, BATCH)
        })
        .await?,
    })
}

/// Runs `batch` until it deletes fewer than [`BATCH`] rows.
async fn drain<F>(state: &AppState, batch: F) -> Result<usize, AppError>
where
    F: Fn(&mut DbConnection) -> diesel::QueryResult<usize> + Copy + Send + 'static,
{
    let mut total = 0;
    loop {
        let deleted = state.write(move |conn| Ok(batch(conn)?)).await?;
        total += deleted;
        if deleted < BATCH as usize {
            return Ok(total);
        }
    }
}

/// The background task that runs [`sweep`] every [`INTERVAL`]; started by
/// `app::build`, stopped by `app::shutdown`.
#[derive(Debug, Default)]
pub struct Sweeper {
    stop: Arc<Stop>,
}

#[derive(Debug, Default)]
struct Stop {
    stopped: AtomicBool,
    wake: tokio::sync::Notify,
}

impl Sweeper {
    /// A sweeper not started yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts the task on the current runtime. It holds the state weakly,
    /// so it ends by itself once the application is gone.
    pub fn start(&self, state: &web::Data<AppState>) {
        let weak = Arc::downgrade(&state.clone().into_inner());
        actix_web::rt::spawn(run(weak, self.stop.clone()));
    }

    /// Stops the task (a clean-up under way finishes its current batch).
    pub fn stop(&self) {
        self.stop.stopped.store(true, Ordering::SeqCst);
        self.stop.wake.notify_one();
    }
}

async fn run(state: Weak<AppState>, stop: Arc<Stop>) {
    let mut wait = FIRST_RUN_AFTER;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.wake.notified() => {}
        }
        if stop.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Some(state) = state.upgrade() else {
            return;
        };
        match sweep(&state, crate::models::now()).await {
            Ok(swept) if swept.total() > 0 => tracing::info!(
                sessions = swept.sessions,
                idempotency_keys = swept.idempotency_keys,
                early_statuses = swept.early_statuses,
                login_failures = swept.login_failures,
                "clean-up removed rows past their time"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = ?e, "clean-up failed; next try in {} s", INTERVAL.as_secs())
            }
        }
        wait = INTERVAL;
    }
}
