//! `GET /api/contacts/{id}/messages?limit=&before=` → `{messages:[…]}`: the
//! newest `limit` (default 50, at most 100) messages older than message
//! `before` (or the newest of all), oldest first.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::AppError;
use crate::models::contact::Contact;
use crate::models::message::{Message, MessageView};
use crate::models::parse_id;
use crate::routes::api::{path_id, Page};

/// Handles the request.
pub async fn handler(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<String>,
    page: web::Query<Page>,
) -> Result<HttpResponse, AppError> {
    let id = path_id(&id, "contact")?;
    let limit = page.limit(50, 100)?;
    let before = page.before(parse_id, "a message id")?;
    let team_id = auth.team_id();
    let messages = state
        .db(move |conn| {
            Contact::find_in_team(conn, team_id, id)?.ok_or(AppError::NotFound("contact"))?;
            Ok(Message::page(conn, id, before, limit)?)
        })
        .await?;
    let messages: Vec<MessageView> = messages.iter().map(MessageView::from).collect();
    Ok(HttpResponse::Ok().json(json!({ "messages": messages })))
}
