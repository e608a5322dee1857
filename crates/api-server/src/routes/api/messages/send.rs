//! `POST /api/messages/send`: `{contactId,body}` → 201 `{message}`.
//! `X-Socket-Id` leaves the sender's connection out of the fan-out;
//! `Idempotency-Key` makes a retry answer the first message, in its current
//! state, instead of sending twice. The send itself is queued in
//! `sms_outbox` in the message's transaction and done by the SMS worker
//! (`twilio/delivery.rs`).

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::db::write_transaction;
use crate::error::AppError;
use crate::models::contact::Contact;
use crate::models::idempotency::{self, NewIdempotencyKey};
use crate::models::message::{
    Message, MessageView, NewMessage, OUTBOUND, STATUS_NOT_SENT, STATUS_QUEUED,
};
use crate::models::parse_id;
use crate::models::sms_outbox::SmsJob;
use crate::realtime::{notify_contact, ContactEvent};
use crate::routes::api::socket_id;

/// Twilio's limit on one message's body, in characters.
pub const MAX_BODY_CHARS: usize = 1600;

/// The message to send.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SendMessage {
    contact_id: String,
    body: String,
}

/// Handles the request.
pub async fn handler(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<SendMessage>,
) -> Result<HttpResponse, AppError> {
    let SendMessage { contact_id, body } = body.into_inner();
    let contact_id = parse_id(&contact_id).ok_or(AppError::NotFound("contact"))?;
    let chars = body.chars().count();
    if body.trim().is_empty() || chars > MAX_BODY_CHARS {
        return Err(AppError::bad_request(
            "invalid_body",
            format!("a message has 1 to {MAX_BODY_CHARS} characters ({chars} given)"),
        ));
    }
    let key = req
        .headers()
        .get("idempotency-key")
        .map(|v| v.to_str().map(str::to_owned))
        .transpose()
        .map_err(|_| {
            AppError::bad_request("invalid_idempotency_key", "Idempotency-Key must be text")
        })?;
    if key.as_ref().is_some_and(|k| k.is_empty() || k.len() > 255) {
        return Err(AppError::bad_request(
            "invalid_idempotency_key",
            "Idempotency-Key must be 1 to 255 characters",
        ));
    }
    let (team_id, user_id) = (auth.team_id(), auth.user.id);
    let socket = socket_id(&req);
    // Without Twilio nothing pretends to send: the message says so.
    let (status, error_code) = match state.twilio {
        Some(_) => (STATUS_QUEUED, None),
        None => (STATUS_NOT_SENT, Some("twilio_not_configured")),
    };
    let (message, created) = state
        .write(move |conn| {
            let attempt = write_transaction(conn, |conn| {
                if let Some(key) = &key {
                    if let Some(existing) = idempotency::message_for(conn, user_id, key)? {
                        return Ok((Message::reload(conn, existing)?, false));
                    }
                }
                let contact = Contact::find_in_team(conn, team_id, contact_id)?
                    .ok_or(AppError::NotFound("contact"))?;
                let now = crate::models::now();
                let message = Message::create(
                    conn,
                    &NewMessage {
                        team_id,
                        contact_id: contact.id,
                        direction: OUTBOUND,
                        body: &body,
                        media: "[]".into(),
                        status,
                        error_code,
                        twilio_sid: None,
                        sent_by: Some(user_id),
                        created_at: now,
                    },
                )?;
                if status == STATUS_QUEUED {
                    // Sent by the SMS worker once this commits: the send is
                    // as durable as the message.
                    SmsJob::enqueue(conn, message.id, now)?;
                }
                if let Some(key) = &key {
                    idempotency::remember(
                        conn,
                        &NewIdempotencyKey {
                            user_id,
                            key,
                            message_id: message.id,
                            created_at: now,
                        },
                    )?;
                }
                Contact::touch(conn, contact.id, now)?;
                notify_contact(
                    conn,
                    &contact,
                    ContactEvent::MessageCreated(&message),
                    socket.as_deref(),
                )?;
                Ok::<_, AppError>((message, true))
            });
            match (attempt, &key) {
                // Two retries raced on PostgreSQL: the other one won; answer its message.
                (Err(AppError::Conflict { .. }), Some(key)) => {
                    let existing = idempotency::message_for(conn, user_id, key)?
                        .ok_or(AppError::Internal("idempotency conflict".into()))?;
                    Ok((Message::reload(conn, existing)?, false))
                }
                (other, _) => other,
            }
        })
        .await?;
    if created {
        state.dispatcher.wake();
        // Off the request path: the answer does not wait for Twilio.
        state.sms.wake();
    }
    Ok(HttpResponse::Created().json(json!({ "message": MessageView::from(&message) })))
}
