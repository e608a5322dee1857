//! `notify_contact()`: called after every write in the send, read, note and
//! webhook handlers, inside the same transaction, it queues the events that
//! announce the change in the outbox. The dispatcher publishes them.

use diesel::QueryResult;
use serde_json::json;

use crate::db::DbConnection;
use crate::models::contact::Contact;
use crate::models::message::{Message, MessageView};
use crate::models::note::{Note, NoteView};
use crate::models::outbox::{NewOutboxRow, OutboxRow};
use crate::models::user::User;
use crate::realtime::channels::{contact_channel, user_channel};

/// Largest event data sent in full; beyond, a slim event tells clients to
/// refetch (Pusher's limit on shared clusters).
pub const MAX_EVENT_BYTES: usize = realtime_core::channel::DEFAULT_MAX_DATA_BYTES;

/// What happened to a contact.
#[derive(Debug, Clone, Copy)]
pub enum ContactEvent<'a> {
    /// `message:created`
    MessageCreated(&'a Message),
    /// `message:read`
    MessageRead(&'a Message),
    /// `message:status`
    MessageStatus(&'a Message),
    /// `note:created`
    NoteCreated(&'a Note),
}

impl ContactEvent<'_> {
    /// The event name on the contact's channel.
    pub fn name(&self) -> &'static str {
        match self {
            ContactEvent::MessageCreated(_) => "message:created",
            ContactEvent::MessageRead(_) => "message:read",
            ContactEvent::MessageStatus(_) => "message:status",
            ContactEvent::NoteCreated(_) => "note:created",
        }
    }

    fn data(&self, contact_id: i64) -> String {
        let full = match self {
            ContactEvent::MessageCreated(m)
            | ContactEvent::MessageRead(m)
            | ContactEvent::MessageStatus(m) => {
                json!({ "message": MessageView::from(*m) })
            }
            ContactEvent::NoteCreated(n) => json!({ "note": NoteView::from(*n) }),
        }
        .to_string();
        if full.len() <= MAX_EVENT_BYTES {
            return full;
        }
        // Too large for Pusher: say what changed, and let clients refetch.
        match self {
            ContactEvent::NoteCreated(n) => {
                json!({ "noteId": n.id.to_string(), "contactId": contact_id.to_string() })
            }
            ContactEvent::MessageCreated(m)
            | ContactEvent::MessageRead(m)
            | ContactEvent::MessageStatus(m) => {
                json!({ "messageId": m.id.to_string(), "contactId": contact_id.to_string() })
            }
        }
        .to_string()
    }

    /// Whether the contact list (unread count, last message) changes too.
    fn updates_contact(&self) -> bool {
        !matches!(self, ContactEvent::NoteCreated(_))
    }
}

/// Queues `event` on the contact's channel and, when the contact's summary
/// changed, `contact:updated` on every team member's user channel.
/// `socket_id` (from `X-Socket-Id`) is left out of the fan-out.
pub fn notify_contact(
    conn: &mut DbConnection,
    contact: &Contact,
    event: ContactEvent<'_>,
    socket_id: Option<&str>,
) -> QueryResult<()> {
    let now = crate::models::now();
    let socket_id = socket_id.filter(|s| realtime_core::SocketId::parse(*s).is_ok());
    // Changes of one contact take turns: on PostgreSQL two transactions would
    // otherwise each compute the summary (unread count) without the other's
    // change, and both publish a stale one. SQLite's writer lock already
    // serialises them.
    if let DbConnection::Postgresql(pg) = conn {
        use diesel::prelude::*;
        crate::db::schema::contacts::table
            .find(contact.id)
            .select(crate::db::schema::contacts::id)
            // NO KEY UPDATE, not UPDATE: it must not wait for the key-share
            // locks that concurrent message inserts take on the contact.
            .for_no_key_update()
            .first::<i64>(pg)?;
    }
    OutboxRow::insert(
        conn,
        &NewOutboxRow {
            team_id: contact.team_id,
            contact_id: Some(contact.id),
            event: event.name(),
            channels: json!([contact_channel(contact.id)]).to_string(),
            data: event.data(contact.id),
            socket_id,
            attempts: 0,
            next_attempt_at: now,
            created_at: now,
        },
    )?;
    if !event.updates_contact() {
        return Ok(());
    }
    let view = contact.view(conn)?;
    let mut data = json!({ "contact": view }).to_string();
    if data.len() > MAX_EVENT_BYTES {
        data = json!({ "contactId": contact.id.to_string() }).to_string();
    }
    let members = User::ids_of_team(conn, contact.team_id)?;
    // One trigger reaches at most 100 channels.
    for chunk in members.chunks(realtime_core::channel::MAX_TRIGGER_CHANNELS) {
        let channels: Vec<String> = chunk.iter().map(|id| user_channel(*id)).collect();
        OutboxRow::insert(
            conn,
            &NewOutboxRow {
                team_id: contact.team_id,
                contact_id: Some(contact.id),
                event: "contact:updated",
                channels: json!(channels).to_string(),
                data: data.clone(),
                socket_id,
                attempts: 0,
                next_attempt_at: now,
                created_at: now,
            },
        )?;
    }
    Ok(())
}
