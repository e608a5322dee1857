//! Status callbacks that came before Twilio's answer to our send (Twilio
//! may call back before we have read its answer): kept until the SID is
//! stored, then applied, so no status is lost or goes backwards.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use crate::db::schema::early_statuses;
use crate::db::DbConnection;
use crate::twilio::status::may_move;

/// A kept status.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = early_statuses)]
pub struct EarlyStatus {
    pub twilio_sid: String,
    pub status: String,
    pub error_code: Option<String>,
    pub created_at: NaiveDateTime,
}

impl EarlyStatus {
    /// Keeps a status for a SID not stored yet, or moves the kept one forwards.
    pub fn keep(
        conn: &mut DbConnection,
        sid: &str,
        status: &str,
        error_code: Option<&str>,
    ) -> QueryResult<()> {
        let kept = early_statuses::table
            .find(sid)
            .select(EarlyStatus::as_select())
            .first(conn)
            .optional()?;
        match kept {
            Some(kept) if !may_move(&kept.status, status) => Ok(()),
            Some(_) => diesel::update(early_statuses::table.find(sid))
                .set((
                    early_statuses::status.eq(status),
                    early_statuses::error_code.eq(error_code),
                ))
                .execute(conn)
                .map(|_| ()),
            None => diesel::insert_into(early_statuses::table)
                .values(&EarlyStatus {
                    twilio_sid: sid.to_owned(),
                    status: status.to_owned(),
                    error_code: error_code.map(str::to_owned),
                    created_at: crate::models::now(),
                })
                .execute(conn)
                .map(|_| ()),
        }
    }

    /// Forgets up to `limit` statuses kept since before `cutoff` (their
    /// send never stored a SID: it failed, or the callback named a message
    /// that is not ours); answers how many.
    pub fn delete_older_than(
        conn: &mut DbConnection,
        cutoff: NaiveDateTime,
        limit: i64,
    ) -> QueryResult<usize> {
        crate::delete_batch!(
            conn,
            early_statuses::table,
            early_statuses::twilio_sid,
            String,
            early_statuses::created_at.lt(cutoff),
            limit
        )
    }

    /// Takes (and forgets) the status kept for a SID.
    pub fn take(conn: &mut DbConnection, sid: &str) -> QueryResult<Option<EarlyStatus>> {
        let kept = early_statuses::table
            .find(sid)
            .select(EarlyStatus::as_select())
            .first(conn)
            .optional()?;
        if kept.is_some() {
            diesel::delete(early_statuses::table.find(sid)).execute(conn)?;
        }
        Ok(kept)
    }
}
