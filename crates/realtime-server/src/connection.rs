//! One WebSocket connection: the protocol state machine ([`Connection`],
//! testable without a socket) and the task that drives it over actix-ws.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, ProtocolError, Session};
use realtime_core::{ChannelKind, ChannelName};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::protocol::{
    self, code, ClientFrame, PresenceData, SigninData, SubscribeData, UnsubscribeData, UserData,
};
use crate::registry::{App, Outbound, OutboxReceiver, SubscribeError};
use crate::Server;

/// What the driver should do after a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Keep reading.
    Continue,
    /// Close the connection with this code and reason.
    Close(u16, String),
}

/// The protocol state of one connection. Answers go to the connection's
/// outbox through the [`App`], in order with the events it receives.
pub struct Connection {
    app: Arc<App>,
    socket_id: Arc<str>,
    user_id: Option<String>,
    rate_window: Instant,
    events_in_window: u32,
}

impl Connection {
    /// The state of a connection the app registered as `socket_id`.
    pub fn new(app: Arc<App>, socket_id: Arc<str>) -> Self {
        Connection {
            app,
            socket_id,
            user_id: None,
            rate_window: Instant::now(),
            events_in_window: 0,
        }
    }

    /// The connection's socket id.
    pub fn socket_id(&self) -> &str {
        &self.socket_id
    }

    fn reply(&self, frame: bytestring::ByteString) {
        self.app.send_to(&self.socket_id, Outbound::Frame(frame));
    }

    fn error(&self, code: Option<u16>, message: &str) {
        self.reply(protocol::error(code, message));
    }

    /// Handles one text frame from the client.
    pub fn handle_text(&mut self, text: &str) -> Control {
        self.app.metrics().messages_in.inc();
        let frame: ClientFrame = match serde_json::from_str(text) {
            Ok(frame) => frame,
            Err(_) => {
                self.error(
                    None,
                    "Invalid message: expected a JSON object with an \"event\"",
                );
                return Control::Continue;
            }
        };
        match frame.event.as_str() {
            "pusher:ping" => self.reply(protocol::pong()),
            "pusher:pong" => {}
            "pusher:subscribe" => match data_of::<SubscribeData>(&frame.data) {
                Some(data) => self.subscribe(data),
                None => self.error(None, "Invalid pusher:subscribe data"),
            },
            "pusher:unsubscribe" => match data_of::<UnsubscribeData>(&frame.data) {
                Some(data) => self.app.unsubscribe(&self.socket_id, &data.channel),
                None => self.error(None, "Invalid pusher:unsubscribe data"),
            },
            "pusher:signin" => return self.sign_in(data_of::<SigninData>(&frame.data)),
            event if event.starts_with("client-") => self.client_event(&frame),
            // Unknown pusher:* events are ignored, as Pusher does, so newer
            // clients keep working.
            _ => {}
        }
        Control::Continue
    }

    fn subscribe(&mut self, data: SubscribeData) {
        let channel = match ChannelName::parse(data.channel.as_str()) {
            Ok(channel) => channel,
            Err(e) => {
                let message = format!("Invalid channel name: {e}");
                self.reply(protocol::subscription_error(
                    &data.channel,
                    "InvalidChannel",
                    &message,
                    400,
                ));
                return;
            }
        };
        let name = channel.as_str();
        let credentials = &self.app.config().credentials;
        let refuse = |kind: &str, message: &str, status: u16| {
            self.reply(protocol::subscription_error(name, kind, message, status));
        };
        let member = match channel.kind() {
            ChannelKind::Public => None,
            ChannelKind::ServerToUser => {
                // pusher-js subscribes to its own user channel after signin;
                // sign_in already did, so only the answer is missing.
                let own = self.user_id.as_deref().is_some_and(|user| {
                    name.strip_prefix(realtime_core::channel::SERVER_TO_USER_PREFIX) == Some(user)
                });
                if own {
                    return self.reply(protocol::frame(
                        "pusher_internal:subscription_succeeded",
                        Some(name),
                        "{}",
                    ));
                }
                return refuse(
                    "AuthError",
                    "User channels are joined by pusher:signin",
                    403,
                );
            }
            ChannelKind::Private | ChannelKind::PrivateEncrypted => {
                let auth = data.auth.as_deref().unwrap_or_default();
                if !credentials.verify_channel_auth(&self.socket_id, name, None, auth) {
                    return refuse("AuthError", &format!("Invalid signature for {name}"), 401);
                }
                None
            }
            ChannelKind::Presence => {
                let auth = data.auth.as_deref().unwrap_or_default();
                let Some(channel_data) = data.channel_data.as_deref() else {
                    return refuse("AuthError", "Presence channels need channel_data", 401);
                };
                if !credentials.verify_channel_auth(&self.socket_id, name, Some(channel_data), auth)
                {
                    return refuse("AuthError", &format!("Invalid signature for {name}"), 401);
                }
                match self.presence_member(channel_data) {
                    Ok(member) => Some(member),
                    Err(message) => return refuse("LimitReached", &message, 400),
                }
            }
        };
        match self.app.subscribe(&self.socket_id, name, member) {
            Ok(()) => {}
            Err(SubscribeError::PresenceFull(max)) => refuse(
                "LimitReached",
                &format!("Presence channel {name} has its maximum of {max} members"),
                400,
            ),
            Err(SubscribeError::UnknownConnection) => {}
        }
    }

    fn presence_member(&self, channel_data: &str) -> Result<(String, Option<Value>), String> {
        let config = self.app.config();
        let data: PresenceData = serde_json::from_str(channel_data)
            .map_err(|_| "channel_data must be a JSON object with a user_id".to_owned())?;
        let user_id = protocol::id_text(&data.user_id)
            .ok_or_else(|| "user_id must be a non-empty string or a number".to_owned())?;
        if user_id.chars().count() > config.max_presence_user_id_len {
            return Err(format!(
                "user_id is longer than {} characters",
                config.max_presence_user_id_len
            ));
        }
        if let Some(info) = &data.user_info {
            if info.to_string().len() > config.max_presence_user_info_bytes {
                return Err(format!(
                    "user_info is larger than {} bytes",
                    config.max_presence_user_info_bytes
                ));
            }
        }
        Ok((user_id, data.user_info))
    }

    fn sign_in(&mut self, data: Option<SigninData>) -> Control {
        let refused = || Control::Close(code::UNAUTHORIZED, "Invalid signin".into());
        let Some(data) = data else {
            self.error(Some(code::UNAUTHORIZED), "Invalid pusher:signin data");
            return refused();
        };
        let credentials = &self.app.config().credentials;
        if !credentials.verify_user_auth(&self.socket_id, &data.user_data, &data.auth) {
            self.error(
                Some(code::UNAUTHORIZED),
                "Invalid signature for pusher:signin",
            );
            return refused();
        }
        let user_id = serde_json::from_str::<UserData>(&data.user_data)
            .ok()
            .and_then(|u| protocol::id_text(&u.id));
        let Some(user_id) = user_id else {
            self.error(Some(code::UNAUTHORIZED), "user_data must carry an id");
            return refused();
        };
        self.app.sign_in(&self.socket_id, &user_id);
        self.user_id = Some(user_id);
        self.reply(protocol::frame(
            "pusher:signin_success",
            None,
            serde_json::json!({ "user_data": data.user_data }),
        ));
        Control::Continue
    }

    fn client_event(&mut self, frame: &ClientFrame) {
        let config = self.app.config();
        if !config.client_events {
            return self.error(
                None,
                "To send client events, you must enable this feature in the app's settings",
            );
        }
        let Some(channel) = frame.channel.as_deref() else {
            return self.error(None, "Client event rejected - no channel given");
        };
        let kind = ChannelKind::of(channel);
        if !matches!(
            kind,
            ChannelKind::Private | ChannelKind::PrivateEncrypted | ChannelKind::Presence
        ) {
            return self.error(
                None,
                "Client event rejected - only supported on private and presence channels",
            );
        }
        if frame.event.len() > realtime_core::channel::MAX_EVENT_NAME_LEN {
            return self.error(None, "Client event rejected - event name too long");
        }
        let size = match &frame.data {
            Value::String(s) => s.len(),
            other => other.to_string().len(),
        };
        if size > config.max_data_bytes {
            return self.error(
                None,
                &format!(
                    "Client event rejected - data is larger than {} bytes",
                    config.max_data_bytes
                ),
            );
        }
        let now = Instant::now();
        if now.duration_since(self.rate_window) >= Duration::from_secs(1) {
            self.rate_window = now;
            self.events_in_window = 0;
        }
        self.events_in_window += 1;
        if self.events_in_window > config.client_events_per_second {
            return self.error(
                Some(code::CLIENT_EVENT_RATE_LIMIT),
                "Client event rejected due to rate limit",
            );
        }
        if !self
            .app
            .relay_client_event(&self.socket_id, channel, &frame.event, &frame.data)
        {
            self.error(
                None,
                "Client event rejected - not subscribed to the channel",
            );
        }
    }
}

/// `data` as an object, or as a string holding one (older clients send that).
fn data_of<T: DeserializeOwned>(data: &Value) -> Option<T> {
    match data {
        Value::String(text) => serde_json::from_str(text).ok(),
        other => T::deserialize(other).ok(),
    }
}

fn close_reason(code: u16, reason: &str) -> Option<CloseReason> {
    Some(CloseReason {
        code: CloseCode::Other(code),
        description: Some(reason.to_owned()),
    })
}

/// Accepts the upgrade, then refuses with a protocol error and close code.
fn refuse_upgrade(
    req: &HttpRequest,
    body: web::Payload,
    code: u16,
    message: &str,
) -> actix_web::Result<HttpResponse> {
    let (response, mut session, _stream) = actix_ws::handle(req, body)?;
    let message = message.to_owned();
    actix_web::rt::spawn(async move {
        let _ = session.text(protocol::error(Some(code), &message)).await;
        let _ = session.close(close_reason(code, &message)).await;
    });
    Ok(response)
}

/// `GET /app/{key}`: the WebSocket endpoint.
pub async fn websocket(
    req: HttpRequest,
    body: web::Payload,
    key: web::Path<String>,
    server: web::Data<Server>,
) -> actix_web::Result<HttpResponse> {
    if server.is_shutting_down() {
        return refuse_upgrade(&req, body, code::RECONNECT_NOW, "Server shutting down");
    }
    let Some(app) = server.app_by_key(&key) else {
        return refuse_upgrade(
            &req,
            body,
            code::APP_NOT_FOUND,
            &format!("App key {key} not in this cluster"),
        );
    };
    let query =
        web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
            .map(|q| q.into_inner())
            .unwrap_or_default();
    match query.get("protocol").map(|p| p.parse::<u32>()) {
        None | Some(Err(_)) => {
            return refuse_upgrade(
                &req,
                body,
                code::INVALID_VERSION_FORMAT,
                "Invalid version string format",
            );
        }
        Some(Ok(version)) if !protocol::SUPPORTED_PROTOCOLS.contains(&version) => {
            return refuse_upgrade(
                &req,
                body,
                code::UNSUPPORTED_PROTOCOL,
                &format!("Unsupported protocol version {version}"),
            );
        }
        Some(Ok(_)) => {}
    }
    let Some((socket_id, outbox)) = app.connect() else {
        return refuse_upgrade(&req, body, code::OVER_CAPACITY, "Over capacity");
    };
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    let max = app.config().max_frame_bytes;
    // Fragmented messages are joined, as RFC 6455 requires, up to the same limit.
    let stream = stream
        .max_frame_size(max)
        .aggregate_continuations()
        .max_continuation_size(max);
    let connection = Connection::new(app.clone(), socket_id);
    actix_web::rt::spawn(drive(connection, session, stream, outbox));
    Ok(response)
}

/// Any other path under `/app`: Pusher answers 4005.
pub async fn wrong_path(req: HttpRequest, body: web::Payload) -> actix_web::Result<HttpResponse> {
    refuse_upgrade(&req, body, code::PATH_NOT_FOUND, "Path not found")
}

/// Whether the app dropped its side of the outbox and nothing is left in it.
fn outbound_closed(outbox: &OutboxReceiver) -> bool {
    outbox.is_closed() && outbox.is_empty()
}

/// Runs one connection until either side closes it.
async fn drive(
    mut connection: Connection,
    mut session: Session,
    mut stream: actix_ws::AggregatedMessageStream,
    mut outbox: OutboxReceiver,
) {
    let app = connection.app.clone();
    let activity_timeout = app.config().activity_timeout;
    let pong_timeout = app.config().pong_timeout();
    let established =
        protocol::connection_established(connection.socket_id(), activity_timeout.as_secs());
    let mut close = if session.text(established).await.is_err() {
        None
    } else {
        // One timer for the connection's life, moved rather than rebuilt:
        // registering a timer per frame would cost more than the frame.
        let idle = tokio::time::sleep(activity_timeout);
        tokio::pin!(idle);
        let mut pinged = false;
        loop {
            tokio::select! {
                message = stream.recv() => {
                    idle.as_mut().reset(tokio::time::Instant::now() + activity_timeout);
                    pinged = false;
                    let control = match message {
                        Some(Ok(AggregatedMessage::Text(text))) => connection.handle_text(&text),
                        Some(Ok(AggregatedMessage::Ping(bytes))) => {
                            if session.pong(&bytes).await.is_err() { break None; }
                            Control::Continue
                        }
                        Some(Ok(AggregatedMessage::Pong(_))) => Control::Continue,
                        Some(Ok(AggregatedMessage::Binary(_))) => {
                            connection.error(None, "Binary frames are not supported; send JSON text");
                            Control::Continue
                        }
                        Some(Ok(AggregatedMessage::Close(_))) | None => break None,
                        Some(Err(ProtocolError::Overflow)) => {
                            connection.error(None, "Frame too large");
                            Control::Close(1009, "Frame too large".into())
                        }
                        Some(Err(_)) => Control::Close(1002, "Protocol error".into()),
                    };
                    if let Control::Close(code, reason) = control {
                        break Some((code, reason));
                    }
                }
                outbound = outbox.recv() => {
                    let mut next = outbound;
                    // Send everything already queued before going back to select!.
                    let mut stop = None;
                    while let Some(item) = next.take() {
                        match item {
                            Outbound::Frame(frame) => {
                                if session.text(frame).await.is_err() {
                                    stop = Some(None);
                                    break;
                                }
                            }
                            Outbound::Close(code, reason) => {
                                let _ = session.text(protocol::error(Some(code), &reason)).await;
                                stop = Some(Some((code, reason)));
                                break;
                            }
                        }
                        next = outbox.try_recv().ok();
                    }
                    if outbound_closed(&outbox) && stop.is_none() {
                        // The app dropped this connection: it fell too far behind.
                        stop = Some(Some((code::OVER_CAPACITY, "Too slow to read its messages".into())));
                    }
                    if let Some(close) = stop {
                        break close;
                    }
                },
                _ = &mut idle => {
                    if pinged {
                        break Some((code::PONG_NOT_RECEIVED, "Pong reply not received".into()));
                    }
                    pinged = true;
                    idle.as_mut().reset(tokio::time::Instant::now() + pong_timeout);
                    if session.text(protocol::ping()).await.is_err() || session.ping(b"").await.is_err() {
                        break None;
                    }
                }
            }
        }
    };
    app.disconnect(connection.socket_id());
    // Frames queued before the close are flushed first, then the close frame.
    while let Ok(Outbound::Frame(frame)) = outbox.try_recv() {
        if session.text(frame).await.is_err() {
            close = None;
            break;
        }
    }
    if let Some((code, reason)) = close {
        let _ = session.close(close_reason(code, &reason)).await;
    }
}
