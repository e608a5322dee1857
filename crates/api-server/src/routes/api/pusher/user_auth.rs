//! `POST /api/pusher/user-auth`: pusher-js's user authentication (signin)
//! → `{auth,user_data}` with the user's id and name.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::AppError;
use crate::routes::api::pusher::{fields, required};

/// Handles the request.
pub async fn handler(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    let fields = fields(&req, &body)?;
    let socket_id = required(&fields, "socket_id")?;
    let user_data =
        json!({ "id": auth.user.id.to_string(), "user_info": { "name": auth.user.name } });
    let answer = state
        .realtime
        .credentials
        .authenticate_user(socket_id, &user_data)
        .map_err(|e| AppError::bad_request("invalid_auth_request", e.to_string()))?;
    Ok(HttpResponse::Ok().json(answer))
}
