//! Hands a committed outbound message to Twilio, off the request path, and
//! records (and publishes) what Twilio answered.

use actix_web::web;

use crate::app::AppState;
use crate::db::write_transaction;
use crate::error::AppError;
use crate::models::contact::Contact;
use crate::models::early_status::EarlyStatus;
use crate::models::message::Message;
use crate::models::team::Team;
use crate::realtime::{notify_contact, ContactEvent};
use crate::twilio::client::SendError;
use crate::twilio::status::may_move;

/// Sends message `message_id` through Twilio; every change is published.
pub async fn deliver(state: web::Data<AppState>, message_id: i64) {
    if let Err(e) = try_deliver(&state, message_id).await {
        tracing::error!(message_id, error = %e, "could not record Twilio's answer");
    }
}

async fn try_deliver(state: &web::Data<AppState>, message_id: i64) -> Result<(), AppError> {
    let Some(twilio) = state.twilio.clone() else {
        return Ok(());
    };
    let (message, contact, team) = state
        .db(move |conn| {
            let message = Message::reload(conn, message_id)?;
            let team = Team::find(conn, message.team_id)?;
            let contact = Contact::find_in_team(conn, team.id, message.contact_id)?
                .ok_or(AppError::NotFound("contact"))?;
            Ok((message, contact, team))
        })
        .await?;
    let (sid, status, error_code) = match twilio
        .send(&team.phone_number, &contact.phone, &message.body)
        .await
    {
        Ok(accepted) => (Some(accepted.sid), accepted.status, None),
        Err(SendError::Refused { code, message }) => {
            tracing::warn!(message_id, %code, %message, "Twilio refused the message");
            (None, "failed".to_owned(), Some(code))
        }
        Err(SendError::Unavailable(why)) => {
            tracing::warn!(message_id, %why, "Twilio could not take the message");
            (
                None,
                "failed".to_owned(),
                Some("twilio_unavailable".to_owned()),
            )
        }
    };
    let changed = state
        .write(move |conn| {
            write_transaction(conn, |conn| {
                let current = Message::reload(conn, message_id)?;
                // A status callback may already have moved it further, or
                // have come before this answer and been kept.
                let early = match sid.as_deref() {
                    Some(sid) => EarlyStatus::take(conn, sid)?,
                    None => None,
                };
                let mut status = if may_move(&current.status, &status) {
                    status
                } else {
                    current.status.clone()
                };
                let mut error_code = error_code.clone();
                if let Some(early) = early.filter(|e| may_move(&status, &e.status)) {
                    status = early.status;
                    error_code = early.error_code.or(error_code);
                }
                Message::set_delivery(
                    conn,
                    message_id,
                    sid.as_deref(),
                    &status,
                    error_code.as_deref(),
                )?;
                let updated = Message::reload(conn, message_id)?;
                let changed =
                    updated.status != current.status || updated.twilio_sid != current.twilio_sid;
                if changed {
                    notify_contact(conn, &contact, ContactEvent::MessageStatus(&updated), None)?;
                }
                Ok::<_, AppError>(changed)
            })
        })
        .await?;
    if changed {
        state.dispatcher.wake();
    }
    Ok(())
}
