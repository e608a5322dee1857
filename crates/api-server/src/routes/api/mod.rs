//! `/api/…`

pub mod auth;
pub mod contacts;
pub mod health;
pub mod me;
pub mod messages;
pub mod pusher;
pub mod realtime;
pub mod team;
pub mod webhooks;

use actix_web::HttpRequest;

use crate::error::AppError;
use crate::models::parse_id;

/// An id from the path; one that cannot exist is simply not found.
pub fn path_id(raw: &str, what: &'static str) -> Result<i64, AppError> {
    parse_id(raw).ok_or(AppError::NotFound(what))
}

/// The paging parameters of a list: `limit` (a page's size) and `before`
/// (where the page ends: what it means is the list's own).
#[derive(Debug, serde::Deserialize)]
pub struct Page {
    /// Items per page, as given.
    pub limit: Option<String>,
    /// The list's cursor, as given.
    pub before: Option<String>,
}

impl Page {
    /// `limit`: `default` when absent or empty, else a whole number from 1
    /// to `max` (400 `invalid_limit` otherwise).
    pub fn limit(&self, default: i64, max: i64) -> Result<i64, AppError> {
        match self.limit.as_deref() {
            None | Some("") => Ok(default),
            Some(raw) => raw
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    AppError::bad_request(
                        "invalid_limit",
                        format!("limit must be a number from 1 to {max}"),
                    )
                }),
        }
    }

    /// `before` read by `parse` (absent or empty: `None`); what `parse`
    /// refuses is a 400 `invalid_before` saying `expected`.
    pub fn before<T>(
        &self,
        parse: impl FnOnce(&str) -> Option<T>,
        expected: &str,
    ) -> Result<Option<T>, AppError> {
        match self.before.as_deref() {
            None | Some("") => Ok(None),
            Some(raw) => parse(raw).map(Some).ok_or_else(|| {
                AppError::bad_request("invalid_before", format!("before must be {expected}"))
            }),
        }
    }
}

/// `X-Socket-Id`: the sender's own connection, left out of the fan-out (its
/// page already shows the change). An id of the wrong form is ignored.
pub fn socket_id(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get("x-socket-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
