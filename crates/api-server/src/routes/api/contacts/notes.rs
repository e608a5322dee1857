//! `POST /api/contacts/{id}/notes`: `{body}` → 201 `{note}`, then
//! `note:created` on the contact's channel.

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::db::write_transaction;
use crate::error::AppError;
use crate::models::contact::Contact;
use crate::models::note::{NewNote, Note, NoteView};
use crate::realtime::{notify_contact, ContactEvent};
use crate::routes::api::{path_id, socket_id};

/// The new note.
#[derive(Deserialize)]
pub struct CreateNote {
    body: String,
}

/// Handles the request.
pub async fn handler(
    req: HttpRequest,
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<String>,
    body: web::Json<CreateNote>,
) -> Result<HttpResponse, AppError> {
    let id = path_id(&id, "contact")?;
    let text = body.into_inner().body;
    if text.trim().is_empty() || text.chars().count() > 5000 {
        return Err(AppError::bad_request(
            "invalid_body",
            "a note has 1 to 5000 characters",
        ));
    }
    let (team_id, author) = (auth.team_id(), auth.user.id);
    let socket = socket_id(&req);
    let note = state
        .write(move |conn| {
            write_transaction(conn, |conn| {
                let contact = Contact::find_in_team(conn, team_id, id)?
                    .ok_or(AppError::NotFound("contact"))?;
                let note = Note::create(
                    conn,
                    &NewNote {
                        team_id,
                        contact_id: contact.id,
                        author_id: Some(author),
                        body: &text,
                        created_at: crate::models::now(),
                    },
                )?;
                notify_contact(
                    conn,
                    &contact,
                    ContactEvent::NoteCreated(&note),
                    socket.as_deref(),
                )?;
                Ok(note)
            })
        })
        .await?;
    state.dispatcher.wake();
    Ok(HttpResponse::Created().json(json!({ "note": NoteView::from(&note) })))
}
