//! `/api/…`

pub mod auth;
pub mod contacts;
pub mod health;
pub mod me;
pub mod messages;
pub mod pusher;
pub mod realtime;
pub mod webhooks;

use actix_web::HttpRequest;

use crate::error::AppError;
use crate::models::parse_id;

/// An id from the path; one that cannot exist is simply not found.
pub fn path_id(raw: &str, what: &'static str) -> Result<i64, AppError> {
    parse_id(raw).ok_or(AppError::NotFound(what))
}

/// `X-Socket-Id`: the sender's own connection, left out of the fan-out (its
/// page already shows the change). An id of the wrong form is ignored.
pub fn socket_id(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get("x-socket-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
