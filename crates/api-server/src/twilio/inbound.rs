//! An inbound SMS stored: the `To` number picks the team, an unknown `From`
//! becomes a contact, a `MessageSid` already stored stores nothing new. The
//! webhook (`POST /api/webhooks/twilio`) and `api-server sms receive` (an SMS
//! played locally, without Twilio) both come here.

use crate::db::{write_transaction, DbConnection};
use crate::models::contact::{Contact, NewContact};
use crate::models::message::{Media, Message, NewMessage, INBOUND, STATUS_RECEIVED};
use crate::models::team::Team;
use crate::phone::PhoneNumber;
use crate::realtime::{notify_contact, ContactEvent};

/// An inbound SMS as Twilio describes it.
#[derive(Debug, Clone)]
pub struct InboundSms {
    /// `MessageSid`.
    pub sid: String,
    /// `From`, as Twilio wrote it.
    pub from: String,
    /// `To` (the team's number), as Twilio wrote it.
    pub to: String,
    /// `Body`.
    pub body: String,
    /// The MMS attachments.
    pub media: Vec<Media>,
}

/// What storing an inbound SMS did.
#[derive(Debug)]
pub enum Received {
    /// Stored, with `message:created` and `contact:updated` in the outbox.
    Stored(Box<Message>),
    /// This `MessageSid` was stored before: nothing new.
    Duplicate,
    /// No team has the `To` number: nothing stored.
    UnknownNumber,
}

/// A phone number as stored: E.164 when it parses, else as Twilio wrote it
/// (short codes, alphanumeric senders).
pub fn stored_number(raw: &str) -> String {
    PhoneNumber::parse(raw).map_or_else(|| raw.trim().to_owned(), |p| p.as_str().to_owned())
}

/// Stores `sms` once, however many deliveries of it race.
pub fn receive(
    conn: &mut DbConnection,
    sms: &InboundSms,
) -> Result<Received, diesel::result::Error> {
    let (from, to) = (stored_number(&sms.from), stored_number(&sms.to));
    let media = serde_json::to_string(&sms.media).unwrap_or_else(|_| "[]".into());
    // A retry racing this one on PostgreSQL loses on the unique indexes; the
    // next try then finds what the winner stored.
    for _ in 0..3 {
        let attempt = write_transaction(conn, |conn| {
            if Message::by_twilio_sid(conn, &sms.sid)?.is_some() {
                return Ok(Received::Duplicate);
            }
            let Some(team) = Team::by_phone_number(conn, &to)? else {
                return Ok(Received::UnknownNumber);
            };
            let now = crate::models::now();
            let contact = match Contact::by_phone(conn, team.id, &from)? {
                Some(contact) => contact,
                None => Contact::create(
                    conn,
                    &NewContact {
                        team_id: team.id,
                        name: &from,
                        phone: &from,
                        created_at: now,
                        updated_at: now,
                    },
                )?,
            };
            let message = Message::create(
                conn,
                &NewMessage {
                    team_id: team.id,
                    contact_id: contact.id,
                    direction: INBOUND,
                    body: &sms.body,
                    media: media.clone(),
                    status: STATUS_RECEIVED,
                    error_code: None,
                    twilio_sid: Some(&sms.sid),
                    sent_by: None,
                    created_at: now,
                },
            )?;
            Contact::touch(conn, contact.id, now)?;
            notify_contact(conn, &contact, ContactEvent::MessageCreated(&message), None)?;
            Ok(Received::Stored(Box::new(message)))
        });
        match attempt {
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            )) => continue,
            other => return other,
        }
    }
    Ok(Received::Duplicate)
}
