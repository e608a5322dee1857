//! `/api/…`

pub mod auth;
pub mod contacts;
pub mod health;
pub mod me;
pub mod messages;
pub mod pusher;
pub mod realtime;
pub mod webhooks;

use crate::error::AppError;
use crate::models::parse_id;

/// An id from the path; one that cannot exist is simply not found.
pub fn path_id(raw: &str, what: &'static str) -> Result<i64, AppError> {
    parse_id(raw).ok_or(AppError::NotFound(what))
}
