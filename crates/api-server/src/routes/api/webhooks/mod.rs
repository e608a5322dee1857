//! `/api/webhooks/…`: Pusher's and Twilio's callbacks (no session; each is
//! authenticated by its signature).
pub mod pusher;
pub mod twilio;
pub mod twilio_status;

use actix_web::HttpRequest;

use crate::app::AppState;
use crate::error::AppError;
use crate::twilio::signature;

/// The POSTed form of a Twilio webhook, after its `X-Twilio-Signature` was
/// checked against `PUBLIC_URL` + the path and query Twilio called. Repeated
/// fields are kept. Refused (403) when the signature is missing or wrong, or
/// when no Twilio auth token is configured to check it with.
pub fn twilio_form(
    req: &HttpRequest,
    state: &AppState,
    body: &[u8],
) -> Result<Vec<(String, String)>, AppError> {
    let Some(twilio) = &state.config.twilio else {
        return Err(AppError::Forbidden(
            "Twilio webhooks cannot be verified: TWILIO_AUTH_TOKEN is not configured".into(),
        ));
    };
    let fields: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let header = req
        .headers()
        .get("x-twilio-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let url = format!("{}{}", state.config.public_url, path);
    if !signature::is_valid(twilio.auth_token.expose(), header, &url, &fields) {
        tracing::warn!(%url, "Twilio webhook with a missing or invalid signature refused");
        return Err(AppError::Forbidden("invalid X-Twilio-Signature".into()));
    }
    Ok(fields)
}

/// The first value of a form field.
pub fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
