//! One module per table: the row (`Queryable`), the insert (`Insertable`),
//! the queries, and the JSON shape the API answers with (a separate type,
//! never the row).

pub mod contact;
pub mod early_status;
pub mod idempotency;
pub mod login_failure;
pub mod message;
pub mod note;
pub mod outbox;
pub mod realtime_app;
pub mod session;
pub mod sms_outbox;
pub mod team;
pub mod user;

use chrono::{DateTime, NaiveDateTime, Timelike, Utc};

/// Now, in UTC, at microsecond precision (what both databases keep), so a
/// value compares equal to itself after a round trip through either.
pub fn now() -> NaiveDateTime {
    let now = Utc::now().naive_utc();
    now.with_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .unwrap_or(now)
}

/// A stored time as RFC 3339 UTC, as the API shows times.
pub fn rfc3339(time: NaiveDateTime) -> String {
    DateTime::<Utc>::from_naive_utc_and_offset(time, Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Ids are opaque strings in the API; inside, they are row numbers.
pub fn parse_id(id: &str) -> Option<i64> {
    id.parse().ok().filter(|n: &i64| *n > 0)
}
