//! `/api/pusher/…`: the endpoints pusher-js calls.
pub mod auth;
pub mod user_auth;

use std::collections::HashMap;

use actix_web::HttpRequest;

use crate::error::AppError;

/// The fields of a body that pusher-js posts form-encoded, or that other
/// clients post as JSON.
pub fn fields(req: &HttpRequest, body: &[u8]) -> Result<HashMap<String, String>, AppError> {
    let json = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if json {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| AppError::bad_request("invalid_json", e.to_string()))?;
        let object = value
            .as_object()
            .ok_or_else(|| AppError::bad_request("invalid_json", "expected a JSON object"))?;
        Ok(object
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
            .collect())
    } else {
        Ok(url::form_urlencoded::parse(body).into_owned().collect())
    }
}

/// A required field.
pub fn required<'a>(
    fields: &'a HashMap<String, String>,
    name: &'static str,
) -> Result<&'a str, AppError> {
    fields
        .get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| AppError::bad_request("missing_field", format!("{name} is required")))
}
