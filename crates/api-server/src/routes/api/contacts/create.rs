//! `POST /api/contacts`: `{name,phone}` → 201 `{contact}`, the phone in E.164.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::AppError;
use crate::models::contact::{Contact, NewContact};
use crate::phone::PhoneNumber;

/// The new contact.
#[derive(Deserialize)]
pub struct CreateContact {
    name: String,
    phone: String,
}

/// Handles the request.
pub async fn handler(
    state: web::Data<AppState>,
    auth: AuthUser,
    body: web::Json<CreateContact>,
) -> Result<HttpResponse, AppError> {
    let name = body.name.trim().to_owned();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(AppError::bad_request(
            "invalid_name",
            "name must be 1 to 200 characters",
        ));
    }
    let phone = PhoneNumber::parse(&body.phone).ok_or_else(|| {
        AppError::bad_request(
            "invalid_phone",
            format!("{:?} is not a valid phone number", body.phone),
        )
    })?;
    let team_id = auth.team_id();
    let contact = state
        .write(move |conn| {
            let now = crate::models::now();
            let created = Contact::create(
                conn,
                &NewContact {
                    team_id,
                    name: &name,
                    phone: phone.as_str(),
                    created_at: now,
                    updated_at: now,
                },
            );
            match created {
                Ok(contact) => Ok(contact.view(conn)?),
                Err(diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::UniqueViolation,
                    _,
                )) => Err(AppError::Conflict {
                    code: "contact_exists",
                    message: format!("a contact with phone {phone} already exists"),
                }),
                Err(e) => Err(e.into()),
            }
        })
        .await?;
    Ok(HttpResponse::Created().json(json!({ "contact": contact })))
}
