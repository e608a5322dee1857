//! `POST /api/webhooks/twilio`: an inbound SMS. The `To` number picks the
//! team (unknown: a logged 200 that stores nothing, so Twilio stops
//! retrying); an unknown `From` becomes a contact; a retried `MessageSid`
//! stores nothing new, however many retries race. → 200 TwiML.

use actix_web::{web, HttpRequest, HttpResponse};

use crate::app::AppState;
use crate::db::write_transaction;
use crate::error::AppError;
use crate::models::contact::{Contact, NewContact};
use crate::models::message::{Media, Message, NewMessage, INBOUND, STATUS_RECEIVED};
use crate::models::team::Team;
use crate::phone::PhoneNumber;
use crate::realtime::{notify_contact, ContactEvent};
use crate::routes::api::webhooks::{field, twilio_form};

fn twiml() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/xml; charset=utf-8")
        .body("<Response></Response>")
}

/// The attachments of an MMS: `MediaUrl{N}` and `MediaContentType{N}`.
pub fn media(fields: &[(String, String)]) -> Vec<Media> {
    let count: usize = field(fields, "NumMedia")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (0..count.min(10))
        .filter_map(|i| {
            let url = field(fields, &format!("MediaUrl{i}"))?;
            let content_type = field(fields, &format!("MediaContentType{i}"))
                .unwrap_or("application/octet-stream");
            Some(Media {
                url: url.to_owned(),
                content_type: content_type.to_owned(),
            })
        })
        .collect()
}

/// A phone number as stored: E.164 when it parses, else as Twilio wrote it
/// (short codes, alphanumeric senders).
fn stored_number(raw: &str) -> String {
    PhoneNumber::parse(raw).map_or_else(|| raw.trim().to_owned(), |p| p.as_str().to_owned())
}

enum Outcome {
    Stored,
    Duplicate,
    UnknownNumber,
}

/// Handles the request.
pub async fn handler(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    let fields = twilio_form(&req, &state, &body)?;
    let (Some(sid), Some(from), Some(to)) = (
        field(&fields, "MessageSid").or_else(|| field(&fields, "SmsSid")),
        field(&fields, "From"),
        field(&fields, "To"),
    ) else {
        return Err(AppError::bad_request(
            "invalid_webhook",
            "MessageSid, From and To are required",
        ));
    };
    let (sid, from, to) = (sid.to_owned(), stored_number(from), stored_number(to));
    let text = field(&fields, "Body").unwrap_or_default().to_owned();
    let media = serde_json::to_string(&media(&fields)).unwrap_or_else(|_| "[]".into());
    let outcome = state
        .db(move |conn| {
            // A retry racing this one on PostgreSQL loses on the unique
            // indexes; the second try then finds what the winner stored.
            for _ in 0..3 {
                let attempt = write_transaction(conn, |conn| {
                    if Message::by_twilio_sid(conn, &sid)?.is_some() {
                        return Ok(Outcome::Duplicate);
                    }
                    let Some(team) = Team::by_phone_number(conn, &to)? else {
                        return Ok(Outcome::UnknownNumber);
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
                            body: &text,
                            media: media.clone(),
                            status: STATUS_RECEIVED,
                            error_code: None,
                            twilio_sid: Some(&sid),
                            sent_by: None,
                            created_at: now,
                        },
                    )?;
                    Contact::touch(conn, contact.id, now)?;
                    notify_contact(conn, &contact, ContactEvent::MessageCreated(&message), None)?;
                    Ok::<_, diesel::result::Error>(Outcome::Stored)
                });
                match attempt {
                    Err(diesel::result::Error::DatabaseError(
                        diesel::result::DatabaseErrorKind::UniqueViolation,
                        _,
                    )) => continue,
                    other => return Ok(other?),
                }
            }
            Ok(Outcome::Duplicate)
        })
        .await?;
    match outcome {
        Outcome::Stored => state.dispatcher.wake(),
        Outcome::Duplicate => {
            tracing::info!("Twilio retried a message already stored; nothing stored")
        }
        Outcome::UnknownNumber => {
            tracing::warn!("inbound SMS to a number no team has; nothing stored")
        }
    }
    Ok(twiml())
}
