//! `POST /api/auth/logout`: ends the session → 204.

use actix_web::cookie::Cookie;
use actix_web::{web, HttpResponse};

use crate::app::AppState;
use crate::auth::{AuthUser, SESSION_COOKIE};
use crate::error::AppError;
use crate::models::session::Session;

/// Handles the request.
pub async fn handler(state: web::Data<AppState>, auth: AuthUser) -> Result<HttpResponse, AppError> {
    let token_hash = auth.token_hash.clone();
    state
        .write(move |conn| Ok(Session::delete(conn, &token_hash)?))
        .await?;
    let mut expired = Cookie::build(SESSION_COOKIE, "")
        .path("/")
        .http_only(true)
        .finish();
    expired.make_removal();
    Ok(HttpResponse::NoContent().cookie(expired).finish())
}
