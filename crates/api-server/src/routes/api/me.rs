//! `GET /api/me` → `{user}`.

use actix_web::HttpResponse;
use serde_json::json;

use crate::auth::AuthUser;
use crate::error::AppError;
use crate::models::user::UserView;

/// Handles the request.
pub async fn handler(auth: AuthUser) -> Result<HttpResponse, AppError> {
    Ok(HttpResponse::Ok().json(json!({ "user": UserView::from(&auth.user) })))
}
