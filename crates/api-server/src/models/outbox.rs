//! The outbox: events written in the same transaction as the change they
//! announce, deleted once the realtime service accepted them.

use std::collections::{HashMap, HashSet};

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::outbox;
use crate::db::DbConnection;

/// An event waiting to be published.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = outbox)]
pub struct OutboxRow {
    pub id: i64,
    pub team_id: i64,
    pub contact_id: Option<i64>,
    pub event: String,
    /// A JSON array of channel names.
    pub channels: String,
    pub data: String,
    pub socket_id: Option<String>,
    pub attempts: i32,
    pub next_attempt_at: NaiveDateTime,
    pub created_at: NaiveDateTime,
}

/// An event to queue.
#[derive(Debug, Insertable)]
#[diesel(table_name = outbox)]
pub struct NewOutboxRow<'a> {
    pub team_id: i64,
    pub contact_id: Option<i64>,
    pub event: &'a str,
    pub channels: String,
    pub data: String,
    pub socket_id: Option<&'a str>,
    pub attempts: i32,
    pub next_attempt_at: NaiveDateTime,
    pub created_at: NaiveDateTime,
}

impl OutboxRow {
    /// Queues an event.
    pub fn insert(conn: &mut DbConnection, new: &NewOutboxRow<'_>) -> QueryResult<usize> {
        diesel::insert_into(outbox::table).values(new).execute(conn)
    }

    /// The channels, decoded.
    pub fn channel_list(&self) -> Vec<String> {
        serde_json::from_str(&self.channels).unwrap_or_default()
    }

    /// Takes up to `limit` due events to publish now, oldest first, leaving
    /// out `published` (published already, their removal not committed yet:
    /// still queued in SQLite's writer, or failed and to be tried again).
    /// On PostgreSQL call it inside a transaction and publish before
    /// committing; on SQLite it reads outside any transaction (two
    /// reads, safe because ids only grow and one writer adds them in order).
    ///
    /// On PostgreSQL the rows are locked `FOR UPDATE SKIP LOCKED`, so other
    /// instances take other rows. A contact's events are published in order:
    /// only an unbroken run from the contact's oldest queued event is kept,
    /// so an event never overtakes an earlier one that another instance
    /// holds or that is waiting out a backoff.
    pub fn claim(
        conn: &mut DbConnection,
        now: NaiveDateTime,
        limit: i64,
        published: &HashSet<i64>,
    ) -> QueryResult<Vec<OutboxRow>> {
        // Left out in SQL, so `limit` counts only claimable rows and no more
        // rows than that are read. (An empty list is rendered as `1=1`.)
        // One bound parameter per id: the dispatcher claims only while fewer
        // than its MAX_UNSETTLED (10,000) published rows await removal, so
        // this stays far below SQLite's limit of 32,766 bound parameters.
        let due = outbox::table
            .filter(outbox::next_attempt_at.le(now))
            .filter(outbox::id.ne_all(published.iter().copied().collect::<Vec<_>>()))
            .order(outbox::id)
            .limit(limit);
        let rows = crate::load_skip_locked!(conn, due, OutboxRow)?;
        let contacts: HashSet<i64> = rows.iter().filter_map(|r| r.contact_id).collect();
        if contacts.is_empty() {
            return Ok(rows);
        }
        // Only rows up to the last claimed one can stand before a claimed row.
        let last = rows.iter().map(|r| r.id).max().unwrap_or(0);
        // At most `limit` contacts (the dispatcher's ROUND_SIZE, 1,000).
        let mut queued: Vec<(i64, Option<i64>)> = outbox::table
            .filter(outbox::contact_id.eq_any(contacts.iter().copied().collect::<Vec<_>>()))
            .filter(outbox::id.le(last))
            .order(outbox::id)
            .select((outbox::id, outbox::contact_id))
            .load(conn)?;
        // Published already, their removal pending: as good as gone. (The
        // dispatcher passes only published rows here, never ones to retry.)
        queued.retain(|(id, _)| !published.contains(id));
        Ok(in_order_prefix(rows, &queued))
    }

    /// Removes published events. One bound parameter per id: the
    /// dispatcher's lists hold at most MAX_UNSETTLED + ROUND_SIZE (10,999)
    /// ids, under SQLite's 32,766; a caller with longer lists must split them.
    pub fn delete(conn: &mut DbConnection, ids: &[i64]) -> QueryResult<usize> {
        diesel::delete(outbox::table.filter(outbox::id.eq_any(ids))).execute(conn)
    }

    /// Puts events back for a later attempt. One bound parameter per id: the
    /// dispatcher passes at most one round's rows (ROUND_SIZE, 1,000).
    pub fn reschedule(
        conn: &mut DbConnection,
        ids: &[i64],
        at: NaiveDateTime,
    ) -> QueryResult<usize> {
        diesel::update(outbox::table.filter(outbox::id.eq_any(ids)))
            .set((
                outbox::attempts.eq(outbox::attempts + 1),
                outbox::next_attempt_at.eq(at),
            ))
            .execute(conn)
    }

    /// How many events wait, and since when the oldest.
    pub fn depth(conn: &mut DbConnection) -> QueryResult<(i64, Option<NaiveDateTime>)> {
        let count = outbox::table.count().get_result(conn)?;
        let oldest = outbox::table
            .select(diesel::dsl::min(outbox::created_at))
            .first(conn)?;
        Ok((count, oldest))
    }
}

/// Keeps, per contact, only the claimed rows that continue the contact's
/// queue from its oldest event without a gap. `queued` is every queued
/// (id, contact) of the claimed rows' contacts, by id.
fn in_order_prefix(rows: Vec<OutboxRow>, queued: &[(i64, Option<i64>)]) -> Vec<OutboxRow> {
    let claimed: HashSet<i64> = rows.iter().map(|r| r.id).collect();
    let mut allowed: HashSet<i64> = HashSet::new();
    let mut broken: HashMap<i64, bool> = HashMap::new();
    for (id, contact) in queued {
        let Some(contact) = contact else { continue };
        let stop = broken.entry(*contact).or_insert(false);
        if *stop {
            continue;
        }
        if claimed.contains(id) {
            allowed.insert(*id);
        } else {
            *stop = true;
        }
    }
    rows.into_iter()
        .filter(|r| r.contact_id.is_none() || allowed.contains(&r.id))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, contact: i64) -> OutboxRow {
        OutboxRow {
            id,
            team_id: 1,
            contact_id: Some(contact),
            event: "e".into(),
            channels: "[]".into(),
            data: "{}".into(),
            socket_id: None,
            attempts: 0,
            next_attempt_at: NaiveDateTime::default(),
            created_at: NaiveDateTime::default(),
        }
    }

    #[test]
    fn a_contact_whose_oldest_event_is_held_elsewhere_waits() {
        // Row 1 (contact 7) is held by another instance; rows 2 and 3 are ours.
        let rows = vec![row(2, 7), row(3, 8)];
        let queued = [(1, Some(7)), (2, Some(7)), (3, Some(8))];
        let kept: Vec<i64> = in_order_prefix(rows, &queued)
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(kept, vec![3]);
    }

    #[test]
    fn a_gap_stops_the_run() {
        let rows = vec![row(1, 7), row(3, 7)];
        let queued = [(1, Some(7)), (2, Some(7)), (3, Some(7))];
        let kept: Vec<i64> = in_order_prefix(rows, &queued)
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(kept, vec![1]);
    }

    #[test]
    fn an_unbroken_run_is_kept_whole() {
        let rows = vec![row(1, 7), row(2, 7), row(4, 9)];
        let queued = [(1, Some(7)), (2, Some(7)), (4, Some(9)), (5, Some(9))];
        let kept: Vec<i64> = in_order_prefix(rows, &queued)
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(kept, vec![1, 2, 4]);
    }
}
