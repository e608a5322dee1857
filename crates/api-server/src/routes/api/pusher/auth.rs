//! `POST /api/pusher/auth`: pusher-js's channel authorization. Team
//! members may join `private-contact-{id}` and `presence-contact-{id}` of
//! their team's contacts; a user joins only their own `private-user-{id}`.
//! → `{auth}` / `{auth,channel_data}`; 401 without a session, 403 otherwise.

use actix_web::{web, HttpRequest, HttpResponse};
use realtime_core::PresenceMember;
use serde_json::json;

use crate::app::AppState;
use crate::auth::AuthUser;
use crate::error::AppError;
use crate::models::contact::Contact;
use crate::realtime::channels::InboxChannel;
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
    let channel = required(&fields, "channel_name")?.to_owned();
    let refused = || AppError::Forbidden(format!("you may not join {channel}"));
    let team_id = auth.team_id();
    let allowed = match InboxChannel::parse(&channel) {
        Some(InboxChannel::User(id)) => id == auth.user.id,
        Some(
            InboxChannel::ContactEvents(id)
            | InboxChannel::ContactViewers(id)
            | InboxChannel::EncryptedContactEvents(id),
        ) => {
            state
                .db(move |conn| Ok(Contact::find_in_team(conn, team_id, id)?.is_some()))
                .await?
        }
        None => false,
    };
    if !allowed {
        return Err(refused());
    }
    let credentials = &state.realtime.credentials;
    if matches!(
        InboxChannel::parse(&channel),
        Some(InboxChannel::EncryptedContactEvents(_))
    ) && credentials.encryption_master_key().is_none()
    {
        return Err(AppError::Forbidden(
            "encrypted channels need PUSHER_ENCRYPTION_MASTER_KEY_BASE64".into(),
        ));
    }
    let answer = match InboxChannel::parse(&channel) {
        Some(InboxChannel::ContactViewers(_)) => {
            let info = json!({ "name": auth.user.name });
            let user_id = auth.user.id.to_string();
            credentials.authorize_presence_channel(
                &socket_id,
                &channel,
                &PresenceMember {
                    user_id: &user_id,
                    user_info: Some(&info),
                },
            )
        }
        _ => credentials.authorize_channel(&socket_id, &channel),
    }
    .map_err(|e| AppError::bad_request("invalid_auth_request", e.to_string()))?;
    Ok(HttpResponse::Ok().json(answer))
}
