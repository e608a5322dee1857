//! `GET /api/contacts/{id}/viewers` → `{users:[{id,name}]}` on
//! `presence-contact-{id}`, from the realtime service's presence state: the
//! embedded server's members, or hosted (or self-hosted) Pusher's answer to
//! its presence users query, which is the authority there. Either way every
//! api-server instance answers the same.

use std::collections::BTreeSet;

use actix_web::{web, HttpResponse};
use diesel::prelude::*;
use serde_json::json;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::db::schema::users;
use crate::error::AppError;
use crate::models::contact::Contact;
use crate::models::parse_id;
use crate::realtime::channels::viewers_channel;
use crate::realtime::Backend;
use crate::routes::api::path_id;

/// User ids looked up per statement: well under SQLite's limit of 32,766
/// bound parameters (PostgreSQL binds the list as one array).
const MAX_IDS_PER_QUERY: usize = 1000;

/// Handles the request.
pub async fn handler(
    state: web::Data<AppState>,
    auth: AuthUser,
    id: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let id = path_id(&id, "contact")?;
    let team_id = auth.team_id();
    state
        .db(move |conn| {
            Contact::find_in_team(conn, team_id, id)?.ok_or(AppError::NotFound("contact"))
        })
        .await?;
    let channel = viewers_channel(id);
    let ids: Vec<String> = match &state.realtime.backend {
        Backend::Embedded { app, .. } => app.presence_users(&channel),
        Backend::Pusher(pusher) => match pusher.presence_users(&channel).await {
            Ok(users) => users.into_iter().map(|u| u.id).collect(),
            // No list is better than a made-up one: the page shows viewers
            // again at its next look.
            Err(e) => return Err(AppError::RealtimeUnavailable(e.to_string())),
        },
    };
    // Each id once, whatever the source repeated.
    let numeric: Vec<i64> = ids
        .iter()
        .filter_map(|i| parse_id(i))
        .collect::<BTreeSet<i64>>()
        .into_iter()
        .collect();
    // Names come from our own users table, and only for this team: a forged
    // presence member cannot show up as someone else.
    let mut viewers: Vec<(i64, String)> = state
        .db(move |conn| {
            // Both the embedded server and hosted Pusher cap a presence
            // channel at 100 members, but a self-hosted server's answer may
            // hold any number: the ids go in slices, each far below
            // SQLite's 32,766 parameters.
            let mut found = Vec::new();
            for slice in numeric.chunks(MAX_IDS_PER_QUERY) {
                found.extend(
                    users::table
                        .filter(users::team_id.eq(team_id))
                        .filter(users::id.eq_any(slice))
                        .select((users::id, users::name))
                        .load::<(i64, String)>(conn)?,
                );
            }
            Ok(found)
        })
        .await?;
    viewers.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    let users: Vec<_> = viewers
        .into_iter()
        .map(|(id, name)| json!({ "id": id.to_string(), "name": name }))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "users": users })))
}
