//! `GET /api/team/members` → `{users:[{id,name}]}`: the caller's teammates
//! (the team's other members), the same at most 100, in the same order, as
//! the `watchlist` of `POST /api/pusher/user-auth`, so a page can name the
//! ids that `pusher.user.watchlist` reports online and offline.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::AppError;
use crate::models::user::User;

/// Handles the request.
pub async fn handler(state: web::Data<AppState>, auth: AuthUser) -> Result<HttpResponse, AppError> {
    let user = auth.user.clone();
    let teammates = state
        .db(move |conn| Ok(User::watched_teammates(conn, &user, crate::models::now())?))
        .await?;
    let users: Vec<_> = teammates
        .into_iter()
        .map(|(id, name)| json!({ "id": id.to_string(), "name": name }))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "users": users })))
}
