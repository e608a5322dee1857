//! The auth endpoints pusher-js calls, and a webhook receiver, in a plain
//! actix-web app. Configure with the `PUSHER_*` variables, then point
//! pusher-js at it:
//!
//!     new Pusher(key, { cluster, channelAuthorization: { endpoint: "/pusher/auth" },
//!                       userAuthentication: { endpoint: "/pusher/user-auth" } })
//!
//!     cargo run -p realtime-examples --example auth_endpoint   # listens on 127.0.0.1:8080

use actix_web::{http::StatusCode, post, web, App, HttpRequest, HttpResponse, HttpServer};
use realtime_core::{ChannelKind, Error, PresenceMember, Pusher, WebhookEvent};
use serde::Deserialize;

/// What pusher-js posts (form-encoded) to the channel authorization endpoint.
#[derive(Deserialize)]
struct AuthRequest {
    socket_id: String,
    channel_name: String,
}

/// What pusher-js posts to the user authentication endpoint.
#[derive(Deserialize)]
struct UserAuthRequest {
    socket_id: String,
}

/// The signed-in user. A real app reads it from its session; this example
/// takes it from a header so it stays self-contained.
fn current_user(req: &HttpRequest) -> Option<(String, String)> {
    let id = req.headers().get("x-user-id")?.to_str().ok()?.to_owned();
    Some((id.clone(), format!("User {id}")))
}

fn refuse(status: StatusCode, error: Error) -> HttpResponse {
    HttpResponse::build(status).json(serde_json::json!({ "error": error.to_string() }))
}

#[post("/pusher/auth")]
async fn authorize(
    req: HttpRequest,
    form: web::Form<AuthRequest>,
    pusher: web::Data<Pusher>,
) -> HttpResponse {
    let Some((user_id, name)) = current_user(&req) else {
        return HttpResponse::Unauthorized().finish();
    };
    // Decide here whether this user may join this channel.
    let answer = match ChannelKind::of(&form.channel_name) {
        ChannelKind::Presence => {
            let info = serde_json::json!({ "name": name });
            let member = PresenceMember {
                user_id: &user_id,
                user_info: Some(&info),
            };
            pusher.authorize_presence_channel(&form.socket_id, &form.channel_name, &member)
        }
        _ => pusher.authorize_channel(&form.socket_id, &form.channel_name),
    };
    match answer {
        Ok(answer) => HttpResponse::Ok().json(answer),
        Err(e) => refuse(StatusCode::FORBIDDEN, e),
    }
}

#[post("/pusher/user-auth")]
async fn authenticate(
    req: HttpRequest,
    form: web::Form<UserAuthRequest>,
    pusher: web::Data<Pusher>,
) -> HttpResponse {
    let Some((user_id, name)) = current_user(&req) else {
        return HttpResponse::Unauthorized().finish();
    };
    let user_data = serde_json::json!({ "id": user_id, "user_info": { "name": name } });
    match pusher.authenticate_user(&form.socket_id, &user_data) {
        Ok(answer) => HttpResponse::Ok().json(answer),
        Err(e) => refuse(StatusCode::BAD_REQUEST, e),
    }
}

#[post("/pusher/webhook")]
async fn webhook(req: HttpRequest, body: web::Bytes, pusher: web::Data<Pusher>) -> HttpResponse {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    match pusher.verify_webhook(header("x-pusher-key"), header("x-pusher-signature"), &body) {
        Ok(webhook) => {
            for event in webhook.events {
                if let WebhookEvent::MemberAdded { channel, user_id } = event {
                    println!("{user_id} is now viewing {channel}");
                }
            }
            HttpResponse::Ok().finish()
        }
        Err(e) => HttpResponse::Unauthorized().body(e.to_string()),
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let pusher = Pusher::from_env().map_err(std::io::Error::other)?;
    let pusher = web::Data::new(pusher);
    println!("listening on http://127.0.0.1:8080");
    HttpServer::new(move || {
        App::new()
            .app_data(pusher.clone())
            .service(authorize)
            .service(authenticate)
            .service(webhook)
    })
    .bind(("127.0.0.1", 8080))?
    .run()
    .await
}
