//! One WebSocket connection: the protocol state machine ([`Connection`],
//! testable without a socket), the WebSocket endpoint, and the task that
//! reads a connection's frames.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::BoxBody;
use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use realtime_core::{ChannelKind, ChannelName};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::inbound::{Inbound, InboundError, Received};
use crate::outbox::{Outbound, OutboxReceiver};
use crate::protocol::{
    self, code, ClientFrame, PresenceData, SigninData, SubscribeData, UnsubscribeData, UserData,
};
use crate::registry::{App, ConnectError, SubscribeError};
use crate::Server;

/// What the reading task (`read_frames`) should do after a frame.
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
        self.send(Outbound::Frame(frame.into()));
    }

    fn send(&self, outbound: Outbound) {
        self.app.send_to(&self.socket_id, outbound);
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
        // A limit's refusal: the channel's handlers hear it from the
        // subscription_error, the connection's from a coded pusher:error.
        let refuse_by_limit = |code: u16, kind: &str, message: &str, status: u16| {
            self.app.metrics().subscriptions_refused.inc();
            self.error(Some(code), message);
            self.reply(protocol::subscription_error(name, kind, message, status));
        };
        let member = match channel.kind() {
            ChannelKind::Public if !self.app.config().public_channels => {
                return refuse_by_limit(
                    code::PUBLIC_CHANNELS_DISABLED,
                    "AuthError",
                    &format!("Public channels are not accepted here: {name} needs a private- or presence- prefix"),
                    403,
                );
            }
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
            Err(SubscribeError::TooManyChannels(max)) => refuse_by_limit(
                code::TOO_MANY_CHANNELS,
                "LimitReached",
                &format!("Subscription to {name} refused: a connection may hold {max} channels"),
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
        let user = serde_json::from_str::<UserData>(&data.user_data).ok();
        let Some((user, user_id)) = user.and_then(|u| protocol::id_text(&u.id).map(|id| (u, id)))
        else {
            self.error(Some(code::UNAUTHORIZED), "user_data must carry an id");
            return refused();
        };
        let watchlist = match user.watchlist_ids() {
            Ok(watchlist) => watchlist,
            Err(why) => {
                self.error(Some(code::UNAUTHORIZED), &why);
                return refused();
            }
        };
        let answer = protocol::frame(
            "pusher:signin_success",
            None,
            serde_json::json!({ "user_data": data.user_data }),
        );
        self.app
            .sign_in_watching(&self.socket_id, &user_id, &watchlist, Some(answer));
        self.user_id = Some(user_id);
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

/// The upgrade's response, with the frames of `outbox` as its body;
/// `closed`, if given, is told when actix drops the connection.
fn websocket_response(
    mut handshake: actix_http::ResponseBuilder,
    outbox: OutboxReceiver,
    closed: Option<oneshot::Sender<()>>,
) -> actix_web::Result<HttpResponse> {
    let response = handshake.message_body(BoxBody::new(outbox.into_body(closed)))?;
    Ok(response.into())
}

/// Accepts the upgrade, then refuses with a protocol error and close code.
fn refuse_upgrade(
    handshake: actix_http::ResponseBuilder,
    code: u16,
    message: &str,
) -> actix_web::Result<HttpResponse> {
    let (sender, outbox) = crate::outbox::outbox(1);
    let _ = sender.try_send(Outbound::Close(code, message.to_owned()));
    websocket_response(handshake, outbox, None)
}

/// `GET /app/{key}`: the WebSocket endpoint.
pub async fn websocket(
    req: HttpRequest,
    body: web::Payload,
    key: web::Path<String>,
    server: web::Data<Server>,
) -> actix_web::Result<HttpResponse> {
    // Not a WebSocket upgrade: answered by actix (400), before any state.
    let handshake = actix_http::ws::handshake(req.head())?;
    if server.is_shutting_down() {
        return refuse_upgrade(handshake, code::RECONNECT_NOW, "Server shutting down");
    }
    let Some(app) = server.app_by_key(&key) else {
        return refuse_upgrade(
            handshake,
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
                handshake,
                code::INVALID_VERSION_FORMAT,
                "Invalid version string format",
            );
        }
        Some(Ok(version)) if !protocol::SUPPORTED_PROTOCOLS.contains(&version) => {
            return refuse_upgrade(
                handshake,
                code::UNSUPPORTED_PROTOCOL,
                &format!("Unsupported protocol version {version}"),
            );
        }
        Some(Ok(_)) => {}
    }
    let address = app
        .config()
        .trusted_proxies
        .client_address(req.peer_addr().map(|a| a.ip()), req.headers());
    let (socket_id, outbox) = match app.connect_from(address) {
        Ok(registered) => registered,
        Err(ConnectError::OverCapacity) => {
            return refuse_upgrade(handshake, code::OVER_CAPACITY, "Over capacity");
        }
        Err(ConnectError::TooManyFromAddress) => {
            tracing::debug!(address = ?address, "too many connections from one address");
            return refuse_upgrade(
                handshake,
                code::OVER_CAPACITY,
                "Too many connections from your address",
            );
        }
    };
    let (closed_tx, closed) = oneshot::channel();
    let response = match websocket_response(handshake, outbox, Some(closed_tx)) {
        Ok(response) => response,
        Err(e) => {
            app.disconnect(&socket_id);
            return Err(e);
        }
    };
    let activity_timeout = app.config().activity_timeout.as_secs();
    app.send_to(
        &socket_id,
        Outbound::Frame(protocol::connection_established(&socket_id, activity_timeout).into()),
    );
    // Frames, and messages joined from fragments, are limited alike.
    let inbound = Inbound::new(body, app.config().max_frame_bytes);
    actix_web::rt::spawn(read_frames(
        Connection::new(app, socket_id),
        inbound,
        closed,
    ));
    Ok(response)
}

/// Any other path under `/app`: Pusher answers 4005.
pub async fn wrong_path(req: HttpRequest) -> actix_web::Result<HttpResponse> {
    let handshake = actix_http::ws::handshake(req.head())?;
    refuse_upgrade(handshake, code::PATH_NOT_FOUND, "Path not found")
}

/// Removes a connection from its app when its reading task ends, or, if the
/// task ends otherwise (a panic, the runtime stopping), when dropped. The
/// app tears it down in paced steps either way (see
/// [`crate::registry::TEARDOWN_PACE`]).
struct Leaving {
    app: Arc<App>,
    socket_id: Arc<str>,
    done: bool,
}

impl Leaving {
    /// Removes the connection, sending `last` after what is already queued.
    fn leave(&mut self, last: Option<Outbound>) {
        self.done = true;
        match last {
            Some(last) => self.app.close(&self.socket_id, last),
            None => self.app.disconnect(&self.socket_id),
        }
    }
}

impl Drop for Leaving {
    fn drop(&mut self) {
        if !self.done {
            self.app.disconnect(&self.socket_id);
        }
    }
}

/// Reads one connection's frames until either side ends it, then removes the
/// connection from its app. What the server sends does not pass through
/// here: it goes from the app to the connection's outbox, which the response
/// body writes.
async fn read_frames(
    mut connection: Connection,
    mut inbound: Inbound<web::Payload>,
    mut closed: oneshot::Receiver<()>,
) {
    let app = connection.app.clone();
    let mut leaving = Leaving {
        app: app.clone(),
        socket_id: connection.socket_id.clone(),
        done: false,
    };
    let activity_timeout = app.config().activity_timeout;
    let pong_timeout = app.config().pong_timeout();
    // One timer for the connection's life, moved rather than rebuilt:
    // registering a timer per frame would cost more than the frame.
    let idle = tokio::time::sleep(activity_timeout);
    tokio::pin!(idle);
    let mut pinged = false;
    let close = loop {
        tokio::select! {
            received = inbound.next() => {
                idle.as_mut().reset(tokio::time::Instant::now() + activity_timeout);
                pinged = false;
                let control = match received {
                    Some(Ok(Received::Text(text))) => connection.handle_text(&text),
                    Some(Ok(Received::Ping(bytes))) => {
                        connection.send(Outbound::Pong(bytes));
                        Control::Continue
                    }
                    Some(Ok(Received::Pong)) => Control::Continue,
                    Some(Ok(Received::Binary)) => {
                        connection.error(None, "Binary frames are not supported; send JSON text");
                        Control::Continue
                    }
                    // RFC 6455: the close is answered with a close, echoing its code.
                    Some(Ok(Received::Close(code))) => break Some((code.unwrap_or(1000), String::new())),
                    None => break None,
                    Some(Err(InboundError::TooLarge)) => {
                        connection.error(None, "Frame too large");
                        Control::Close(1009, "Frame too large".into())
                    }
                    Some(Err(InboundError::NotUtf8)) => Control::Close(1007, "Invalid UTF-8".into()),
                    Some(Err(InboundError::Protocol(why))) => {
                        tracing::debug!(socket_id = %connection.socket_id, %why, "a client broke the WebSocket protocol");
                        Control::Close(1002, "Protocol error".into())
                    }
                };
                if let Control::Close(code, reason) = control {
                    break Some((code, reason));
                }
            }
            // actix dropped the connection: the client went away, or the
            // body ended after a close the app queued.
            _ = &mut closed => break None,
            _ = &mut idle => {
                if pinged {
                    break Some((code::PONG_NOT_RECEIVED, "Pong reply not received".into()));
                }
                pinged = true;
                idle.as_mut().reset(tokio::time::Instant::now() + pong_timeout);
                connection.send(Outbound::Frame(protocol::ping().into()));
                connection.send(Outbound::Ping(Bytes::new()));
            }
        }
    };
    // Frames queued before the close are still sent, then the close.
    leaving.leave(close.map(|(code, reason)| Outbound::CloseFrame(code, reason)));
}
