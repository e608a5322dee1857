//! `POST /api/messages/{id}/read` → 200 `{message}`: sets `readAt` and
//! `readBy` once; a second call changes nothing and publishes nothing.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::db::write_transaction;
use crate::error::AppError;
use crate::models::contact::Contact;
use crate::models::message::{Message, MessageView};
use crate::realtime::{notify_contact, ContactEvent};
use crate::routes::api::{path_id, socket_id};

/// Handles the request.
pub async fn handler(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = path_id(&id, "message")?;
    let (team_id, user_id) = (auth.team_id(), auth.user.id);
    let socket = socket_id(&req);
    let (message, changed) = state
        .write(move |conn| {
            write_transaction(conn, |conn| {
                let message = Message::find_in_team(conn, team_id, id)?
                    .ok_or(AppError::NotFound("message"))?;
                let changed = Message::mark_read(conn, message.id, user_id, crate::models::now())?;
                let message = Message::reload(conn, message.id)?;
                if changed {
                    let contact = Contact::find_in_team(conn, team_id, message.contact_id)?
                        .ok_or(AppError::NotFound("contact"))?;
                    notify_contact(
                        conn,
                        &contact,
                        ContactEvent::MessageRead(&message),
                        socket.as_deref(),
                    )?;
                }
                Ok::<_, AppError>((message, changed))
            })
        })
        .await?;
    if changed {
        state.dispatcher.wake();
    }
    Ok(HttpResponse::Ok().json(json!({ "message": MessageView::from(&message) })))
}
