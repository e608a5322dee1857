//! `GET /api/auth/session` → 200 `{user}` (`{id,name,email,teamId}`) while
//! the request carries a valid session, else 200 `{user:null}`. A page asks
//! this on load to learn whether it is logged in without a 401 in the
//! browser's console (`GET /api/me` answers 401 then, as the contract says).

use actix_web::HttpResponse;
use serde_json::json;

use crate::auth::AuthUser;
use crate::error::AppError;
use crate::models::user::UserView;

/// Handles the request.
pub async fn handler(auth: Result<AuthUser, AppError>) -> Result<HttpResponse, AppError> {
    let user = match auth {
        Ok(auth) => Some(UserView::from(&auth.user)),
        // No session, an unknown or expired one: logged out, which is an
        // answer, not an error. Anything else (the database) still is.
        Err(AppError::Unauthorized) => None,
        Err(e) => return Err(e),
    };
    Ok(HttpResponse::Ok().json(json!({ "user": user })))
}
