//! The SMS outbox: one row per outbound message still to be handed to
//! Twilio, written in the message's own transaction, leased by the worker
//! that sends it (`twilio/delivery.rs`), deleted once Twilio's answer (or the
//! final failure) is recorded.

use std::time::Duration;

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::sms_outbox;
use crate::db::DbConnection;

/// A queued send.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = sms_outbox)]
pub struct SmsJob {
    /// The outbound message to send.
    pub message_id: i64,
    /// Claims so far (each claim is one attempt).
    pub attempts: i32,
    /// Not claimed before this time (the backoff).
    pub next_attempt_at: NaiveDateTime,
    /// The lease of the worker that claimed it; past it, the job is taken again.
    pub locked_until: Option<NaiveDateTime>,
    /// Who holds the lease: only its holder records a failure or a retry.
    pub lock_token: Option<String>,
    /// An earlier attempt may have reached Twilio: look it up before sending.
    pub sent_unknown: bool,
    /// When the first attempt started (the lookup's time window opens here).
    pub first_attempt_at: Option<NaiveDateTime>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the job was queued.
    pub created_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = sms_outbox)]
struct NewSmsJob {
    message_id: i64,
    attempts: i32,
    next_attempt_at: NaiveDateTime,
    sent_unknown: bool,
    created_at: NaiveDateTime,
}

/// A claimed job: the row as it was before the claim, and the claim.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The row before this claim changed it.
    pub job: SmsJob,
    /// This claim's token.
    pub token: String,
    /// This attempt's number (1 for the first).
    pub attempt: i32,
}

fn after(now: NaiveDateTime, wait: Duration) -> NaiveDateTime {
    now + chrono::Duration::from_std(wait).unwrap_or_else(|_| chrono::Duration::days(1))
}

impl SmsJob {
    /// Queues the send of `message_id`, due at once, in the transaction that
    /// created the message (so it has no job yet: the message id is the key).
    pub fn enqueue(
        conn: &mut DbConnection,
        message_id: i64,
        now: NaiveDateTime,
    ) -> QueryResult<()> {
        diesel::insert_into(sms_outbox::table)
            .values(&NewSmsJob {
                message_id,
                attempts: 0,
                next_attempt_at: now,
                sent_unknown: false,
                created_at: now,
            })
            .execute(conn)
            .map(|_| ())
    }

    /// The job of `message_id`, if one is queued.
    pub fn find(conn: &mut DbConnection, message_id: i64) -> QueryResult<Option<SmsJob>> {
        sms_outbox::table
            .find(message_id)
            .select(SmsJob::as_select())
            .first(conn)
            .optional()
    }

    /// Claims up to `limit` due jobs (not waiting out a backoff, not leased
    /// by a live claim), oldest first, for `lease`: each counts one more
    /// attempt and is marked `sent_unknown` until its outcome is recorded, so
    /// a claimer that dies mid-request leaves a job that is looked up at
    /// Twilio before it is sent again.
    ///
    /// Call it in a write transaction. On PostgreSQL the rows are read
    /// `FOR UPDATE SKIP LOCKED`, so two instances never claim the same job
    /// (a row one has locked the other skips); on SQLite the write
    /// transaction (`BEGIN IMMEDIATE`, or the one writer's) serialises claims.
    pub fn claim(
        conn: &mut DbConnection,
        now: NaiveDateTime,
        limit: i64,
        lease: Duration,
    ) -> QueryResult<Vec<Claimed>> {
        let due = sms_outbox::table
            .filter(sms_outbox::next_attempt_at.le(now))
            .filter(
                sms_outbox::locked_until
                    .is_null()
                    .or(sms_outbox::locked_until.le(now)),
            )
            .order((sms_outbox::next_attempt_at, sms_outbox::message_id))
            .limit(limit);
        let rows = crate::load_skip_locked!(conn, due, SmsJob)?;
        let locked_until = after(now, lease);
        let mut claimed = Vec::with_capacity(rows.len());
        for job in rows {
            let token = format!("{:032x}", rand::random::<u128>());
            let attempt = job.attempts.saturating_add(1);
            let updated = diesel::update(
                sms_outbox::table
                    .find(job.message_id)
                    .filter(sms_outbox::next_attempt_at.le(now))
                    .filter(
                        sms_outbox::locked_until
                            .is_null()
                            .or(sms_outbox::locked_until.le(now)),
                    ),
            )
            .set((
                sms_outbox::attempts.eq(attempt),
                sms_outbox::locked_until.eq(Some(locked_until)),
                sms_outbox::lock_token.eq(Some(token.as_str())),
                sms_outbox::sent_unknown.eq(true),
                sms_outbox::first_attempt_at.eq(Some(job.first_attempt_at.unwrap_or(now))),
            ))
            .execute(conn)?;
            if updated == 1 {
                claimed.push(Claimed {
                    job,
                    token,
                    attempt,
                });
            }
        }
        Ok(claimed)
    }

    /// Removes the job of `message_id` whoever holds it (its message got
    /// its SID, or needs no sending any more).
    pub fn remove(conn: &mut DbConnection, message_id: i64) -> QueryResult<usize> {
        diesel::delete(sms_outbox::table.find(message_id)).execute(conn)
    }

    /// Removes the job if the claim `token` still holds it; answers whether
    /// it did (a claim whose lease ran out and was taken again does not).
    pub fn remove_claimed(
        conn: &mut DbConnection,
        message_id: i64,
        token: &str,
    ) -> QueryResult<bool> {
        diesel::delete(
            sms_outbox::table
                .find(message_id)
                .filter(sms_outbox::lock_token.eq(token)),
        )
        .execute(conn)
        .map(|n| n == 1)
    }

    /// Puts the job back for an attempt at `at`, if the claim `token` still
    /// holds it; answers whether it did.
    pub fn retry_at(
        conn: &mut DbConnection,
        message_id: i64,
        token: &str,
        at: NaiveDateTime,
        sent_unknown: bool,
        error: &str,
    ) -> QueryResult<bool> {
        diesel::update(
            sms_outbox::table
                .find(message_id)
                .filter(sms_outbox::lock_token.eq(token)),
        )
        .set((
            sms_outbox::next_attempt_at.eq(at),
            sms_outbox::locked_until.eq(None::<NaiveDateTime>),
            sms_outbox::lock_token.eq(None::<String>),
            sms_outbox::sent_unknown.eq(sent_unknown),
            sms_outbox::last_error.eq(Some(error)),
        ))
        .execute(conn)
        .map(|n| n == 1)
    }

    /// When the next job becomes claimable (`None`: no job is queued).
    pub fn next_due(conn: &mut DbConnection) -> QueryResult<Option<NaiveDateTime>> {
        // A leased job is due when both its lease and its backoff have
        // passed; its lease always ends after its backoff began, so the
        // lease's end is when to look again.
        sms_outbox::table
            .select(diesel::dsl::min(diesel::dsl::sql::<
                diesel::sql_types::Nullable<diesel::sql_types::Timestamp>,
            >(
                "COALESCE(locked_until, next_attempt_at)",
            )))
            .first(conn)
    }

    /// How many sends are queued.
    pub fn depth(conn: &mut DbConnection) -> QueryResult<i64> {
        sms_outbox::table.count().get_result(conn)
    }
}
