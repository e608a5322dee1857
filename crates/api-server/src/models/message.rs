//! Messages: inbound and outbound SMS of a contact's thread.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use serde::{Deserialize, Serialize};

use crate::db::schema::{contacts, messages};
use crate::db::DbConnection;
use crate::models::rfc3339;

/// An inbound message.
pub const INBOUND: &str = "inbound";
/// An outbound message.
pub const OUTBOUND: &str = "outbound";
/// The status of an outbound message that was stored but not handed to
/// Twilio, because no Twilio credentials are configured.
pub const STATUS_NOT_SENT: &str = "not_sent";
/// An outbound message waiting to be handed to Twilio.
pub const STATUS_QUEUED: &str = "queued";
/// An inbound message.
pub const STATUS_RECEIVED: &str = "received";

/// A message row.
#[derive(Debug, Clone, Queryable, Selectable, Identifiable)]
#[diesel(table_name = messages)]
pub struct Message {
    pub id: i64,
    pub team_id: i64,
    pub contact_id: i64,
    pub direction: String,
    pub body: String,
    pub media: String,
    pub status: String,
    pub error_code: Option<String>,
    pub twilio_sid: Option<String>,
    pub sent_by: Option<i64>,
    pub read_at: Option<NaiveDateTime>,
    pub read_by: Option<i64>,
    pub created_at: NaiveDateTime,
}

/// A message to insert.
#[derive(Debug, Insertable)]
#[diesel(table_name = messages)]
pub struct NewMessage<'a> {
    pub team_id: i64,
    pub contact_id: i64,
    pub direction: &'a str,
    pub body: &'a str,
    pub media: String,
    pub status: &'a str,
    pub error_code: Option<&'a str>,
    pub twilio_sid: Option<&'a str>,
    pub sent_by: Option<i64>,
    pub created_at: NaiveDateTime,
}

/// One attachment (MMS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Media {
    pub url: String,
    pub content_type: String,
}

/// A message as the API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    pub id: String,
    pub contact_id: String,
    pub direction: String,
    pub body: String,
    pub media: Vec<Media>,
    pub status: String,
    pub error_code: Option<String>,
    pub twilio_sid: Option<String>,
    pub sent_by: Option<String>,
    pub read_at: Option<String>,
    pub read_by: Option<String>,
    pub created_at: String,
}

impl From<&Message> for MessageView {
    fn from(m: &Message) -> Self {
        MessageView {
            id: m.id.to_string(),
            contact_id: m.contact_id.to_string(),
            direction: m.direction.clone(),
            body: m.body.clone(),
            media: serde_json::from_str(&m.media).unwrap_or_default(),
            status: m.status.clone(),
            error_code: m.error_code.clone(),
            twilio_sid: m.twilio_sid.clone(),
            sent_by: m.sent_by.map(|id| id.to_string()),
            read_at: m.read_at.map(rfc3339),
            read_by: m.read_by.map(|id| id.to_string()),
            created_at: rfc3339(m.created_at),
        }
    }
}

impl Message {
    /// Stores a message; an inbound one counts as unread on its contact.
    pub fn create(conn: &mut DbConnection, new: &NewMessage<'_>) -> QueryResult<Message> {
        let message = crate::insert_returning!(conn, messages::table, new, Message)?;
        if message.direction == INBOUND {
            diesel::update(contacts::table.find(message.contact_id))
                .set(contacts::unread_count.eq(contacts::unread_count + 1))
                .execute(conn)?;
        }
        Ok(message)
    }

    /// A message of `team_id` by id.
    pub fn find_in_team(
        conn: &mut DbConnection,
        team_id: i64,
        id: i64,
    ) -> QueryResult<Option<Message>> {
        messages::table
            .filter(messages::team_id.eq(team_id))
            .find(id)
            .select(Message::as_select())
            .first(conn)
            .optional()
    }

    /// The newest `limit` messages of a contact older than message `before`
    /// (or the newest of all), oldest first.
    pub fn page(
        conn: &mut DbConnection,
        contact_id: i64,
        before: Option<i64>,
        limit: i64,
    ) -> QueryResult<Vec<Message>> {
        let mut query = messages::table
            .filter(messages::contact_id.eq(contact_id))
            .select(Message::as_select())
            .order(messages::id.desc())
            .limit(limit)
            .into_boxed();
        if let Some(before) = before {
            query = query.filter(messages::id.lt(before));
        }
        let mut page = query.load(conn)?;
        page.reverse();
        Ok(page)
    }

    /// Marks an inbound message read by `user_id`, once: a second call
    /// changes nothing. Answers whether this call set it.
    pub fn mark_read(
        conn: &mut DbConnection,
        id: i64,
        user_id: i64,
        at: NaiveDateTime,
    ) -> QueryResult<bool> {
        let changed = diesel::update(messages::table.find(id).filter(messages::read_at.is_null()))
            .set((messages::read_at.eq(at), messages::read_by.eq(user_id)))
            .execute(conn)?;
        if changed > 0 {
            // Only an inbound message counted as unread.
            let contact_of_inbound = messages::table
                .find(id)
                .filter(messages::direction.eq(INBOUND))
                .select(messages::contact_id)
                .single_value();
            // Never below zero, whatever wrote the messages before the count
            // was kept (an older build sharing the database, say).
            diesel::update(contacts::table.filter(contacts::id.nullable().eq(contact_of_inbound)))
                .filter(contacts::unread_count.gt(0))
                .set(contacts::unread_count.eq(contacts::unread_count - 1))
                .execute(conn)?;
        }
        Ok(changed > 0)
    }

    /// The message Twilio knows by this SID.
    pub fn by_twilio_sid(conn: &mut DbConnection, sid: &str) -> QueryResult<Option<Message>> {
        messages::table
            .filter(messages::twilio_sid.eq(sid))
            .select(Message::as_select())
            .first(conn)
            .optional()
    }

    /// Records what Twilio said of a message: its SID (once), its status and
    /// error code.
    pub fn set_delivery(
        conn: &mut DbConnection,
        id: i64,
        twilio_sid: Option<&str>,
        status: &str,
        error_code: Option<&str>,
    ) -> QueryResult<usize> {
        match twilio_sid {
            Some(sid) => diesel::update(messages::table.find(id))
                .set((
                    messages::twilio_sid.eq(sid),
                    messages::status.eq(status),
                    messages::error_code.eq(error_code),
                ))
                .execute(conn),
            None => diesel::update(messages::table.find(id))
                .set((
                    messages::status.eq(status),
                    messages::error_code.eq(error_code),
                ))
                .execute(conn),
        }
    }

    /// Reloads a message.
    pub fn reload(conn: &mut DbConnection, id: i64) -> QueryResult<Message> {
        messages::table
            .find(id)
            .select(Message::as_select())
            .first(conn)
    }

    /// The newest message of one contact.
    pub fn latest_of_contact(
        conn: &mut DbConnection,
        contact_id: i64,
    ) -> QueryResult<Option<Message>> {
        messages::table
            .filter(messages::contact_id.eq(contact_id))
            .order(messages::id.desc())
            .select(Message::as_select())
            .first(conn)
            .optional()
    }
}
