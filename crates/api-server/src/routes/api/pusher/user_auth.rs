//! `POST /api/pusher/user-auth`: pusher-js's user authentication (signin)
//! → `{auth,user_data}` with the user's id, name and `watchlist`: the ids of
//! the teammates whose coming online and going offline the connection is
//! told of (`pusher.user.watchlist`), at most 100 (Pusher's limit; which
//! ones in a larger team: [`User::watched_teammates`]).

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::AppError;
use crate::models::user::User;
use crate::routes::api::pusher::{fields, required};

/// Handles the request.
pub async fn handler(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Bytes,
) -> Result<HttpResponse, AppError> {
    let fields = fields(&req, &body)?;
    let socket_id = required(&fields, "socket_id")?.to_owned();
    let user = auth.user.clone();
    let watchlist: Vec<String> = state
        .db(move |conn| {
            Ok(User::watched_teammates(conn, &user, crate::models::now())?
                .into_iter()
                .map(|(id, _)| id.to_string())
                .collect())
        })
        .await?;
    let user_data = json!({
        "id": auth.user.id.to_string(),
        "user_info": { "name": auth.user.name },
        "watchlist": watchlist,
    });
    let answer = state
        .realtime
        .credentials
        .authenticate_user(&socket_id, &user_data)
        .map_err(|e| AppError::bad_request("invalid_auth_request", e.to_string()))?;
    Ok(HttpResponse::Ok().json(answer))
}
