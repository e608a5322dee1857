//! `POST /api/webhooks/twilio`: an inbound SMS. The `To` number picks the
//! team (unknown: a logged 200 that stores nothing, so Twilio stops
//! retrying); an unknown `From` becomes a contact; a retried `MessageSid`
//! stores nothing new, however many retries race. → 200 TwiML.

use actix_web::{web, HttpRequest, HttpResponse};

use crate::app::AppState;
use crate::error::AppError;
use crate::models::message::Media;
use crate::routes::api::webhooks::{field, twilio_form};
use crate::twilio::inbound::{self, InboundSms, Received};

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
    let sms = InboundSms {
        sid: sid.to_owned(),
        from: from.to_owned(),
        to: to.to_owned(),
        body: field(&fields, "Body").unwrap_or_default().to_owned(),
        media: media(&fields),
    };
    let outcome = state
        .write(move |conn| Ok(inbound::receive(conn, &sms)?))
        .await?;
    match outcome {
        Received::Stored(_) => state.dispatcher.wake(),
        Received::Duplicate => {
            tracing::info!("Twilio retried a message already stored; nothing stored")
        }
        Received::UnknownNumber => {
            tracing::warn!("inbound SMS to a number no team has; nothing stored")
        }
    }
    Ok(twiml())
}
