//! `GET /api/contacts` → `{contacts:[{id,name,phone,unreadCount,lastMessage}]}`.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::AppError;
use crate::models::contact::Contact;

/// Handles the request.
pub async fn handler(state: web::Data<AppState>, auth: AuthUser) -> Result<HttpResponse, AppError> {
    let team_id = auth.team_id();
    let contacts = state
        .db(move |conn| Ok(Contact::views_of_team(conn, team_id)?))
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "contacts": contacts })))
}
