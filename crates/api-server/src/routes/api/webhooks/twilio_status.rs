//! `POST /api/webhooks/twilio/status`: Twilio's status callback
//! (`MessageSid`, `MessageStatus`, `ErrorCode`). A status only moves
//! forwards; a late `sent` after `delivered` changes nothing. → 204.

use actix_web::{web, HttpRequest, HttpResponse};

use crate::app::AppState;
use crate::db::write_transaction;
use crate::error::AppError;
use crate::models::contact::Contact;
use crate::models::early_status::EarlyStatus;
use crate::models::message::Message;
use crate::realtime::{notify_contact, ContactEvent};
use crate::routes::api::webhooks::{field, twilio_form};
use crate::twilio::status::{may_move, rank};

/// Handles the request.
pub async fn handler(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    let fields = twilio_form(&req, &state, &body)?;
    let (Some(sid), Some(status)) = (
        field(&fields, "MessageSid").or_else(|| field(&fields, "SmsSid")),
        field(&fields, "MessageStatus").or_else(|| field(&fields, "SmsStatus")),
    ) else {
        return Err(AppError::bad_request(
            "invalid_webhook",
            "MessageSid and MessageStatus are required",
        ));
    };
    if rank(status).is_none() {
        tracing::warn!(%status, "unknown Twilio message status ignored");
        return Ok(HttpResponse::NoContent().finish());
    }
    let (sid, status) = (sid.to_owned(), status.to_owned());
    let error_code = field(&fields, "ErrorCode")
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    let changed = state
        .write(move |conn| {
            write_transaction(conn, |conn| {
                let Some(message) = Message::by_twilio_sid(conn, &sid)? else {
                    // Twilio may call back before its answer to our send gave
                    // us the SID: keep the status until the SID is stored.
                    EarlyStatus::keep(conn, &sid, &status, error_code.as_deref())?;
                    return Ok(false);
                };
                if !may_move(&message.status, &status) {
                    return Ok(false);
                }
                let error_code = error_code
                    .as_deref()
                    .or(message.error_code.as_deref())
                    .map(str::to_owned);
                Message::set_delivery(conn, message.id, None, &status, error_code.as_deref())?;
                let updated = Message::reload(conn, message.id)?;
                let contact = Contact::find_in_team(conn, message.team_id, message.contact_id)?
                    .ok_or(AppError::NotFound("contact"))?;
                notify_contact(conn, &contact, ContactEvent::MessageStatus(&updated), None)?;
                Ok::<_, AppError>(true)
            })
        })
        .await?;
    if changed {
        state.dispatcher.wake();
    }
    Ok(HttpResponse::NoContent().finish())
}
