//! `POST /api/webhooks/pusher`: Pusher's webhooks, signature checked and
//! acknowledged. Nothing is kept from them: who is viewing a contact is read
//! from the realtime service's presence state when asked, the same for
//! every api-server instance (a list kept from webhooks lived in the one
//! process that received them).

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::app::AppState;
use crate::error::AppError;

/// Handles the request.
pub async fn handler(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let webhook = state
        .realtime
        .webhooks
        .verify(header("x-pusher-key"), header("x-pusher-signature"), &body)
        .map_err(|e| match e {
            realtime_core::WebhookError::InvalidBody(_)
            | realtime_core::WebhookError::MissingBody => {
                AppError::bad_request("invalid_webhook", e.to_string())
            }
            _ => AppError::Unauthorized,
        })?;
    Ok(HttpResponse::Ok().json(json!({ "received": webhook.events.len() })))
}
