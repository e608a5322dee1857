//! The Pusher HTTP API at `/apps/{id}/…`: every request's signature is
//! checked with realtime-core's signing, and answers (and error texts) are
//! Pusher's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use actix_web::{http::StatusCode, web, HttpRequest, HttpResponse};
use realtime_core::channel::{MAX_BATCH_EVENTS, MAX_TRIGGER_CHANNELS};
use realtime_core::signing::{verify_request, DEFAULT_TIMESTAMP_TOLERANCE_SECS};
use realtime_core::{ChannelInfo, ChannelKind, ChannelName, EventName, SocketId, UserId};
use serde::Deserialize;
use serde_json::Value;

use crate::protocol;
use crate::registry::App;
use crate::Server;

/// An HTTP API error: a status and Pusher's plain-text explanation.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        ApiError(StatusCode::BAD_REQUEST, message.into())
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}

impl actix_web::ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.0
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.0)
            .content_type("text/plain; charset=utf-8")
            .body(format!("{}\n", self.1))
    }
}

type ApiResult = Result<HttpResponse, ApiError>;

/// Finds the app and checks the request's signature.
fn authenticate(
    server: &Server,
    req: &HttpRequest,
    app_id: &str,
    body: &[u8],
) -> Result<Arc<App>, ApiError> {
    let app = server
        .app_by_id(app_id)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("Unknown app {app_id}")))?;
    let query: Vec<(String, String)> = url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect();
    let credentials = &app.config().credentials;
    let key = query
        .iter()
        .find(|(k, _)| k == "auth_key")
        .map(|(_, v)| v.as_str());
    if key != Some(credentials.key()) {
        return Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "Unknown auth_key".into(),
        ));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    verify_request(
        credentials.signer(),
        req.method().as_str(),
        req.uri().path(),
        &query,
        body,
        now,
        DEFAULT_TIMESTAMP_TOLERANCE_SECS,
    )
    .map_err(|e| ApiError(StatusCode::UNAUTHORIZED, e.to_string()))?;
    Ok(app)
}

/// An event as the API receives it; `data` may be a string or, as some
/// clients send it, any JSON.
#[derive(Deserialize)]
struct EventBody {
    name: String,
    data: Value,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    socket_id: Option<String>,
    #[serde(default)]
    info: Option<String>,
}

#[derive(Deserialize)]
struct BatchBody {
    batch: Vec<EventBody>,
}

/// An event that passed the API's checks.
struct CheckedEvent {
    name: EventName,
    channels: Vec<ChannelName>,
    data: String,
    socket_id: Option<SocketId>,
    info: Vec<String>,
}

fn check_event(app: &App, event: EventBody, batch: bool) -> Result<CheckedEvent, ApiError> {
    let name = EventName::parse(event.name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let channels = match (event.channels, event.channel) {
        (Some(channels), None) if !batch => channels,
        (None, Some(channel)) => vec![channel],
        _ if batch => return Err(ApiError::bad_request("Missing required parameter: channel")),
        _ => {
            return Err(ApiError::bad_request(
                "Missing required parameter: channels",
            ))
        }
    };
    if channels.is_empty() {
        return Err(ApiError::bad_request(
            "Missing required parameter: channels",
        ));
    }
    if channels.len() > MAX_TRIGGER_CHANNELS {
        return Err(ApiError::bad_request(format!(
            "Too many channels ({} > {MAX_TRIGGER_CHANNELS})",
            channels.len()
        )));
    }
    let channels = channels
        .into_iter()
        .map(ChannelName::parse)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if channels.len() > 1 && channels.iter().any(ChannelName::is_encrypted) {
        return Err(ApiError::bad_request(
            "Encrypted channels cannot be triggered together with other channels",
        ));
    }
    let data = match event.data {
        Value::String(s) => s,
        other => other.to_string(),
    };
    let limit = app.config().max_data_bytes;
    if data.len() > limit {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Payload too large: data is {} bytes, the limit is {limit}",
                data.len()
            ),
        ));
    }
    let socket_id = event
        .socket_id
        .map(SocketId::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let info = parse_info(event.info.as_deref())?;
    Ok(CheckedEvent {
        name,
        channels,
        data,
        socket_id,
        info,
    })
}

fn parse_info(info: Option<&str>) -> Result<Vec<String>, ApiError> {
    let attributes: Vec<String> = info
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_owned)
        .collect();
    for attribute in &attributes {
        if !realtime_core::event::INFO_ATTRIBUTES.contains(&attribute.as_str()) {
            return Err(ApiError::bad_request(format!(
                "Unknown info attribute {attribute}"
            )));
        }
    }
    Ok(attributes)
}

/// Delivers a checked event; answers the `info` asked for, by channel.
fn publish(app: &App, event: &CheckedEvent) -> serde_json::Map<String, Value> {
    app.metrics().http_events.inc();
    let except = event.socket_id.as_ref().map(SocketId::as_str);
    let mut answer = serde_json::Map::new();
    for channel in &event.channels {
        let frame = protocol::frame(
            event.name.as_str(),
            Some(channel.as_str()),
            event.data.as_str(),
        );
        app.publish(channel.as_str(), &frame, except);
        if !event.info.is_empty() {
            let info = filter_info(app.channel_info(channel.as_str()), &event.info);
            answer.insert(
                channel.to_string(),
                serde_json::to_value(info).unwrap_or_default(),
            );
        }
    }
    answer
}

fn filter_info(info: ChannelInfo, wanted: &[String]) -> ChannelInfo {
    let has = |name: &str| wanted.iter().any(|w| w == name);
    ChannelInfo {
        occupied: None,
        user_count: info.user_count.filter(|_| has("user_count")),
        subscription_count: info
            .subscription_count
            .filter(|_| has("subscription_count")),
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}")))
}

/// The query string's parameters (the last of a repeated one wins).
fn query_map(req: &HttpRequest) -> HashMap<String, String> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .collect()
}

/// A signed request about one channel: its app and the channel's name.
fn channel_request(
    server: &Server,
    req: &HttpRequest,
    (app_id, name): (String, String),
) -> Result<(Arc<App>, ChannelName), ApiError> {
    let app = authenticate(server, req, &app_id, b"")?;
    let channel = ChannelName::parse(name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((app, channel))
}

/// `POST /apps/{id}/events`
pub async fn events(
    req: HttpRequest,
    app_id: web::Path<String>,
    body: web::Bytes,
    server: web::Data<Server>,
) -> ApiResult {
    let app = authenticate(&server, &req, &app_id, &body)?;
    let event = check_event(&app, parse_json(&body)?, false)?;
    let info = publish(&app, &event);
    Ok(HttpResponse::Ok().json(if event.info.is_empty() {
        serde_json::json!({})
    } else {
        serde_json::json!({ "channels": info })
    }))
}

/// `POST /apps/{id}/batch_events`
pub async fn batch_events(
    req: HttpRequest,
    app_id: web::Path<String>,
    body: web::Bytes,
    server: web::Data<Server>,
) -> ApiResult {
    let app = authenticate(&server, &req, &app_id, &body)?;
    let batch: BatchBody = parse_json(&body)?;
    if batch.batch.len() > MAX_BATCH_EVENTS {
        return Err(ApiError::bad_request(format!(
            "Batch too large ({} > {MAX_BATCH_EVENTS})",
            batch.batch.len()
        )));
    }
    // Every event is checked before any is delivered: a batch is all or nothing.
    let events = batch
        .batch
        .into_iter()
        .map(|e| check_event(&app, e, true))
        .collect::<Result<Vec<_>, _>>()?;
    let wants_info = events.iter().any(|e| !e.info.is_empty());
    let answers: Vec<Value> = events
        .iter()
        .map(|event| {
            let mut info = publish(&app, event);
            let channel = event
                .channels
                .first()
                .map(ToString::to_string)
                .unwrap_or_default();
            info.remove(&channel)
                .unwrap_or_else(|| serde_json::json!({}))
        })
        .collect();
    Ok(HttpResponse::Ok().json(if wants_info {
        serde_json::json!({ "batch": answers })
    } else {
        serde_json::json!({})
    }))
}

/// `GET /apps/{id}/channels`
pub async fn channels(
    req: HttpRequest,
    app_id: web::Path<String>,
    server: web::Data<Server>,
) -> ApiResult {
    let app = authenticate(&server, &req, &app_id, b"")?;
    let query = query_map(&req);
    let prefix = query
        .get("filter_by_prefix")
        .map(String::as_str)
        .unwrap_or_default();
    let info = parse_info(query.get("info").map(String::as_str))?;
    if info.iter().any(|i| i == "user_count") && !prefix.starts_with("presence-") {
        return Err(ApiError::bad_request(
            "user_count may only be requested for presence channels - please supply filter_by_prefix begining with presence-",
        ));
    }
    let list: serde_json::Map<String, Value> = app
        .channels(prefix)
        .into_iter()
        .map(|(name, attributes)| {
            let attributes = filter_info(attributes, &info);
            (name, serde_json::to_value(attributes).unwrap_or_default())
        })
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "channels": list })))
}

/// `GET /apps/{id}/channels/{name}`
pub async fn channel(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    server: web::Data<Server>,
) -> ApiResult {
    let (app, channel) = channel_request(&server, &req, path.into_inner())?;
    let query = query_map(&req);
    // `cache` is asked of one channel only, not of a trigger's channels:
    // it is taken out before the attributes both share are checked.
    let raw = query.get("info").map(String::as_str).unwrap_or_default();
    let wants_cache = raw.split(',').any(|a| a.trim() == "cache");
    let shared: Vec<&str> = raw.split(',').filter(|a| a.trim() != "cache").collect();
    let info = parse_info(Some(&shared.join(",")))?;
    let presence = channel.kind() == ChannelKind::Presence;
    if info.iter().any(|i| i == "user_count") && !presence {
        return Err(ApiError::bad_request(
            "Cannot retrieve the user count unless the channel is a presence channel",
        ));
    }
    if wants_cache && !realtime_core::channel::is_cache(channel.as_str()) {
        return Err(ApiError::bad_request(
            "Cannot retrieve the cache unless the channel is a cache channel",
        ));
    }
    let all = app.channel_info(channel.as_str());
    let answer = ChannelInfo {
        occupied: all.occupied,
        ..filter_info(all, &info)
    };
    let mut answer = match serde_json::to_value(answer) {
        Ok(Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    if wants_cache {
        // The channel's cached event, if any: its name, its data as
        // published, and the seconds it has left.
        if let Some((event, data, ttl)) = app.cached_event(channel.as_str()) {
            answer.insert(
                "cache".to_owned(),
                serde_json::json!({ "event": event, "data": data, "ttl": ttl.as_secs() }),
            );
        }
    }
    Ok(HttpResponse::Ok().json(answer))
}

/// `GET /apps/{id}/channels/{name}/users`
pub async fn channel_users(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    server: web::Data<Server>,
) -> ApiResult {
    let (app, channel) = channel_request(&server, &req, path.into_inner())?;
    if channel.kind() != ChannelKind::Presence {
        return Err(ApiError::bad_request(
            "Users can only be retrieved for presence channels",
        ));
    }
    let users: Vec<Value> = app
        .presence_users(channel.as_str())
        .into_iter()
        .map(|id| serde_json::json!({ "id": id }))
        .collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "users": users })))
}

/// `POST /apps/{id}/users/{user_id}/terminate_connections`
pub async fn terminate_user_connections(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    server: web::Data<Server>,
) -> ApiResult {
    let (app_id, user_id) = path.into_inner();
    let app = authenticate(&server, &req, &app_id, &body)?;
    let user_id = UserId::parse(user_id).map_err(|e| ApiError::bad_request(e.to_string()))?;
    app.terminate_user(user_id.as_str());
    Ok(HttpResponse::Ok().json(serde_json::json!({})))
}
