//! The protocol state machine without a socket: an [`App`] is built directly,
//! connections are registered with `App::connect`, driven with
//! `Connection::handle_text`, and what the server would send is read from
//! each connection's outbox.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{credentials, Client, APP_ID, KEY, SECRET};

use std::sync::Arc;

use realtime_core::{Credentials, MasterKey, PresenceMember};
use realtime_server::connection::Control;
use realtime_server::outbox::{Outbound, TryRecvError};
use realtime_server::protocol;
use realtime_server::registry::OUTBOX_CAPACITY;
use realtime_server::{App, AppConfig, Metrics};
use serde_json::{json, Value};

fn app() -> Arc<App> {
    app_with(|_| {})
}

fn app_with(change: impl FnOnce(&mut AppConfig)) -> Arc<App> {
    let mut config = AppConfig::new(credentials());
    change(&mut config);
    Arc::new(App::new(config, Metrics::new(), None))
}

fn client_events_app() -> Arc<App> {
    app_with(|c| c.client_events = true)
}

impl Client {
    fn send_text(&mut self, text: &str) -> Control {
        self.connection.handle_text(text)
    }

    /// The one frame queued now.
    fn only_frame(&mut self) -> Value {
        let frames = self.frames();
        assert_eq!(
            frames.len(),
            1,
            "expected exactly one frame, got {frames:?}"
        );
        frames.into_iter().next().unwrap()
    }

    fn assert_nothing_queued(&mut self) {
        let outbound = self.outbound();
        assert!(outbound.is_empty(), "expected nothing, got {outbound:?}");
    }

    fn subscribe_frame(&mut self, data: Value) -> Control {
        self.send(json!({ "event": "pusher:subscribe", "data": data }))
    }

    fn subscribe_public(&mut self, channel: &str) {
        self.subscribe_frame(json!({ "channel": channel }));
        let frame = self.only_frame();
        assert_eq!(frame["event"], "pusher_internal:subscription_succeeded");
    }

    fn subscribe_private(&mut self, channel: &str) {
        let auth = credentials()
            .authorize_channel(&self.socket_id, channel)
            .unwrap();
        self.subscribe_frame(json!({ "channel": channel, "auth": auth.auth }));
        let frame = self.only_frame();
        assert_eq!(frame["event"], "pusher_internal:subscription_succeeded");
    }

    /// Subscribes to a presence channel with a signed channel_data; answers
    /// every frame it got (the subscription's answer).
    fn subscribe_presence(&mut self, channel: &str, user_id: &str, info: Option<&Value>) -> Value {
        let member = PresenceMember {
            user_id,
            user_info: info,
        };
        let auth = credentials()
            .authorize_presence_channel(&self.socket_id, channel, &member)
            .unwrap();
        self.subscribe_frame(json!({
            "channel": channel,
            "auth": auth.auth,
            "channel_data": auth.channel_data,
        }));
        self.only_frame()
    }

    fn sign_in(&mut self, user_id: &str) -> Control {
        let auth = credentials()
            .authenticate_user(&self.socket_id, &json!({ "id": user_id }))
            .unwrap();
        self.send(json!({
            "event": "pusher:signin",
            "data": { "auth": auth.auth, "user_data": auth.user_data },
        }))
    }

    fn client_event(&mut self, channel: &str, event: &str, data: Value) -> Control {
        self.send(json!({ "event": event, "channel": channel, "data": data }))
    }
}

/// `data` of a frame, parsed when it is a JSON string (as Pusher sends it).
fn data_of(frame: &Value) -> Value {
    match &frame["data"] {
        Value::String(text) => serde_json::from_str(text).expect("data string is JSON"),
        other => other.clone(),
    }
}

fn publish(app: &App, channel: &str, event: &str, data: &str) -> usize {
    let frame = protocol::frame(event, Some(channel), data);
    app.publish(channel, &frame, None)
}

fn assert_error(frame: &Value, code: Option<u16>) {
    assert_eq!(frame["event"], "pusher:error", "not an error: {frame}");
    assert_eq!(frame["data"]["code"], json!(code), "wrong code: {frame}");
    assert!(
        frame["data"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error without a message: {frame}"
    );
}

fn assert_subscription_error(frame: &Value, channel: &str, status: u16) {
    assert_eq!(frame["event"], "pusher:subscription_error", "{frame}");
    assert_eq!(frame["channel"], channel, "{frame}");
    assert_eq!(frame["data"]["status"], status, "{frame}");
}

fn sorted_ids(presence: &Value) -> Vec<String> {
    let mut ids: Vec<String> = presence["ids"]
        .as_array()
        .expect("ids is an array")
        .iter()
        .map(|id| id.as_str().expect("ids are strings").to_owned())
        .collect();
    ids.sort();
    ids
}

// ---------------------------------------------------------------- basics

#[test]
fn ping_is_answered_with_pong() {
    let app = app();
    let mut client = Client::new(&app);
    let control = client.send(json!({ "event": "pusher:ping", "data": {} }));
    assert_eq!(control, Control::Continue);
    let frame = client.only_frame();
    assert_eq!(frame["event"], "pusher:pong");
}

#[test]
fn pong_from_the_client_is_answered_with_nothing() {
    let app = app();
    let mut client = Client::new(&app);
    client.send(json!({ "event": "pusher:pong", "data": {} }));
    client.assert_nothing_queued();
}

#[test]
fn public_subscription_succeeds_with_empty_object_data() {
    let app = app();
    let mut client = Client::new(&app);
    client.subscribe_frame(json!({ "channel": "news" }));
    let frame = client.only_frame();
    assert_eq!(frame["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(frame["channel"], "news");
    assert_eq!(frame["data"], "{}");
    assert!(app.is_subscribed(&client.socket_id, "news"));
    assert_eq!(app.channel_info("news").occupied, Some(true));
}

#[test]
fn subscribe_data_given_as_a_json_string_is_accepted() {
    let app = app();
    let mut client = Client::new(&app);
    client.send(json!({ "event": "pusher:subscribe", "data": "{\"channel\":\"news\"}" }));
    let frame = client.only_frame();
    assert_eq!(frame["event"], "pusher_internal:subscription_succeeded");
    assert!(app.is_subscribed(&client.socket_id, "news"));
}

#[test]
fn subscribers_receive_published_events_and_others_do_not() {
    let app = app();
    let mut subscriber = Client::new(&app);
    let mut bystander = Client::new(&app);
    subscriber.subscribe_public("news");
    bystander.subscribe_public("sports");

    assert_eq!(publish(&app, "news", "headline", r#"{"title":"hi"}"#), 1);
    let frame = subscriber.only_frame();
    assert_eq!(frame["event"], "headline");
    assert_eq!(frame["channel"], "news");
    assert_eq!(data_of(&frame), json!({ "title": "hi" }));
    bystander.assert_nothing_queued();
}

#[test]
fn subscribing_twice_answers_again_but_counts_one_subscription() {
    let app = app();
    let mut client = Client::new(&app);
    client.subscribe_public("news");
    client.subscribe_public("news");
    assert_eq!(app.channel_info("news").subscription_count, Some(1));
    assert_eq!(publish(&app, "news", "e", "{}"), 1);
    assert_eq!(client.frames().len(), 1, "one copy of the event");
}

#[test]
fn unsubscribe_stops_delivery_and_vacates_the_channel() {
    let app = app();
    let mut client = Client::new(&app);
    client.subscribe_public("news");
    client.send(json!({ "event": "pusher:unsubscribe", "data": { "channel": "news" } }));
    assert!(!app.is_subscribed(&client.socket_id, "news"));
    assert_eq!(app.channel_info("news").occupied, Some(false));
    assert_eq!(publish(&app, "news", "e", "{}"), 0);
    client.assert_nothing_queued();
}

#[test]
fn invalid_channel_name_is_refused_with_status_400() {
    let app = app();
    let mut client = Client::new(&app);
    client.subscribe_frame(json!({ "channel": "bad channel!" }));
    let frame = client.only_frame();
    assert_subscription_error(&frame, "bad channel!", 400);
    assert_eq!(app.channel_info("bad channel!").occupied, Some(false));
}

#[test]
fn server_to_user_channel_cannot_be_joined_by_subscribe() {
    let app = app();
    let mut client = Client::new(&app);
    client.subscribe_frame(json!({ "channel": "#server-to-user-42" }));
    let frame = client.only_frame();
    assert_subscription_error(&frame, "#server-to-user-42", 403);
    assert_eq!(publish(&app, "#server-to-user-42", "e", "{}"), 0);
    client.assert_nothing_queued();
}

#[test]
fn connections_beyond_max_connections_are_refused() {
    let app = app_with(|c| c.max_connections = 2);
    let _a = Client::new(&app);
    let _b = Client::new(&app);
    assert!(app.connect().is_none());
    assert_eq!(app.connection_count(), 2);
}

#[test]
fn socket_ids_are_distinct_and_valid() {
    let app = app();
    let a = Client::new(&app);
    let b = Client::new(&app);
    assert_ne!(a.socket_id, b.socket_id);
    for id in [&a.socket_id, &b.socket_id] {
        assert!(realtime_core::SocketId::parse(id.as_str()).is_ok(), "{id}");
    }
}

// ---------------------------------------------------------------- private

#[test]
fn private_subscription_with_valid_auth_succeeds_and_receives_events() {
    let app = app();
    let mut client = Client::new(&app);
    client.subscribe_private("private-orders");
    assert!(app.is_subscribed(&client.socket_id, "private-orders"));
    publish(&app, "private-orders", "created", "{}");
    assert_eq!(client.only_frame()["event"], "created");
}

#[test]
fn private_encrypted_subscription_with_valid_auth_succeeds() {
    let app = app();
    let mut client = Client::new(&app);
    let signer = credentials().with_encryption_master_key(MasterKey::from_bytes([7; 32]));
    let auth = signer
        .authorize_channel(&client.socket_id, "private-encrypted-vault")
        .unwrap();
    client.subscribe_frame(json!({ "channel": "private-encrypted-vault", "auth": auth.auth }));
    assert_eq!(
        client.only_frame()["event"],
        "pusher_internal:subscription_succeeded"
    );
}

fn assert_refused_and_deaf(app: &App, client: &mut Client, channel: &str) {
    let frame = client.only_frame();
    assert_subscription_error(&frame, channel, 401);
    assert!(!app.is_subscribed(&client.socket_id, channel));
    assert_eq!(publish(app, channel, "secret", "{}"), 0);
    client.assert_nothing_queued();
}

#[test]
fn private_subscription_without_auth_is_refused_with_401_and_gets_no_events() {
    let app = app();
    let mut client = Client::new(&app);
    client.subscribe_frame(json!({ "channel": "private-orders" }));
    assert_refused_and_deaf(&app, &mut client, "private-orders");
}

#[test]
fn private_subscription_signed_for_another_socket_is_refused_with_401() {
    let app = app();
    let mut client = Client::new(&app);
    let auth = credentials()
        .authorize_channel("1234.5678", "private-orders")
        .unwrap();
    client.subscribe_frame(json!({ "channel": "private-orders", "auth": auth.auth }));
    assert_refused_and_deaf(&app, &mut client, "private-orders");
}

#[test]
fn private_subscription_signed_for_another_channel_is_refused_with_401() {
    let app = app();
    let mut client = Client::new(&app);
    let auth = credentials()
        .authorize_channel(&client.socket_id, "private-other")
        .unwrap();
    client.subscribe_frame(json!({ "channel": "private-orders", "auth": auth.auth }));
    assert_refused_and_deaf(&app, &mut client, "private-orders");
}

#[test]
fn private_subscription_signed_with_another_secret_is_refused_with_401() {
    let app = app();
    let mut client = Client::new(&app);
    let auth = Credentials::new(APP_ID, KEY, "not-the-secret")
        .authorize_channel(&client.socket_id, "private-orders")
        .unwrap();
    client.subscribe_frame(json!({ "channel": "private-orders", "auth": auth.auth }));
    assert_refused_and_deaf(&app, &mut client, "private-orders");
}

#[test]
fn private_subscription_with_another_key_in_auth_is_refused_with_401() {
    let app = app();
    let mut client = Client::new(&app);
    let auth = Credentials::new(APP_ID, "other-key", SECRET)
        .authorize_channel(&client.socket_id, "private-orders")
        .unwrap();
    client.subscribe_frame(json!({ "channel": "private-orders", "auth": auth.auth }));
    assert_refused_and_deaf(&app, &mut client, "private-orders");
}

#[test]
fn private_subscription_with_garbage_auth_is_refused_with_401() {
    let app = app();
    for auth in ["", "garbage", ":", "app-key:", "app-key:zz", "app-key:00"] {
        let mut client = Client::new(&app);
        client.subscribe_frame(json!({ "channel": "private-orders", "auth": auth }));
        assert_refused_and_deaf(&app, &mut client, "private-orders");
    }
}

// ---------------------------------------------------------------- presence

#[test]
fn presence_subscription_succeeded_carries_ids_hash_and_count() {
    let app = app();
    let mut alice = Client::new(&app);
    let mut bob = Client::new(&app);
    let alice_info = json!({ "name": "Alice" });
    let bob_info = json!({ "name": "Bob" });
    alice.subscribe_presence("presence-room", "alice", Some(&alice_info));
    let frame = bob.subscribe_presence("presence-room", "bob", Some(&bob_info));

    assert_eq!(frame["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(frame["channel"], "presence-room");
    assert!(frame["data"].is_string(), "data is a JSON string: {frame}");
    let data = data_of(&frame);
    let presence = &data["presence"];
    assert_eq!(presence["count"], 2);
    assert_eq!(sorted_ids(presence), ["alice", "bob"]);
    assert_eq!(presence["hash"]["alice"], alice_info);
    assert_eq!(presence["hash"]["bob"], bob_info);
}

#[test]
fn presence_member_without_user_info_is_listed_with_null_info() {
    let app = app();
    let mut alice = Client::new(&app);
    let frame = alice.subscribe_presence("presence-room", "alice", None);
    let presence = data_of(&frame)["presence"].clone();
    assert_eq!(presence["count"], 1);
    assert_eq!(presence["hash"]["alice"], Value::Null);
}

#[test]
fn presence_numeric_user_id_is_read_as_its_text() {
    let app = app();
    let mut client = Client::new(&app);
    let data = json!({ "user_id": 42 }).to_string();
    let auth =
        credentials()
            .signer()
            .sign_hex(&[format!("{}:presence-room:{data}", client.socket_id).as_bytes()]);
    client.subscribe_frame(json!({
        "channel": "presence-room",
        "auth": format!("{KEY}:{auth}"),
        "channel_data": data,
    }));
    let frame = client.only_frame();
    assert_eq!(frame["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(app.presence_users("presence-room"), ["42"]);
}

#[test]
fn presence_subscription_without_channel_data_is_refused_with_401() {
    let app = app();
    let mut client = Client::new(&app);
    let auth = credentials()
        .authorize_presence_channel(
            &client.socket_id,
            "presence-room",
            &PresenceMember::<Value> {
                user_id: "alice",
                user_info: None,
            },
        )
        .unwrap();
    client.subscribe_frame(json!({ "channel": "presence-room", "auth": auth.auth }));
    assert_refused_and_deaf(&app, &mut client, "presence-room");
    assert!(app.presence_users("presence-room").is_empty());
}

#[test]
fn presence_subscription_with_tampered_channel_data_is_refused_with_401() {
    let app = app();
    let mut client = Client::new(&app);
    let auth = credentials()
        .authorize_presence_channel(
            &client.socket_id,
            "presence-room",
            &PresenceMember::<Value> {
                user_id: "alice",
                user_info: None,
            },
        )
        .unwrap();
    client.subscribe_frame(json!({
        "channel": "presence-room",
        "auth": auth.auth,
        "channel_data": json!({ "user_id": "admin" }).to_string(),
    }));
    assert_refused_and_deaf(&app, &mut client, "presence-room");
    assert!(app.presence_users("presence-room").is_empty());
}

#[test]
fn presence_member_added_only_on_a_users_first_connection_and_removed_only_on_the_last() {
    let app = app();
    let mut watcher = Client::new(&app);
    let mut bob_phone = Client::new(&app);
    let mut bob_laptop = Client::new(&app);
    watcher.subscribe_presence("presence-room", "watcher", None);
    watcher.assert_nothing_queued();

    // Bob's first connection: announced to the others, not to himself.
    let frame = bob_phone.subscribe_presence("presence-room", "bob", Some(&json!({"n": 1})));
    assert_eq!(frame["event"], "pusher_internal:subscription_succeeded");
    let added = watcher.only_frame();
    assert_eq!(added["event"], "pusher_internal:member_added");
    assert_eq!(added["channel"], "presence-room");
    assert_eq!(data_of(&added)["user_id"], "bob");
    assert_eq!(data_of(&added)["user_info"], json!({"n": 1}));

    // Bob's second connection: nobody is told again.
    let frame = bob_laptop.subscribe_presence("presence-room", "bob", Some(&json!({"n": 1})));
    assert_eq!(frame["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(data_of(&frame)["presence"]["count"], 2);
    watcher.assert_nothing_queued();
    bob_phone.assert_nothing_queued();
    assert_eq!(app.channel_info("presence-room").user_count, Some(2));
    assert_eq!(
        app.channel_info("presence-room").subscription_count,
        Some(3)
    );

    // One of Bob's connections leaves: he is still there.
    app.disconnect(&bob_phone.socket_id);
    watcher.assert_nothing_queued();
    bob_laptop.assert_nothing_queued();
    let mut users = app.presence_users("presence-room");
    users.sort();
    assert_eq!(users, ["bob", "watcher"]);

    // His last connection leaves: now he is gone.
    bob_laptop
        .send(json!({ "event": "pusher:unsubscribe", "data": { "channel": "presence-room" } }));
    let removed = watcher.only_frame();
    assert_eq!(removed["event"], "pusher_internal:member_removed");
    assert_eq!(data_of(&removed)["user_id"], "bob");
    assert_eq!(app.presence_users("presence-room"), ["watcher"]);
    assert_eq!(app.channel_info("presence-room").user_count, Some(1));
}

#[test]
fn presence_channel_refuses_the_101st_member() {
    let app = app();
    let mut members: Vec<Client> = Vec::new();
    for i in 0..100 {
        let mut client = Client::new(&app);
        let frame = client.subscribe_presence("presence-big", &format!("user-{i}"), None);
        assert_eq!(
            frame["event"], "pusher_internal:subscription_succeeded",
            "member {i}"
        );
        members.push(client);
    }
    for member in &mut members {
        member.outbound();
    }
    let mut late = Client::new(&app);
    let frame = late.subscribe_presence("presence-big", "user-100", None);
    assert_subscription_error(&frame, "presence-big", 400);
    assert!(!app.is_subscribed(&late.socket_id, "presence-big"));
    assert_eq!(app.channel_info("presence-big").user_count, Some(100));
    // Nobody heard of the refused member.
    for member in &mut members {
        member.assert_nothing_queued();
    }
    // Events of the channel do not reach the refused connection.
    assert_eq!(publish(&app, "presence-big", "e", "{}"), 100);
    late.assert_nothing_queued();
}

#[test]
fn full_presence_channel_still_admits_another_connection_of_a_member() {
    let app = app_with(|c| c.max_presence_members = 2);
    let mut a = Client::new(&app);
    let mut b = Client::new(&app);
    a.subscribe_presence("presence-small", "a", None);
    b.subscribe_presence("presence-small", "b", None);
    let mut a_again = Client::new(&app);
    let frame = a_again.subscribe_presence("presence-small", "a", None);
    assert_eq!(frame["event"], "pusher_internal:subscription_succeeded");
    let mut c = Client::new(&app);
    let frame = c.subscribe_presence("presence-small", "c", None);
    assert_subscription_error(&frame, "presence-small", 400);
    assert_eq!(app.channel_info("presence-small").user_count, Some(2));
}

#[test]
fn presence_user_info_over_1024_bytes_is_refused() {
    let app = app();
    let mut client = Client::new(&app);
    // `"…"` is the JSON of the string: 1025 bytes in all.
    let too_big = Value::String("x".repeat(1023));
    assert_eq!(too_big.to_string().len(), 1025);
    let frame = client.subscribe_presence("presence-room", "alice", Some(&too_big));
    assert_subscription_error(&frame, "presence-room", 400);
    assert!(!app.is_subscribed(&client.socket_id, "presence-room"));
    assert!(app.presence_users("presence-room").is_empty());
}

#[test]
fn presence_user_info_of_exactly_1024_bytes_is_accepted() {
    let app = app();
    let mut client = Client::new(&app);
    let just_fits = Value::String("x".repeat(1022));
    assert_eq!(just_fits.to_string().len(), 1024);
    let frame = client.subscribe_presence("presence-room", "alice", Some(&just_fits));
    assert_eq!(frame["event"], "pusher_internal:subscription_succeeded");
}

#[test]
fn presence_user_id_over_128_characters_is_refused() {
    let app = app();
    let mut client = Client::new(&app);
    let frame = client.subscribe_presence("presence-room", &"u".repeat(129), None);
    assert_subscription_error(&frame, "presence-room", 400);
    assert!(app.presence_users("presence-room").is_empty());

    let mut ok = Client::new(&app);
    let frame = ok.subscribe_presence("presence-room", &"u".repeat(128), None);
    assert_eq!(frame["event"], "pusher_internal:subscription_succeeded");
}

#[test]
fn presence_channel_data_without_user_id_is_refused() {
    let app = app();
    for data in [
        json!({ "user_info": {} }),
        json!({ "user_id": "" }),
        json!({ "user_id": null }),
        json!({ "user_id": ["a"] }),
        json!("not an object"),
    ] {
        let mut client = Client::new(&app);
        let data = data.to_string();
        let signature = credentials().signer().sign_hex(&[format!(
            "{}:presence-room:{data}",
            client.socket_id
        )
        .as_bytes()]);
        client.subscribe_frame(json!({
            "channel": "presence-room",
            "auth": format!("{KEY}:{signature}"),
            "channel_data": data,
        }));
        let frame = client.only_frame();
        assert_subscription_error(&frame, "presence-room", 400);
    }
    assert!(app.presence_users("presence-room").is_empty());
}

// ---------------------------------------------------------------- client events

#[test]
fn client_events_are_refused_by_default() {
    let app = app();
    let mut sender = Client::new(&app);
    let mut other = Client::new(&app);
    sender.subscribe_private("private-chat");
    other.subscribe_private("private-chat");
    sender.client_event("private-chat", "client-typing", json!({}));
    assert_error(&sender.only_frame(), None);
    other.assert_nothing_queued();
}

#[test]
fn client_event_is_relayed_to_the_other_subscriber_not_the_sender() {
    let app = client_events_app();
    let mut sender = Client::new(&app);
    let mut other = Client::new(&app);
    sender.subscribe_private("private-chat");
    other.subscribe_private("private-chat");
    let control = sender.client_event("private-chat", "client-typing", json!({ "who": "me" }));
    assert_eq!(control, Control::Continue);
    sender.assert_nothing_queued();
    let frame = other.only_frame();
    assert_eq!(frame["event"], "client-typing");
    assert_eq!(frame["channel"], "private-chat");
    assert_eq!(frame["data"], json!({ "who": "me" }));
    assert!(frame.get("user_id").is_none(), "no user_id off presence");
}

#[test]
fn client_event_on_presence_channel_carries_the_senders_user_id() {
    let app = client_events_app();
    let mut alice = Client::new(&app);
    let mut bob = Client::new(&app);
    alice.subscribe_presence("presence-room", "alice", None);
    bob.subscribe_presence("presence-room", "bob", None);
    alice.outbound();
    alice.client_event("presence-room", "client-wave", json!("hello"));
    alice.assert_nothing_queued();
    let frame = bob.only_frame();
    assert_eq!(frame["event"], "client-wave");
    assert_eq!(frame["data"], "hello");
    assert_eq!(frame["user_id"], "alice");
}

#[test]
fn client_event_on_public_channel_is_refused() {
    let app = client_events_app();
    let mut sender = Client::new(&app);
    let mut other = Client::new(&app);
    sender.subscribe_public("lobby");
    other.subscribe_public("lobby");
    sender.client_event("lobby", "client-typing", json!({}));
    assert_error(&sender.only_frame(), None);
    other.assert_nothing_queued();
}

#[test]
fn client_event_on_channel_not_subscribed_is_refused() {
    let app = client_events_app();
    let mut outsider = Client::new(&app);
    let mut member = Client::new(&app);
    member.subscribe_private("private-chat");
    outsider.client_event("private-chat", "client-typing", json!({}));
    assert_error(&outsider.only_frame(), None);
    member.assert_nothing_queued();
}

#[test]
fn client_event_after_refused_subscription_is_refused() {
    let app = client_events_app();
    let mut intruder = Client::new(&app);
    let mut member = Client::new(&app);
    member.subscribe_private("private-chat");
    intruder.subscribe_frame(json!({ "channel": "private-chat", "auth": "app-key:00" }));
    intruder.outbound();
    intruder.client_event("private-chat", "client-typing", json!({}));
    assert_error(&intruder.only_frame(), None);
    member.assert_nothing_queued();
}

#[test]
fn client_event_without_channel_is_refused() {
    let app = client_events_app();
    let mut sender = Client::new(&app);
    sender.send(json!({ "event": "client-typing", "data": {} }));
    assert_error(&sender.only_frame(), None);
}

#[test]
fn client_event_with_data_over_the_limit_is_refused() {
    let app = client_events_app();
    let mut sender = Client::new(&app);
    let mut other = Client::new(&app);
    sender.subscribe_private("private-chat");
    other.subscribe_private("private-chat");
    sender.client_event(
        "private-chat",
        "client-big",
        json!("x".repeat(10 * 1024 + 1)),
    );
    assert_error(&sender.only_frame(), None);
    other.assert_nothing_queued();
}

#[test]
fn client_event_with_too_long_name_is_refused() {
    let app = client_events_app();
    let mut sender = Client::new(&app);
    let mut other = Client::new(&app);
    sender.subscribe_private("private-chat");
    other.subscribe_private("private-chat");
    let name = format!("client-{}", "x".repeat(200));
    sender.client_event("private-chat", &name, json!({}));
    assert_error(&sender.only_frame(), None);
    other.assert_nothing_queued();
}

#[test]
fn eleventh_client_event_within_a_second_gets_error_4301() {
    let app = client_events_app();
    let mut sender = Client::new(&app);
    let mut other = Client::new(&app);
    sender.subscribe_private("private-chat");
    other.subscribe_private("private-chat");
    for i in 0..10 {
        sender.client_event("private-chat", "client-n", json!(i));
    }
    sender.assert_nothing_queued();
    assert_eq!(other.frames().len(), 10);

    sender.client_event("private-chat", "client-n", json!(10));
    assert_error(&sender.only_frame(), Some(4301));
    other.assert_nothing_queued();
}

#[test]
fn client_event_rate_limit_is_per_connection() {
    let app = client_events_app();
    let mut a = Client::new(&app);
    let mut b = Client::new(&app);
    a.subscribe_private("private-chat");
    b.subscribe_private("private-chat");
    for i in 0..11 {
        a.client_event("private-chat", "client-n", json!(i));
    }
    a.outbound();
    b.outbound();
    b.client_event("private-chat", "client-n", json!("from b"));
    b.assert_nothing_queued();
    assert_eq!(a.only_frame()["data"], "from b");
}

// ---------------------------------------------------------------- signin

#[test]
fn valid_signin_succeeds_and_the_user_channel_receives_events() {
    let app = app();
    let mut client = Client::new(&app);
    let control = client.sign_in("42");
    assert_eq!(control, Control::Continue);
    let frame = client.only_frame();
    assert_eq!(frame["event"], "pusher:signin_success");
    let user_data: Value =
        serde_json::from_str(data_of(&frame)["user_data"].as_str().unwrap()).unwrap();
    assert_eq!(user_data["id"], "42");

    assert_eq!(
        publish(&app, "#server-to-user-42", "notice", r#"{"n":1}"#),
        1
    );
    let event = client.only_frame();
    assert_eq!(event["event"], "notice");
    assert_eq!(event["channel"], "#server-to-user-42");
    // Another user's channel does not reach it.
    assert_eq!(publish(&app, "#server-to-user-43", "notice", "{}"), 0);
    client.assert_nothing_queued();
}

#[test]
fn every_connection_of_a_signed_in_user_receives_its_events() {
    let app = app();
    let mut phone = Client::new(&app);
    let mut laptop = Client::new(&app);
    phone.sign_in("42");
    laptop.sign_in("42");
    phone.outbound();
    laptop.outbound();
    assert_eq!(publish(&app, "#server-to-user-42", "notice", "{}"), 2);
    assert_eq!(phone.only_frame()["event"], "notice");
    assert_eq!(laptop.only_frame()["event"], "notice");
}

#[test]
fn signin_with_invalid_signature_closes_with_4009() {
    let app = app();
    let mut client = Client::new(&app);
    let auth = Credentials::new(APP_ID, KEY, "wrong-secret")
        .authenticate_user(&client.socket_id, &json!({ "id": "42" }))
        .unwrap();
    let control = client.send(json!({
        "event": "pusher:signin",
        "data": { "auth": auth.auth, "user_data": auth.user_data },
    }));
    assert!(
        matches!(control, Control::Close(4009, _)),
        "got {control:?}"
    );
    assert_error(&client.only_frame(), Some(4009));
    assert_eq!(publish(&app, "#server-to-user-42", "notice", "{}"), 0);
}

#[test]
fn signin_signed_for_another_socket_closes_with_4009() {
    let app = app();
    let mut client = Client::new(&app);
    let auth = credentials()
        .authenticate_user("1.1", &json!({ "id": "42" }))
        .unwrap();
    let control = client.send(json!({
        "event": "pusher:signin",
        "data": { "auth": auth.auth, "user_data": auth.user_data },
    }));
    assert!(matches!(control, Control::Close(4009, _)), "{control:?}");
    assert_eq!(publish(&app, "#server-to-user-42", "notice", "{}"), 0);
}

#[test]
fn signin_with_malformed_data_closes_with_4009() {
    let app = app();
    for data in [
        json!("garbage"),
        json!({}),
        json!({ "auth": 1, "user_data": 2 }),
        json!({ "auth": "app-key:00" }),
        Value::Null,
    ] {
        let mut client = Client::new(&app);
        let control = client.send(json!({ "event": "pusher:signin", "data": data }));
        assert!(
            matches!(control, Control::Close(4009, _)),
            "{data}: {control:?}"
        );
    }
}

#[test]
fn signin_with_user_data_lacking_an_id_closes_with_4009() {
    let app = app();
    let mut client = Client::new(&app);
    let user_data = json!({ "name": "no id" }).to_string();
    let signature =
        credentials()
            .signer()
            .sign_hex(&[format!("{}::user::{user_data}", client.socket_id).as_bytes()]);
    let control = client.send(json!({
        "event": "pusher:signin",
        "data": { "auth": format!("{KEY}:{signature}"), "user_data": user_data },
    }));
    assert!(matches!(control, Control::Close(4009, _)), "{control:?}");
}

#[test]
fn terminate_user_closes_each_of_its_connections_with_4009() {
    let app = app();
    let mut phone = Client::new(&app);
    let mut laptop = Client::new(&app);
    let mut stranger = Client::new(&app);
    phone.sign_in("42");
    laptop.sign_in("42");
    stranger.sign_in("7");
    phone.outbound();
    laptop.outbound();
    stranger.outbound();
    phone.subscribe_public("news");
    phone.outbound();
    assert_eq!(app.terminate_user("42"), 2);
    for client in [&mut phone, &mut laptop] {
        let outbound = client.outbound();
        assert!(
            matches!(outbound.as_slice(), [Outbound::Close(4009, _)]),
            "{outbound:?}"
        );
    }
    stranger.assert_nothing_queued();
    // Removed at once, not when the client has read the close: it gets no
    // more events, and what it still sends reaches nobody.
    assert_eq!(app.connection_count(), 1);
    assert_eq!(publish(&app, "news", "e", "{}"), 0);
    assert_eq!(app.terminate_user("42"), 0);
}

#[test]
fn signing_in_again_as_another_user_stops_the_first_users_events() {
    let app = app();
    let mut client = Client::new(&app);
    client.sign_in("alice");
    client.sign_in("bob");
    client.outbound();
    assert_eq!(publish(&app, "#server-to-user-bob", "e", "{}"), 1);
    client.outbound();
    assert_eq!(
        publish(&app, "#server-to-user-alice", "e", "{}"),
        0,
        "the connection is no longer alice's"
    );
    client.assert_nothing_queued();
}

// ---------------------------------------------------------------- malformed input

#[test]
fn malformed_input_never_panics_and_answers_an_error_or_nothing() {
    let app = client_events_app();
    let mut client = Client::new(&app);
    let huge = "x".repeat(1 << 20);
    let inputs: Vec<String> = vec![
        String::new(),
        "not json".into(),
        "{".into(),
        "null".into(),
        "42".into(),
        "\"text\"".into(),
        "[]".into(),
        r#"[{"event":"pusher:ping"}]"#.into(),
        "{}".into(),
        r#"{"event":1}"#.into(),
        r#"{"event":null}"#.into(),
        r#"{"event":["pusher:ping"]}"#.into(),
        r#"{"event":"pusher:subscribe"}"#.into(),
        r#"{"event":"pusher:subscribe","data":"garbage"}"#.into(),
        r#"{"event":"pusher:subscribe","data":{}}"#.into(),
        r#"{"event":"pusher:subscribe","data":{"channel":5}}"#.into(),
        r#"{"event":"pusher:subscribe","data":{"channel":null}}"#.into(),
        r#"{"event":"pusher:subscribe","data":{"channel":""}}"#.into(),
        r#"{"event":"pusher:subscribe","data":{"channel":"private-x","auth":7}}"#.into(),
        r#"{"event":"pusher:subscribe","data":{"channel":"presence-x","auth":"a:b","channel_data":{"user_id":"1"}}}"#.into(),
        r#"{"event":"pusher:subscribe","data":[1,2]}"#.into(),
        r#"{"event":"pusher:unsubscribe","data":"garbage"}"#.into(),
        r#"{"event":"pusher:unsubscribe","data":{"channel":"never-joined"}}"#.into(),
        r#"{"event":"pusher:unknown","data":{}}"#.into(),
        r#"{"event":"something-else","data":{}}"#.into(),
        r#"{"event":"client-x","channel":5,"data":{}}"#.into(),
        r#"{"event":"client-x","channel":"","data":{}}"#.into(),
        r#"{"event":"client-x","channel":"private-nope","data":{}}"#.into(),
        r#"{"event":"pusher:ping","data":"\ud800"}"#.into(),
        format!(r#"{{"event":"{huge}"}}"#),
        format!(r#"{{"event":"pusher:subscribe","data":{{"channel":"{huge}"}}}}"#),
        format!(r#"{{"event":"pusher:subscribe","data":{{"channel":"private-{huge}","auth":"{huge}"}}}}"#),
        format!(r#"{{"event":"client-{huge}","channel":"private-x","data":{{}}}}"#),
        format!(r#"{{"event":"pusher:signin","data":{{"auth":"{huge}","user_data":"{huge}"}}}}"#),
        "[".repeat(10_000),
        format!("{}{}", "{\"a\":".repeat(5_000), "}".repeat(5_000)),
    ];
    for input in &inputs {
        let shown: String = input.chars().take(80).collect();
        let control = client.send_text(input);
        for outbound in client.outbound() {
            match outbound {
                Outbound::Frame(frame) => {
                    let frame: Value = serde_json::from_str(frame.text()).unwrap();
                    let event = frame["event"].as_str().unwrap_or_default().to_owned();
                    assert!(
                        event == "pusher:error" || event == "pusher:subscription_error",
                        "{shown}: unexpected answer {frame}"
                    );
                }
                other => panic!("{shown}: unexpected {other:?}"),
            }
        }
        // Only a bad signin closes the connection.
        if input.contains("pusher:signin") {
            assert!(matches!(control, Control::Close(4009, _)), "{shown}");
        } else {
            assert_eq!(control, Control::Continue, "{shown}");
        }
    }
    // The connection still works.
    client.send(json!({ "event": "pusher:ping", "data": {} }));
    assert_eq!(client.only_frame()["event"], "pusher:pong");
    assert_eq!(app.connection_count(), 1);
}

#[test]
fn invalid_json_is_answered_with_pusher_error() {
    let app = app();
    let mut client = Client::new(&app);
    for input in ["not json", "[]", r#"{"event":1}"#, "{}"] {
        client.send_text(input);
        assert_error(&client.only_frame(), None);
    }
}

#[test]
fn subscribe_with_garbage_data_is_answered_with_pusher_error() {
    let app = app();
    let mut client = Client::new(&app);
    client.send(json!({ "event": "pusher:subscribe", "data": "garbage" }));
    assert_error(&client.only_frame(), None);
    client.send(json!({ "event": "pusher:subscribe", "data": { "channel": 5 } }));
    assert_error(&client.only_frame(), None);
}

#[test]
fn unknown_events_are_ignored() {
    let app = app();
    let mut client = Client::new(&app);
    client.send(json!({ "event": "pusher:future-feature", "data": {} }));
    client.send(json!({ "event": "whatever", "data": {} }));
    client.assert_nothing_queued();
}

// ---------------------------------------------------------------- disconnect

#[test]
fn disconnect_of_the_last_socket_vacates_the_channel() {
    let app = app();
    let mut a = Client::new(&app);
    let mut b = Client::new(&app);
    a.subscribe_public("news");
    b.subscribe_public("news");
    app.disconnect(&a.socket_id);
    assert_eq!(app.channel_info("news").occupied, Some(true));
    assert_eq!(app.channel_info("news").subscription_count, Some(1));
    app.disconnect(&b.socket_id);
    assert_eq!(app.channel_info("news").occupied, Some(false));
    assert_eq!(app.channel_info("news").subscription_count, Some(0));
    assert!(app.channels("").is_empty());
    assert_eq!(app.connection_count(), 0);
    assert_eq!(publish(&app, "news", "e", "{}"), 0);
}

#[test]
fn disconnect_removes_the_presence_member_and_tells_the_others() {
    let app = app();
    let mut alice = Client::new(&app);
    let mut bob = Client::new(&app);
    alice.subscribe_presence("presence-room", "alice", None);
    bob.subscribe_presence("presence-room", "bob", None);
    alice.outbound();
    app.disconnect(&bob.socket_id);
    let removed = alice.only_frame();
    assert_eq!(removed["event"], "pusher_internal:member_removed");
    assert_eq!(data_of(&removed)["user_id"], "bob");
    assert_eq!(app.presence_users("presence-room"), ["alice"]);
    assert_eq!(app.presence_members("presence-room").len(), 1);
    assert_eq!(app.channel_info("presence-room").user_count, Some(1));
}

#[test]
fn disconnect_signs_the_user_out() {
    let app = app();
    let mut client = Client::new(&app);
    client.sign_in("42");
    client.outbound();
    app.disconnect(&client.socket_id);
    assert_eq!(publish(&app, "#server-to-user-42", "e", "{}"), 0);
    assert_eq!(app.terminate_user("42"), 0);
}

#[test]
fn disconnecting_twice_is_harmless() {
    let app = app();
    let mut a = Client::new(&app);
    a.subscribe_public("news");
    app.disconnect(&a.socket_id);
    app.disconnect(&a.socket_id);
    assert_eq!(app.connection_count(), 0);
    // The connection is gone: its outbox is finished.
    assert_eq!(a.outbox.try_recv(), Err(TryRecvError::Finished));
}

// ---------------------------------------------------------------- publish

#[test]
fn publish_leaves_out_the_excluded_socket() {
    let app = app();
    let mut sender = Client::new(&app);
    let mut other = Client::new(&app);
    sender.subscribe_public("news");
    other.subscribe_public("news");
    let frame = protocol::frame("update", Some("news"), "{}");
    assert_eq!(app.publish("news", &frame, Some(&sender.socket_id)), 1);
    sender.assert_nothing_queued();
    assert_eq!(other.only_frame()["event"], "update");
}

#[test]
fn slow_consumer_is_disconnected_and_others_are_unaffected() {
    let app = app();
    let mut slow = Client::new(&app);
    let mut fast = Client::new(&app);
    slow.subscribe_public("firehose");
    fast.subscribe_public("firehose");
    // The slow connection's outbox already holds nothing (read above); it
    // now never reads again.
    let total = OUTBOX_CAPACITY + 10;
    let mut received = 0;
    for i in 0..total {
        publish(&app, "firehose", "tick", &i.to_string());
        received += fast.frames().len();
    }
    assert_eq!(received, total, "the fast reader got every event");
    assert_eq!(app.connection_count(), 1, "the slow one is gone");
    assert!(!app.is_subscribed(&slow.socket_id, "firehose"));
    assert_eq!(app.channel_info("firehose").subscription_count, Some(1));

    // The slow one keeps what was queued, then is told why it is closed,
    // and its outbox takes nothing more.
    let mut queued = 0;
    let close = loop {
        match slow.outbox.try_recv() {
            Ok(Outbound::Frame(_)) => queued += 1,
            Ok(other) => break other,
            Err(e) => panic!("no close queued: {e:?}"),
        }
    };
    assert_eq!(queued, OUTBOX_CAPACITY);
    assert!(matches!(close, Outbound::Close(4100, _)), "{close:?}");
    assert_eq!(slow.outbox.try_recv(), Err(TryRecvError::Finished));
    assert_eq!(publish(&app, "firehose", "tick", "{}"), 1);
}

#[test]
fn slow_presence_member_is_disconnected_and_the_others_told_it_left() {
    let app = app();
    let mut slow = Client::new(&app);
    let mut fast = Client::new(&app);
    slow.subscribe_presence("presence-firehose", "slow", None);
    fast.subscribe_presence("presence-firehose", "fast", None);
    let mut seen = Vec::new();
    for i in 0..=OUTBOX_CAPACITY {
        publish(&app, "presence-firehose", "tick", &i.to_string());
        seen.extend(fast.frames());
    }
    assert_eq!(app.connection_count(), 1);
    assert_eq!(app.presence_users("presence-firehose"), ["fast"]);
    let removed: Vec<&Value> = seen
        .iter()
        .filter(|f| f["event"] == "pusher_internal:member_removed")
        .collect();
    assert_eq!(removed.len(), 1, "the others are told the slow one left");
    assert_eq!(data_of(removed[0])["user_id"], "slow");
    assert_eq!(
        seen.iter().filter(|f| f["event"] == "tick").count(),
        OUTBOX_CAPACITY + 1
    );
}

#[test]
fn full_outbox_on_member_added_disconnects_rather_than_drops_the_frame() {
    let app = app();
    let mut slow = Client::new(&app);
    slow.subscribe_presence("presence-room", "slow", None);
    // Fill the outbox exactly: no overflow yet.
    for i in 0..OUTBOX_CAPACITY {
        publish(&app, "presence-room", "tick", &i.to_string());
    }
    assert_eq!(app.connection_count(), 1);
    // A member joins; its member_added does not fit the slow outbox.
    let mut joiner = Client::new(&app);
    let member = PresenceMember::<Value> {
        user_id: "joiner",
        user_info: None,
    };
    let auth = credentials()
        .authorize_presence_channel(&joiner.socket_id, "presence-room", &member)
        .unwrap();
    joiner.subscribe_frame(json!({
        "channel": "presence-room",
        "auth": auth.auth,
        "channel_data": auth.channel_data,
    }));
    assert_eq!(
        app.connection_count(),
        1,
        "the slow connection must be dropped, not left with a member_added missing"
    );
    // The joiner saw the slow member, then saw it leave.
    let frames = joiner.frames();
    assert_eq!(frames[0]["event"], "pusher_internal:subscription_succeeded");
    assert_eq!(frames[1]["event"], "pusher_internal:member_removed");
    assert_eq!(frames[1]["data"], r#"{"user_id":"slow"}"#);
    assert_eq!(
        app.presence_users("presence-room"),
        vec!["joiner".to_owned()]
    );
}

#[test]
fn concurrent_joins_publishes_and_leaves_leave_a_consistent_state() {
    let app = client_events_app();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let app = app.clone();
            std::thread::spawn(move || {
                for round in 0..50 {
                    let mut client = Client::new(&app);
                    let user = format!("user-{}", (t + round) % 5);
                    let member = PresenceMember::<Value> {
                        user_id: &user,
                        user_info: None,
                    };
                    let auth = credentials()
                        .authorize_presence_channel(&client.socket_id, "presence-shared", &member)
                        .unwrap();
                    client.subscribe_frame(json!({
                        "channel": "presence-shared",
                        "auth": auth.auth,
                        "channel_data": auth.channel_data,
                    }));
                    client.subscribe_frame(json!({ "channel": "shared" }));
                    publish(&app, "shared", "tick", "{}");
                    client.client_event("presence-shared", "client-hi", json!(round));
                    client.outbound();
                    app.disconnect(&client.socket_id);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("no thread panicked");
    }
    assert_eq!(app.connection_count(), 0);
    assert!(app.channels("").is_empty());
    assert!(app.presence_users("presence-shared").is_empty());
    assert_eq!(app.channel_info("presence-shared").user_count, Some(0));
}

/// Subscribes `client` to `channel` while another thread publishes to it;
/// answers how many frames came before the subscription's answer (all of
/// them when the answer never came).
fn events_before_subscription_succeeded(client: &mut Client, channel: &str) -> usize {
    client.subscribe_frame(json!({ "channel": channel }));
    // Publishers may fill the outbox before it is read: the connection is
    // then closed as too slow, which is not what this counts.
    let events: Vec<String> = client
        .outbound()
        .into_iter()
        .filter_map(|outbound| match outbound {
            Outbound::Frame(frame) => {
                let frame: Value = serde_json::from_str(frame.text()).expect("frames are JSON");
                Some(frame["event"].as_str().unwrap_or_default().to_owned())
            }
            _ => None,
        })
        .collect();
    events
        .iter()
        .position(|event| event == "pusher_internal:subscription_succeeded")
        .unwrap_or(events.len())
}

#[test]
fn subscription_succeeded_comes_before_any_event_of_the_channel() {
    let app = app();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publishers: Vec<_> = (0..3)
        .map(|_| {
            let app = app.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let frame = protocol::frame("tick", Some("race"), "{}");
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    app.publish("race", &frame, None);
                }
            })
        })
        .collect();
    let mut early = 0;
    for _ in 0..20_000 {
        let mut client = Client::new(&app);
        early += events_before_subscription_succeeded(&mut client, "race");
        app.disconnect(&client.socket_id);
        if early > 0 {
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for publisher in publishers {
        publisher.join().unwrap();
    }
    assert_eq!(
        early, 0,
        "events of the channel arrived before pusher_internal:subscription_succeeded"
    );
}

// ---------------------------------------------------------------- limits

/// The refusal of a limit: a coded `pusher:error` and the channel's
/// `pusher:subscription_error`, nothing else; the connection stays open.
fn assert_refused_by_limit(
    client: &mut Client,
    control: Control,
    channel: &str,
    code: u16,
    status: u16,
) {
    assert_eq!(control, Control::Continue, "the connection stays open");
    let frames = client.frames();
    assert_eq!(frames.len(), 2, "{frames:?}");
    assert_error(&frames[0], Some(code));
    assert_subscription_error(&frames[1], channel, status);
}

#[test]
fn public_channels_are_refused_with_a_coded_error_when_turned_off_as_the_inbox_does() {
    let app = app_with(|c| c.public_channels = false);
    let mut client = Client::new(&app);
    let control = client.subscribe_frame(json!({ "channel": "news" }));
    assert_refused_by_limit(
        &mut client,
        control,
        "news",
        protocol::code::PUBLIC_CHANNELS_DISABLED,
        403,
    );
    assert!(!app.is_subscribed(&client.socket_id, "news"));
    assert_eq!(
        app.channel_info("news").occupied,
        Some(false),
        "nothing kept"
    );
    assert_eq!(app.metrics().subscriptions_refused.get(), 1);
    // The connection still works, and authorized channels are accepted.
    client.subscribe_private("private-orders");
    let member = client.subscribe_presence("presence-room", "alice", None);
    assert_eq!(member["event"], "pusher_internal:subscription_succeeded");
}

#[test]
fn public_channels_are_accepted_by_default_as_on_pusher() {
    let app = app();
    assert!(app.config().public_channels);
    let mut client = Client::new(&app);
    client.subscribe_public("news");
}

#[test]
fn the_subscription_past_the_channel_cap_is_refused_and_the_others_are_kept() {
    let app = app_with(|c| c.max_channels_per_connection = 3);
    let mut client = Client::new(&app);
    client.subscribe_public("one");
    client.subscribe_private("private-two");
    client.subscribe_presence("presence-three", "alice", None);
    let control = client.subscribe_frame(json!({ "channel": "four" }));
    assert_refused_by_limit(
        &mut client,
        control,
        "four",
        protocol::code::TOO_MANY_CHANNELS,
        400,
    );
    assert_eq!(
        app.channel_info("four").occupied,
        Some(false),
        "nothing added"
    );
    for channel in ["one", "private-two", "presence-three"] {
        assert!(
            app.is_subscribed(&client.socket_id, channel),
            "{channel} kept"
        );
    }
    assert_eq!(publish(&app, "one", "e", "{}"), 1);
    client.frames();
    // Leaving one makes room for another.
    client.send(json!({ "event": "pusher:unsubscribe", "data": { "channel": "one" } }));
    client.subscribe_public("four");
}

#[test]
fn the_default_channel_cap_is_a_hundred() {
    let app = app();
    let mut client = Client::new(&app);
    for i in 0..100 {
        client.subscribe_public(&format!("ch-{i}"));
    }
    let control = client.subscribe_frame(json!({ "channel": "ch-100" }));
    assert_refused_by_limit(
        &mut client,
        control,
        "ch-100",
        protocol::code::TOO_MANY_CHANNELS,
        400,
    );
}
