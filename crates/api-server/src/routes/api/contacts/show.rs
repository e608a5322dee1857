//! `GET /api/contacts/{id}` → `{contact}`; another team's is 404.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::AppError;
use crate::models::contact::Contact;
use crate::routes::api::path_id;

/// Handles the request.
pub async fn handler(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = path_id(&id, "contact")?;
    let team_id = auth.team_id();
    let contact = state
        .db(move |conn| {
            let contact =
                Contact::find_in_team(conn, team_id, id)?.ok_or(AppError::NotFound("contact"))?;
            Ok(contact.view(conn)?)
        })
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "contact": contact })))
}
