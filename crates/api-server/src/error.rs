//! The one error type of the HTTP API: every failure becomes a status and
//! `{"error":{"code","message"}}`; the cause goes to the log, never to the client.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The request is malformed or breaks a rule (400).
    #[error("{message}")]
    BadRequest {
        /// A stable, machine-readable code.
        code: &'static str,
        /// A sentence for the user.
        message: String,
    },
    /// No valid session or token (401).
    #[error("authentication required")]
    Unauthorized,
    /// Wrong email or password (401).
    #[error("invalid email or password")]
    InvalidCredentials,
    /// Authenticated, but not allowed (403).
    #[error("{0}")]
    Forbidden(String),
    /// Not found, or another team's (404).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request conflicts with existing data (409).
    #[error("{message}")]
    Conflict {
        /// A stable code.
        code: &'static str,
        /// A sentence for the user.
        message: String,
    },
    /// The route exists, but not with this method (405).
    #[error("this route does not accept that method")]
    MethodNotAllowed,
    /// The body is larger than the route accepts (413).
    #[error("the request body is larger than {}", limit_text(.limit))]
    PayloadTooLarge {
        /// The limit, in bytes, when the refusal knows it.
        limit: Option<usize>,
    },
    /// The body is not of the type the route reads (415).
    #[error("the request body must be sent as {}", .expected.unwrap_or("a type this route reads"))]
    UnsupportedMediaType {
        /// The content type expected, when the refusal knows it.
        expected: Option<&'static str>,
    },
    /// The body did not arrive in time (408).
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    /// Too many attempts (429).
    #[error("too many attempts; try again {}", retry_text(.retry_after_secs))]
    TooManyRequests {
        /// When to try again (sent as `Retry-After`), when it is known.
        retry_after_secs: Option<u64>,
    },
    /// Something failed on our side (500); the cause is logged.
    #[error("internal error")]
    Internal(String),
    /// The realtime service did not answer a query (503); the cause is logged.
    #[error("the realtime service is unavailable")]
    RealtimeUnavailable(String),
    /// The server has more work queued than it takes on in time (503),
    /// with `Retry-After`.
    #[error("the server is busy; try again in {retry_after_secs} seconds")]
    Overloaded {
        /// When to try again.
        retry_after_secs: u64,
    },
    /// The database is unreachable or busy (503).
    #[error("the database is unavailable")]
    Unavailable(String),
    /// The database's disk is full (507): nothing was written; reads still work.
    #[error("the database's disk is full; nothing was written")]
    StorageFull(String),
}

fn limit_text(limit: &Option<usize>) -> String {
    match limit {
        Some(limit) => format!("the limit of {limit} bytes"),
        None => "this route accepts".to_owned(),
    }
}

fn retry_text(secs: &Option<u64>) -> String {
    match secs {
        Some(secs) => format!("in {secs} seconds"),
        None => "later".to_owned(),
    }
}

impl AppError {
    /// The error an answer of `status` stands for, when something other
    /// than a handler made it (actix's router, an extractor's payload
    /// error): each status with an error kind of its own is that kind, as a
    /// handler would have answered it less what only the handler knew
    /// (a limit, a wait); any other 4xx is `bad_request`, any 5xx `internal`.
    pub fn of_status(status: StatusCode) -> Self {
        match status {
            StatusCode::UNAUTHORIZED => AppError::Unauthorized,
            StatusCode::FORBIDDEN => AppError::Forbidden("this request is not allowed".to_owned()),
            StatusCode::NOT_FOUND => AppError::NotFound("route"),
            StatusCode::METHOD_NOT_ALLOWED => AppError::MethodNotAllowed,
            StatusCode::REQUEST_TIMEOUT => AppError::RequestTimeout,
            StatusCode::PAYLOAD_TOO_LARGE => AppError::PayloadTooLarge { limit: None },
            StatusCode::UNSUPPORTED_MEDIA_TYPE => AppError::UnsupportedMediaType { expected: None },
            StatusCode::TOO_MANY_REQUESTS => AppError::TooManyRequests {
                retry_after_secs: None,
            },
            status if status.is_server_error() => AppError::Internal(String::new()),
            status => AppError::bad_request(
                "bad_request",
                format!(
                    "the request was refused ({})",
                    status.canonical_reason().unwrap_or("client error")
                ),
            ),
        }
    }

    /// A 400 with a code and a sentence.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        AppError::BadRequest {
            code,
            message: message.into(),
        }
    }

    fn code(&self) -> &'static str {
        match self {
            AppError::BadRequest { code, .. } | AppError::Conflict { code, .. } => code,
            AppError::Unauthorized => "unauthorized",
            AppError::InvalidCredentials => "invalid_credentials",
            AppError::Forbidden(_) => "forbidden",
            AppError::NotFound(_) => "not_found",
            AppError::MethodNotAllowed => "method_not_allowed",
            AppError::RequestTimeout => "request_timeout",
            AppError::PayloadTooLarge { .. } => "payload_too_large",
            AppError::UnsupportedMediaType { .. } => "unsupported_media_type",
            AppError::TooManyRequests { .. } => "too_many_requests",
            AppError::Internal(_) => "internal",
            AppError::Unavailable(_)
            | AppError::RealtimeUnavailable(_)
            | AppError::Overloaded { .. } => "unavailable",
            AppError::StorageFull(_) => "storage_full",
        }
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            AppError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            AppError::Unauthorized | AppError::InvalidCredentials => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict { .. } => StatusCode::CONFLICT,
            AppError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            AppError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            AppError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            AppError::Unavailable(_)
            | AppError::RealtimeUnavailable(_)
            | AppError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            AppError::StorageFull(_) => StatusCode::INSUFFICIENT_STORAGE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            AppError::Internal(cause) => tracing::error!(%cause, "request failed"),
            AppError::Unavailable(cause) => tracing::warn!(%cause, "database unavailable"),
            AppError::RealtimeUnavailable(cause) => {
                tracing::warn!(%cause, "realtime service unavailable")
            }
            AppError::StorageFull(cause) => tracing::error!(%cause, "the database's disk is full"),
            _ => {}
        }
        let mut response = HttpResponse::build(self.status_code());
        if let AppError::TooManyRequests {
            retry_after_secs: Some(retry_after_secs),
        }
        | AppError::Overloaded { retry_after_secs } = self
        {
            response.insert_header(("Retry-After", retry_after_secs.to_string()));
        }
        response.json(error_body(self.code(), &self.to_string()))
    }
}

/// The contract's error body.
pub fn error_body(code: &str, message: &str) -> serde_json::Value {
    json!({ "error": { "code": code, "message": message } })
}

/// The code and sentence of an answer of `status` that something other than
/// a handler made ([`AppError::of_status`]): the middleware in `app.rs`
/// gives such an answer the contract's body.
pub fn for_status(status: StatusCode) -> (&'static str, String) {
    let error = AppError::of_status(status);
    (error.code(), error.to_string())
}

/// An answer in the contract's shape for `status` (see [`for_status`]).
pub fn response_for_status(status: StatusCode) -> HttpResponse {
    let (code, message) = for_status(status);
    HttpResponse::build(status).json(error_body(code, &message))
}

impl From<diesel::result::Error> for AppError {
    fn from(e: diesel::result::Error) -> Self {
        match e {
            diesel::result::Error::NotFound => AppError::NotFound("record"),
            diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                info,
            ) => AppError::Conflict {
                code: "conflict",
                message: format!("already exists ({})", info.message()),
            },
            diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::ClosedConnection,
                info,
            ) => AppError::Unavailable(info.message().to_owned()),
            diesel::result::Error::DatabaseError(_, info) if is_connection_lost(info.message()) => {
                AppError::Unavailable(info.message().to_owned())
            }
            diesel::result::Error::DatabaseError(_, info) if is_disk_full(info.message()) => {
                AppError::StorageFull(info.message().to_owned())
            }
            other => AppError::Internal(other.to_string()),
        }
    }
}

/// Whether a database error says the server went away under the query
/// (PostgreSQL restarted or shut down): the request may be tried again.
fn is_connection_lost(message: &str) -> bool {
    message.contains("server closed the connection")
        || message.contains("terminating connection")
        || message.contains("the database system is shutting down")
        || message.contains("the database system is starting up")
        || message.contains("no connection to the server")
}

/// Whether a database error says its disk is full: SQLite's `SQLITE_FULL`, or
/// PostgreSQL failing to extend a file (SQLSTATE 53100, which diesel shows
/// only as text).
pub(crate) fn is_disk_full(message: &str) -> bool {
    message.contains("database or disk is full")
        || message.contains("No space left on device")
        || message.contains("could not extend file")
}

impl From<r2d2::Error> for AppError {
    fn from(e: r2d2::Error) -> Self {
        AppError::Unavailable(e.to_string())
    }
}

impl From<actix_web::error::BlockingError> for AppError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        AppError::Internal(e.to_string())
    }
}

/// Turns actix's own extractor failures (bad JSON, bad form, bad path)
/// into the contract's error shape instead of actix's plain text.
/// An oversize body answers 413 and the wrong content type 415, each in
/// that shape too.
pub fn json_error_handler(
    err: actix_web::error::JsonPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    use actix_web::error::{JsonPayloadError, PayloadError};
    match err {
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => {
            AppError::PayloadTooLarge { limit: Some(limit) }
        }
        JsonPayloadError::ContentType => AppError::UnsupportedMediaType {
            expected: Some("application/json"),
        },
        JsonPayloadError::Payload(PayloadError::Overflow) => AppError::PayloadTooLarge {
            limit: Some(BODY_LIMIT),
        },
        JsonPayloadError::Payload(e) if crate::slow_clients::is_body_timeout(&e) => {
            AppError::RequestTimeout
        }
        other => AppError::bad_request("invalid_json", other.to_string()),
    }
    .into()
}

/// See [`json_error_handler`].
pub fn form_error_handler(
    err: actix_web::error::UrlencodedError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    use actix_web::error::{PayloadError, UrlencodedError};
    match err {
        UrlencodedError::Overflow { limit, .. } => AppError::PayloadTooLarge { limit: Some(limit) },
        UrlencodedError::Payload(PayloadError::Overflow) => AppError::PayloadTooLarge {
            limit: Some(BODY_LIMIT),
        },
        UrlencodedError::Payload(e) if crate::slow_clients::is_body_timeout(&e) => {
            AppError::RequestTimeout
        }
        UrlencodedError::ContentType => AppError::UnsupportedMediaType {
            expected: Some("application/x-www-form-urlencoded"),
        },
        other => AppError::bad_request("invalid_form", other.to_string()),
    }
    .into()
}

/// The largest JSON or form body api-server reads (64 KiB): an inbox
/// message, a note or a login is far smaller.
pub const BODY_LIMIT: usize = 64 * 1024;

/// The largest raw body (Pusher's and Twilio's webhooks, Pusher's channel
/// authorization): actix's own default, stated here.
pub const RAW_BODY_LIMIT: usize = 256 * 1024;

/// See [`json_error_handler`].
pub fn query_error_handler(
    err: actix_web::error::QueryPayloadError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    AppError::bad_request("invalid_query", err.to_string()).into()
}

/// See [`json_error_handler`].
pub fn path_error_handler(
    _err: actix_web::error::PathError,
    _req: &actix_web::HttpRequest,
) -> actix_web::Error {
    AppError::NotFound("resource").into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_made_outside_handlers_read_as_their_error_kinds() {
        for status in [400, 401, 403, 404, 405, 408, 413, 415, 429, 500] {
            let status = StatusCode::from_u16(status).unwrap();
            let error = AppError::of_status(status);
            assert_eq!(error.status_code(), status);
            assert_eq!(for_status(status), (error.code(), error.to_string()));
        }
        assert_eq!(
            for_status(StatusCode::PAYLOAD_TOO_LARGE),
            (
                "payload_too_large",
                "the request body is larger than this route accepts".to_owned()
            )
        );
        assert_eq!(
            for_status(StatusCode::TOO_MANY_REQUESTS),
            (
                "too_many_requests",
                "too many attempts; try again later".to_owned()
            )
        );
        assert_eq!(for_status(StatusCode::IM_A_TEAPOT).0, "bad_request");
        assert_eq!(for_status(StatusCode::BAD_GATEWAY).0, "internal");
        // What only a handler knows shows when it is known.
        assert_eq!(
            AppError::PayloadTooLarge { limit: Some(10) }.to_string(),
            "the request body is larger than the limit of 10 bytes"
        );
        let wait = AppError::TooManyRequests {
            retry_after_secs: Some(3),
        };
        assert_eq!(
            wait.to_string(),
            "too many attempts; try again in 3 seconds"
        );
        let overloaded = AppError::Overloaded {
            retry_after_secs: 1,
        }
        .error_response();
        assert_eq!(overloaded.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            overloaded
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("1")
        );
        assert_eq!(
            wait.error_response()
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("3")
        );
    }
}
