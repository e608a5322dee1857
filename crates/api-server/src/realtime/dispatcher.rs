//! The outbox dispatcher: publishes queued events through a
//! [`Publisher`] as soon as they are committed, in order per contact,
//! batching up to 10 single-channel events per request, and backing off
//! (to at most two seconds) while the realtime service is down.
//!
//! It runs on its own thread and runtime, reading from the pool, so a slow
//! realtime service never holds up a request. On SQLite it removes what it
//! published through the process's one writer (`db/writer.rs`).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use realtime_core::{Error as RealtimeError, Event, Publisher};

use crate::background::{Signals, WorkerThread};
use crate::db::writer::{PendingWrite, Writer};
use crate::db::{write_transaction, DbConnection, DbPool};
use crate::metrics::AppMetrics;
use crate::models::outbox::OutboxRow;

/// Events claimed per round.
const ROUND_SIZE: i64 = 1000;
/// Published events whose removal failed, at most, before the dispatcher
/// stops claiming and only retries their removal: the next claims leave
/// them out one by one in SQL, which must stay well under SQLite's limit of
/// bound parameters (32766).
const MAX_UNSETTLED: usize = 10 * ROUND_SIZE as usize;
/// How often the outbox is looked at when nothing woke the dispatcher
/// (other instances' events, retries).
const POLL: Duration = Duration::from_millis(500);

/// Wait before the next attempt after `attempts` failed ones: 100 ms,
/// doubling, at most 2 s, so events flow within seconds of a recovery.
pub fn backoff(attempts: i32) -> Duration {
    let factor = 1u32 << attempts.clamp(0, 5);
    (Duration::from_millis(100) * factor).min(Duration::from_secs(2))
}

/// A handle on the running dispatcher.
#[derive(Debug)]
pub struct Dispatcher {
    /// Its thread; a stop's deadline is until when it may keep publishing.
    thread: WorkerThread,
}

impl Dispatcher {
    /// Starts the dispatcher thread. `writer` is SQLite's one writer, and
    /// required on SQLite: there a round must not settle in a write
    /// transaction of its own, which would hold the database's one write
    /// lock while publishing and keep every request waiting. On PostgreSQL
    /// there is none. A mismatch is refused (`InvalidInput`).
    pub fn start(
        pool: DbPool,
        writer: Option<Writer>,
        publisher: Arc<dyn Publisher>,
        metrics: AppMetrics,
    ) -> std::io::Result<Self> {
        let sqlite = {
            let conn = pool.get().map_err(std::io::Error::other)?;
            matches!(*conn, DbConnection::Sqlite(_))
        };
        let settlement = match (sqlite, writer) {
            (true, Some(writer)) => Settlement::Writer(writer),
            (false, None) => Settlement::InRound,
            (true, None) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the outbox dispatcher needs SQLite's writer on a SQLite database",
                ))
            }
            (false, Some(_)) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the outbox dispatcher takes no SQLite writer on a PostgreSQL database",
                ))
            }
        };
        let thread = WorkerThread::new();
        thread.spawn("outbox-dispatcher", move |runtime, signals| {
            Worker {
                pool,
                settlement,
                settling: None,
                unsettled: HashSet::new(),
                publisher,
                metrics,
                signals,
                runtime,
            }
            .run()
        })?;
        Ok(Dispatcher { thread })
    }

    /// Tells the dispatcher new events were committed.
    pub fn wake(&self) {
        self.thread.wake();
    }

    /// Publishes what is still queued (for at most `timeout`), then stops.
    ///
    /// No group of events starts publishing after the deadline, so at most
    /// one publish is still under way then, and it ends within the
    /// publisher's own timeout (5 s); the 6 s of grace past the deadline
    /// leaves room for it and for removing what it published. Normally this
    /// returns once the dispatcher's thread has ended, so nothing of it runs
    /// on (against the database or the realtime service) after this. If the
    /// thread has not ended by then (a publisher that ignores its timeout, a
    /// database that does not answer) it gives up waiting and returns while
    /// the thread still runs, logging a warning; what is unpublished stays
    /// queued for the next start.
    pub fn shutdown(&self, timeout: Duration) {
        // A publish under way when the deadline passes ends within the
        // publisher's own timeout; wait for that too.
        if !self.thread.stop(timeout, PUBLISH_GRACE) {
            tracing::warn!("the outbox dispatcher did not stop in time and is left running; unpublished events stay queued for the next start");
        }
    }
}

/// How long past its deadline a stopping dispatcher may take: the one
/// publish under way (the publisher's timeout is 5 s) and the removal of
/// what was published.
const PUBLISH_GRACE: Duration = Duration::from_secs(6);

struct Worker {
    pool: DbPool,
    /// How published and failed rows are settled.
    settlement: Settlement,
    /// The last round's settling write, still queued in the writer.
    settling: Option<Settling>,
    /// Published rows whose removal failed (SQLite). They are left out of
    /// every claim, or they would go out again after later events of their
    /// contact, and their removal is queued again with the next settling
    /// write; only a committed removal clears them.
    unsettled: HashSet<i64>,
    publisher: Arc<dyn Publisher>,
    metrics: AppMetrics,
    /// Wake-ups, and the stop's deadline: until when it may keep publishing.
    signals: Signals,
    runtime: tokio::runtime::Runtime,
}

/// How a round settles what it published and what failed.
enum Settlement {
    /// SQLite: through the process's one writer, no lock held while
    /// publishing.
    Writer(Writer),
    /// PostgreSQL: a round claims, publishes and settles in one transaction.
    InRound,
}

/// Published rows whose removal is queued in the writer: the next round
/// claims while it commits, leaving these out.
struct Settling {
    ids: HashSet<i64>,
    write: PendingWrite<()>,
}

/// What one round did.
enum Round {
    /// Nothing was due.
    Idle,
    /// Some events went out (more may be due).
    Progress,
    /// Publishing failed; the events were put back.
    Failed,
}

/// Events published together: a batch of single-channel events, or one
/// event on several channels.
enum Group {
    Batch(Vec<OutboxRow>),
    Single(OutboxRow),
}

impl Group {
    fn rows(&self) -> Vec<&OutboxRow> {
        match self {
            Group::Batch(rows) => rows.iter().collect(),
            Group::Single(row) => vec![row],
        }
    }
}

fn event_of(row: &OutboxRow) -> Event {
    let event = Event::from_json(row.channel_list(), row.event.as_str(), row.data.as_str());
    match &row.socket_id {
        Some(socket) => event.exclude(socket.as_str()),
        None => event,
    }
}

/// Splits claimed rows, in order, into publishable groups.
fn groups(rows: Vec<OutboxRow>) -> Vec<Group> {
    let mut groups = Vec::new();
    let mut batch: Vec<OutboxRow> = Vec::new();
    for row in rows {
        if row.channel_list().len() == 1 {
            batch.push(row);
            if batch.len() == realtime_core::channel::MAX_BATCH_EVENTS {
                groups.push(Group::Batch(std::mem::take(&mut batch)));
            }
        } else {
            if !batch.is_empty() {
                groups.push(Group::Batch(std::mem::take(&mut batch)));
            }
            groups.push(Group::Single(row));
        }
    }
    if !batch.is_empty() {
        groups.push(Group::Batch(batch));
    }
    groups
}

/// Whether a failure can never succeed by retrying (the event itself is
/// refused), as opposed to the service being unreachable or failing.
fn is_permanent(error: &RealtimeError) -> bool {
    match error {
        RealtimeError::Validation(_)
        | RealtimeError::Serialize(_)
        | RealtimeError::Encryption(_) => true,
        RealtimeError::Http { status, .. } => {
            (400..500).contains(status) && *status != 429 && *status != 401
        }
        _ => false,
    }
}

impl Worker {
    fn run(mut self) {
        loop {
            let drain_until = self.signals.stop_by();
            let round = match self.round() {
                Ok(round) => round,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox round failed");
                    Round::Failed
                }
            };
            match (round, drain_until) {
                (Round::Idle, Some(_)) => break,
                // Read afresh: a round under way stops at the deadline even
                // when shutdown was asked for after it began.
                _ if self.past_deadline() => {
                    tracing::warn!(
                        "outbox not drained at shutdown; the events stay queued for the next start"
                    );
                    break;
                }
                (Round::Progress, _) => continue,
                (Round::Idle, None) => {
                    self.finish_settling();
                    self.sleep(POLL)
                }
                (Round::Failed, _) => {
                    self.finish_settling();
                    self.sleep(Duration::from_millis(100))
                }
            }
        }
        self.finish_settling();
    }

    /// Whether shutdown was asked for and its deadline has passed.
    fn past_deadline(&self) -> bool {
        self.signals.past_deadline()
    }

    /// Published rows the next claim must leave out: those whose removal
    /// failed and those whose removal is under way.
    fn left_out(&self) -> usize {
        self.unsettled.len() + self.settling.as_ref().map_or(0, |s| s.ids.len())
    }

    /// Waits for the last round's settling write.
    fn finish_settling(&mut self) {
        if let Some(settling) = self.settling.take() {
            if let Err(e) = settling.write.wait_blocking() {
                // The rows stay queued; their removal is tried again with the
                // next settling write (or, after a restart, they go out
                // again: at least once).
                tracing::warn!(error = %e, "published events could not be removed from the outbox");
                self.unsettled.extend(settling.ids);
            }
        }
    }

    fn sleep(&self, at_most: Duration) {
        self.runtime.block_on(self.signals.sleep(at_most));
    }

    fn round(&mut self) -> Result<Round, crate::error::AppError> {
        let mut conn = self.pool.get()?;
        let now = crate::models::now();
        let writer = match &self.settlement {
            Settlement::Writer(writer) => writer.clone(),
            Settlement::InRound => {
                // PostgreSQL: the claimed rows stay locked until the round
                // commits, so another instance never publishes them too.
                return write_transaction(&mut conn, |conn| {
                    let rows = OutboxRow::claim(conn, now, ROUND_SIZE, &HashSet::new())?;
                    let (round, done, retry) = self.publish_rows(rows);
                    settle(conn, &done, &retry)?;
                    Ok(round)
                });
            }
        };
        // SQLite: one writer for the whole database, so no lock is held while
        // publishing (requests keep writing meanwhile). The rows are read from
        // a pool connection and their removal queued in the writer; the next round
        // claims while it commits, so events committed meanwhile go out
        // without waiting for it.
        if self.left_out() >= MAX_UNSETTLED {
            // Removing has failed for a while: learn how the removal under
            // way ended before claiming anything more.
            self.finish_settling();
        }
        let rows = if self.left_out() >= MAX_UNSETTLED {
            // Still failing: only try the removal again. This also keeps
            // the claim's and the removal's id lists within SQLite's limit
            // on bound parameters (MAX_UNSETTLED + ROUND_SIZE at most).
            Vec::new()
        } else {
            let mut published = self.unsettled.clone();
            if let Some(settling) = &self.settling {
                published.extend(settling.ids.iter().copied());
            }
            OutboxRow::claim(&mut conn, now, ROUND_SIZE, &published)?
        };
        drop(conn);
        let (round, done, retry) = self.publish_rows(rows);
        if done.is_empty() && retry.is_empty() && self.unsettled.is_empty() {
            return Ok(round);
        }
        // Claims leave out only the unsettled rows and one settling set, the
        // one in `self.settling`; before that is replaced, its write must be
        // answered, so that its rows are either gone or unsettled (and
        // still left out). The writer's queue keeps the writes' order anyway.
        self.finish_settling();
        // Only published rows may be left out of the next claim as good as
        // gone. A row put back for later must still hold back its contact's
        // later events, so its new time is committed before the next claim.
        let mut ids = std::mem::take(&mut self.unsettled);
        ids.extend(done.iter().copied());
        let delete: Vec<i64> = ids.iter().copied().collect();
        let retrying = !retry.is_empty();
        let write = match writer.submit(move |conn| settle(conn, &delete, &retry)) {
            Ok(write) => write,
            Err(e) => {
                self.unsettled = ids;
                return Err(e);
            }
        };
        self.settling = Some(Settling { ids, write });
        if retrying {
            self.finish_settling();
        }
        Ok(round)
    }

    /// Publishes claimed rows in order; answers what the round did, the rows
    /// to delete, and the rows to retry (with their attempts so far).
    fn publish_rows(&self, rows: Vec<OutboxRow>) -> (Round, Vec<i64>, Vec<(i64, i32)>) {
        if rows.is_empty() {
            return (Round::Idle, Vec::new(), Vec::new());
        }
        let mut done: Vec<i64> = Vec::new();
        let mut retry: Vec<(i64, i32)> = Vec::new();
        let mut failed = false;
        for group in groups(rows) {
            if self.past_deadline() {
                // Shutting down: no new publish starts after the deadline,
                // so the shutdown's grace covers the one under way. The
                // rest stay queued as they are, for the next start.
                break;
            }
            if failed {
                // An earlier event failed: later ones wait, to keep order.
                retry.extend(group.rows().iter().map(|r| (r.id, r.attempts)));
                continue;
            }
            match self.publish(&group) {
                Ok(()) => done.extend(group.rows().iter().map(|r| r.id)),
                Err(e) if is_permanent(&e) => {
                    // One bad event must not block the rest: retry singly and
                    // drop only what is refused on its own.
                    for row in group.rows() {
                        if failed {
                            // Put back behind the one that failed, to keep
                            // the contact's order.
                            retry.push((row.id, row.attempts));
                            continue;
                        }
                        if self.past_deadline() {
                            // Neither done nor retried: still queued.
                            break;
                        }
                        match self.publish(&Group::Single(row.clone())) {
                            Ok(()) => done.push(row.id),
                            Err(e) if is_permanent(&e) => {
                                tracing::error!(event = %row.event, outbox_id = row.id, error = %e, "event refused by the realtime service; dropped");
                                self.metrics.pusher_errors.inc();
                                done.push(row.id);
                            }
                            Err(_) => {
                                failed = true;
                                retry.push((row.id, row.attempts));
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "realtime service unavailable; events stay queued");
                    self.metrics.pusher_errors.inc();
                    failed = true;
                    retry.extend(group.rows().iter().map(|r| (r.id, r.attempts)));
                }
            }
        }
        let round = if failed {
            Round::Failed
        } else {
            Round::Progress
        };
        (round, done, retry)
    }

    fn publish(&self, group: &Group) -> Result<(), RealtimeError> {
        let started = Instant::now();
        let result = match group {
            Group::Single(row) => self
                .runtime
                .block_on(self.publisher.publish(event_of(row)))
                .map(|_| ()),
            Group::Batch(rows) if rows.len() == 1 => self
                .runtime
                .block_on(self.publisher.publish(event_of(&rows[0])))
                .map(|_| ()),
            Group::Batch(rows) => self
                .runtime
                .block_on(
                    self.publisher
                        .publish_batch(rows.iter().map(event_of).collect()),
                )
                .map(|_| ()),
        };
        if result.is_ok() {
            let rows = group.rows();
            self.metrics.record_published(rows.len() as u64);
            for row in rows {
                let age = (crate::models::now() - row.created_at)
                    .num_microseconds()
                    .unwrap_or(0);
                self.metrics.commit_to_publish.observe(age as f64 / 1e6);
            }
            tracing::debug!(elapsed = ?started.elapsed(), "published");
        }
        result
    }
}

/// Deletes published rows and puts failed ones back with their backoff:
/// one update per number of attempts, as the backoff depends only on it.
fn settle(
    conn: &mut DbConnection,
    done: &[i64],
    retry: &[(i64, i32)],
) -> Result<(), crate::error::AppError> {
    OutboxRow::delete(conn, done)?;
    let now = crate::models::now();
    let mut by_attempts: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (id, attempts) in retry {
        by_attempts.entry(*attempts).or_default().push(*id);
    }
    for (attempts, ids) in by_attempts {
        let at = now + chrono::Duration::from_std(backoff(attempts)).unwrap_or_default();
        OutboxRow::reschedule(conn, &ids, at)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_two_seconds() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(1600));
        assert_eq!(backoff(5), Duration::from_secs(2));
        assert_eq!(backoff(1000), Duration::from_secs(2));
        assert_eq!(backoff(-3), Duration::from_millis(100));
    }

    #[test]
    fn client_errors_are_permanent_and_outages_are_not() {
        let http = |status| RealtimeError::Http {
            status,
            body: String::new(),
        };
        assert!(is_permanent(&http(400)));
        assert!(is_permanent(&http(413)));
        assert!(!is_permanent(&http(401)));
        assert!(!is_permanent(&http(429)));
        assert!(!is_permanent(&http(503)));
        assert!(!is_permanent(&RealtimeError::Timeout(Duration::from_secs(
            1
        ))));
    }
}
