//! The embedded default: no `PUSHER_*` variables, the realtime server
//! mounted on api-server's own port. A small Pusher protocol 7 client
//! (WebSocket) checks that what the API publishes reaches subscribers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{json_body, spawn_app, spawn_instance, spawn_with, Backend, Options, TestApp};
use futures_util::{SinkExt, StreamExt};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as Frame;

backend_tests!(
    realtime_config_points_pusher_js_at_our_own_port,
    health_says_embedded,
    embedded_server_answers_signed_http_api_calls_on_the_same_port,
    embedded_credentials_are_kept_in_the_database,
    instances_starting_at_once_share_one_embedded_app,
    websocket_subscriber_receives_what_the_api_publishes,
    x_socket_id_excludes_the_senders_own_connection,
    presence_subscribers_are_the_viewers_of_a_contact,
    metrics_include_the_embedded_servers,
);

async fn realtime_config_points_pusher_js_at_our_own_port(backend: Backend) {
    let app = spawn_with(Options {
        fixed_port: true,
        ..Options::embedded(backend)
    })
    .await;
    let res = app.get_anon("/api/realtime/config").await;
    assert_eq!(res.status, 200, "{}", res.text);
    let config = &res.body;
    assert_eq!(config["key"], app.state.realtime.credentials.key());
    assert_eq!(config["wsHost"], "127.0.0.1");
    assert_eq!(config["wsPort"], app.port);
    assert_eq!(config["forceTLS"], false);
    assert_eq!(
        config["channelAuthorization"]["endpoint"],
        "/api/pusher/auth"
    );
    assert_eq!(
        config["userAuthentication"]["endpoint"],
        "/api/pusher/user-auth"
    );
    let secret = app.state.realtime.credentials.secret().expose().to_owned();
    assert!(
        !res.text.contains(&secret),
        "the secret stays on the server"
    );
}

/// `PORT=0` is documented as "picks a free port, for tests"; the default
/// `PUBLIC_URL` is then `http://HOST:0` and pusher-js is told `wsPort: 0`.
#[actix_web::test]
async fn realtime_config_ws_port_is_the_bound_port_when_port_is_0() {
    let app = spawn_app(Backend::Sqlite).await;
    let res = app.get_anon("/api/realtime/config").await;
    assert_eq!(res.body["wsPort"], app.port, "{}", res.text);
}

async fn health_says_embedded(backend: Backend) {
    let app = spawn_app(backend).await;
    let res = app.get_anon("/api/health").await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.body,
        json!({ "status": "ok", "database": "ok", "realtime": "embedded" })
    );
}

fn sdk_for(app: &TestApp) -> realtime_core::Pusher {
    let credentials = &app.state.realtime.credentials;
    let config = realtime_core::Config::builder(
        credentials.app_id(),
        credentials.key(),
        credentials.secret().clone(),
    )
    .host("127.0.0.1")
    .port(app.port)
    .scheme(realtime_core::Scheme::Http)
    .build()
    .unwrap();
    realtime_core::Pusher::new(config).unwrap()
}

async fn embedded_server_answers_signed_http_api_calls_on_the_same_port(backend: Backend) {
    let app = spawn_app(backend).await;
    let pusher = sdk_for(&app);
    let channels = pusher.channels().send().await.unwrap();
    assert!(channels.channels.is_empty(), "{channels:?}");
    pusher
        .trigger("private-contact-1", "ping", &json!({ "n": 1 }))
        .send()
        .await
        .unwrap();
    // A wrong secret is refused by the same server.
    let credentials = &app.state.realtime.credentials;
    let wrong = realtime_core::Config::builder(credentials.app_id(), credentials.key(), "wrong")
        .host("127.0.0.1")
        .port(app.port)
        .scheme(realtime_core::Scheme::Http)
        .build()
        .unwrap();
    let refused = realtime_core::Pusher::new(wrong)
        .unwrap()
        .channels()
        .send()
        .await;
    assert!(
        matches!(refused, Err(realtime_core::Error::Http { status: 401, .. })),
        "{refused:?}"
    );
    // The WebSocket endpoint exists (a plain GET is refused, not unknown).
    let plain = app
        .get_anon(&format!("/app/{}?protocol=7", credentials.key()))
        .await;
    assert_ne!(plain.status, 404, "{}", plain.text);
}

async fn embedded_credentials_are_kept_in_the_database(backend: Backend) {
    let first = spawn_app(backend).await;
    let second = spawn_instance(
        first.db.clone(),
        &Options::embedded(backend),
        Some(first.fx.clone()),
    )
    .await;
    let (a, b) = (
        &first.state.realtime.credentials,
        &second.state.realtime.credentials,
    );
    assert_eq!(a.app_id(), b.app_id());
    assert_eq!(a.key(), b.key());
    assert_eq!(a.secret().expose(), b.secret().expose());
    assert!(a.secret().expose().len() >= 16);
    assert_ne!(first.port, second.port);
}

// ---------------------------------------------------------------- a Pusher client

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Client {
    socket: Socket,
    socket_id: String,
}

impl Client {
    async fn connect(app: &TestApp) -> Self {
        let url = format!(
            "ws://127.0.0.1:{}/app/{}?protocol=7&client=js&version=8.4.0",
            app.port,
            app.state.realtime.credentials.key()
        );
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut client = Client {
            socket,
            socket_id: String::new(),
        };
        let established = client.next_event().await.unwrap();
        assert_eq!(established["event"], "pusher:connection_established");
        let data: Value = serde_json::from_str(established["data"].as_str().unwrap()).unwrap();
        client.socket_id = data["socket_id"].as_str().unwrap().to_owned();
        client
    }

    /// The next event, or `None` after `timeout` without one.
    async fn next_event_within(&mut self, timeout: Duration) -> Option<Value> {
        loop {
            let frame = tokio::time::timeout(timeout, self.socket.next())
                .await
                .ok()??
                .unwrap();
            if let Frame::Text(text) = frame {
                let event: Value = serde_json::from_str(text.as_str()).unwrap();
                if event["event"] == "pusher:ping" {
                    continue;
                }
                return Some(event);
            }
        }
    }

    async fn next_event(&mut self) -> Option<Value> {
        self.next_event_within(Duration::from_secs(5)).await
    }

    async fn send(&mut self, event: Value) {
        self.socket
            .send(Frame::Text(event.to_string().into()))
            .await
            .unwrap();
    }

    /// Subscribes with an authorization from `/api/pusher/auth`.
    async fn subscribe(&mut self, app: &TestApp, token: &str, channel: &str) {
        let auth = app
            .send(
                app.req(Method::POST, "/api/pusher/auth")
                    .bearer_auth(token)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(format!(
                        "socket_id={}&channel_name={channel}",
                        self.socket_id
                    )),
            )
            .await;
        assert_eq!(auth.status, 200, "{}", auth.text);
        let mut data = json!({ "channel": channel, "auth": auth.body["auth"] });
        if let Some(channel_data) = auth.body.get("channel_data") {
            data["channel_data"] = channel_data.clone();
        }
        self.send(json!({ "event": "pusher:subscribe", "data": data }))
            .await;
        let answer = self.next_event().await.unwrap();
        assert_eq!(
            answer["event"], "pusher_internal:subscription_succeeded",
            "{answer}"
        );
        assert_eq!(answer["channel"], channel);
    }

    /// The next event named `name` (others are skipped).
    async fn expect(&mut self, name: &str) -> Value {
        loop {
            let event = self
                .next_event()
                .await
                .unwrap_or_else(|| panic!("no {name} within 5 s"));
            if event["event"] == name {
                return event;
            }
        }
    }
}

fn data_of(event: &Value) -> Value {
    serde_json::from_str(event["data"].as_str().unwrap()).unwrap()
}

async fn websocket_subscriber_receives_what_the_api_publishes(backend: Backend) {
    let app = spawn_app(backend).await;
    let contact = app.contact("+14155550150").await;
    let mut bob = Client::connect(&app).await;
    bob.subscribe(
        &app,
        &app.fx.bob.token,
        &format!("private-contact-{contact}"),
    )
    .await;
    bob.subscribe(
        &app,
        &app.fx.bob.token,
        &format!("private-user-{}", app.fx.bob.id),
    )
    .await;
    // Unauthorized subscriptions are refused by the server itself.
    bob.send(json!({
        "event": "pusher:subscribe",
        "data": { "channel": "private-contact-1", "auth": "forged:0000" }
    }))
    .await;
    let refused = bob.next_event().await.unwrap();
    assert_eq!(refused["event"], "pusher:subscription_error", "{refused}");

    let message = app
        .send_message(&app.fx.alice.token, &contact, "Hello Bob's screen")
        .await;
    let created = bob.expect("message:created").await;
    assert_eq!(created["channel"], format!("private-contact-{contact}"));
    assert_eq!(data_of(&created), json!({ "message": message }));
    let updated = bob.expect("contact:updated").await;
    assert_eq!(
        updated["channel"],
        format!("private-user-{}", app.fx.bob.id)
    );
    assert_eq!(
        data_of(&updated)["contact"]["lastMessage"]["id"],
        message["id"]
    );

    let note = app
        .post(
            &format!("/api/contacts/{contact}/notes"),
            &app.fx.alice.token,
            json!({ "body": "note for bob" }),
        )
        .await;
    let event = bob.expect("note:created").await;
    assert_eq!(data_of(&event), json!({ "note": note.body["note"] }));

    let inbound = app.insert_inbound(app.fx.team, &contact, "reply");
    let read = app
        .post(
            &format!("/api/messages/{inbound}/read"),
            &app.fx.alice.token,
            json!({}),
        )
        .await;
    let event = bob.expect("message:read").await;
    assert_eq!(data_of(&event), json!({ "message": read.body["message"] }));
}

async fn x_socket_id_excludes_the_senders_own_connection(backend: Backend) {
    let app = spawn_app(backend).await;
    let contact = app.contact("+14155550151").await;
    let channel = format!("private-contact-{contact}");
    let mut alice = Client::connect(&app).await;
    alice.subscribe(&app, &app.fx.alice.token, &channel).await;
    let mut bob = Client::connect(&app).await;
    bob.subscribe(&app, &app.fx.bob.token, &channel).await;
    let res = app
        .send(
            json_body(
                app.req(Method::POST, "/api/messages/send")
                    .bearer_auth(&app.fx.alice.token),
                &json!({ "contactId": contact, "body": "typed here" }),
            )
            .header("x-socket-id", alice.socket_id.clone()),
        )
        .await;
    assert_eq!(res.status, 201);
    let at_bob = bob.expect("message:created").await;
    assert_eq!(data_of(&at_bob)["message"]["id"], res.body["message"]["id"]);
    // Alice's own tab got nothing; the next thing she sees is the next message.
    let second = app
        .send_message(&app.fx.bob.token, &contact, "bob answers")
        .await;
    let at_alice = alice.expect("message:created").await;
    assert_eq!(data_of(&at_alice)["message"]["id"], second["id"]);
}

async fn viewers(app: &TestApp, contact: &str) -> Value {
    let res = app
        .get(
            &format!("/api/contacts/{contact}/viewers"),
            &app.fx.bob.token,
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    res.body["users"].clone()
}

async fn presence_subscribers_are_the_viewers_of_a_contact(backend: Backend) {
    let app = spawn_app(backend).await;
    let contact = app.contact("+14155550152").await;
    assert_eq!(viewers(&app, &contact).await, json!([]));
    let mut alice = Client::connect(&app).await;
    alice
        .subscribe(
            &app,
            &app.fx.alice.token,
            &format!("presence-contact-{contact}"),
        )
        .await;
    assert_eq!(
        viewers(&app, &contact).await,
        json!([{ "id": app.fx.alice.sid(), "name": "Alice Agent" }])
    );
    alice.socket.close(None).await.unwrap();
    drop(alice);
    let mut gone = false;
    for _ in 0..100 {
        if viewers(&app, &contact).await == json!([]) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "a closed connection stops viewing");
}

async fn metrics_include_the_embedded_servers(backend: Backend) {
    let app = spawn_app(backend).await;
    let contact = app.contact("+14155550153").await;
    app.send_message(&app.fx.alice.token, &contact, "x").await;
    let mut text = String::new();
    // Published, then deleted when the dispatcher's round commits.
    for _ in 0..100 {
        text = app.metrics().await;
        if common::metric(&text, "events_published_total") == Some(2.0)
            && common::metric(&text, "outbox_depth") == Some(0.0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        common::metric(&text, "events_published_total"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(common::metric(&text, "outbox_depth"), Some(0.0));
    assert!(text.contains("pusher_free_daily_quota 200000"));
    assert!(text.contains("http_requests_total{"));
}

/// Instances started at once on an empty database (three behind a balancer,
/// say) must all take the one embedded app: each generating its own signed
/// with a secret the others did not know.
async fn instances_starting_at_once_share_one_embedded_app(backend: Backend) {
    use api_server::models::realtime_app::RealtimeApp;
    let db = common::TestDb::new(backend);
    api_server::db::migrate(&db.url).unwrap();
    let starts: Vec<_> = (0..3)
        .map(|n| {
            let db = db.clone();
            std::thread::spawn(move || {
                let mut conn = db.connect();
                RealtimeApp::get_or_create(&mut conn, || {
                    // Slow to generate: the others start meanwhile.
                    std::thread::sleep(Duration::from_millis(300));
                    (
                        format!("app-{n}"),
                        format!("key-{n}"),
                        format!("secret-{n}"),
                    )
                })
                .unwrap()
                .app_id
            })
        })
        .collect();
    let ids: Vec<String> = starts.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
}
