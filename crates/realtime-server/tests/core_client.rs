//! realtime-core's own `Pusher` HTTP client against a real running
//! realtime-server (an actix `HttpServer` on a free local port): each crate is
//! checked against a peer that is not itself. The channels' state is made
//! through the served `App`, whose connections are driven without a socket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Client, APP_ID, KEY, SECRET};

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{web, HttpServer};
use realtime_core::crypto::decrypt;
use realtime_core::{
    ChannelInfo, Config, Credentials, Error, Event, MasterKey, PresenceMember, PresenceUser,
    Pusher, RetryPolicy, ValidationError,
};
use realtime_server::connection::Control;
use realtime_server::outbox::Outbound;
use realtime_server::{App, AppConfig, Server};
use serde_json::{json, Value};

const MASTER_KEY: &str = "a7QyXV8eYrtJBehbuix68XCPO6+LrpnNNReWOkaXW7A=";

/// A realtime-server listening on 127.0.0.1 at a port of the system's choice.
struct Running {
    addr: SocketAddr,
    server: web::Data<Server>,
    handle: ServerHandle,
}

impl Running {
    async fn start() -> Self {
        let server = web::Data::new(Server::new(vec![AppConfig::new(Credentials::new(
            APP_ID, KEY, SECRET,
        ))]));
        let for_workers = server.clone();
        let http = HttpServer::new(move || {
            actix_web::App::new().configure(Server::configure(for_workers.clone()))
        })
        .workers(1)
        .disable_signals()
        .bind(("127.0.0.1", 0))
        .expect("bind a free port");
        let addr = http.addrs()[0];
        let running = http.run();
        let handle = running.handle();
        actix_web::rt::spawn(running);
        Running {
            addr,
            server,
            handle,
        }
    }

    fn app(&self) -> Arc<App> {
        self.server.app_by_id(APP_ID).expect("app 1 is served")
    }

    fn client_with(&self, secret: &str) -> Pusher {
        let config = Config::builder(APP_ID, KEY, secret)
            .host("127.0.0.1")
            .port(self.addr.port())
            .use_tls(false)
            .retry(RetryPolicy::never())
            .encryption_master_key_base64(MASTER_KEY)
            .build()
            .expect("valid config");
        Pusher::new(config).expect("client")
    }

    fn client(&self) -> Pusher {
        self.client_with(SECRET)
    }

    async fn stop(self) {
        self.handle.stop(false).await;
    }
}

impl Client {
    /// The events (not protocol frames) queued now.
    fn events(&mut self) -> Vec<Value> {
        self.frames()
            .into_iter()
            .filter(|f| {
                let event = f["event"].as_str().unwrap_or_default();
                !event.starts_with("pusher:") && !event.starts_with("pusher_internal:")
            })
            .collect()
    }

    fn expect_succeeded(&mut self, channel: &str) {
        let frames = self.frames();
        assert!(
            frames.iter().any(|f| {
                f["event"] == "pusher_internal:subscription_succeeded" && f["channel"] == channel
            }),
            "{frames:?}"
        );
    }

    fn subscribe(&mut self, channel: &str) {
        self.send(json!({ "event": "pusher:subscribe", "data": { "channel": channel } }));
        self.expect_succeeded(channel);
    }

    /// Subscribes with the authorization realtime-core's client signs.
    fn subscribe_private(&mut self, pusher: &Pusher, channel: &str) {
        let auth = pusher.authorize_channel(&self.socket_id, channel).unwrap();
        self.send(json!({
            "event": "pusher:subscribe",
            "data": { "channel": channel, "auth": auth.auth },
        }));
        self.expect_succeeded(channel);
    }

    fn subscribe_presence(&mut self, pusher: &Pusher, channel: &str, user_id: &str) {
        let info = json!({ "name": user_id });
        let auth = pusher
            .authorize_presence_channel(
                &self.socket_id,
                channel,
                &PresenceMember {
                    user_id,
                    user_info: Some(&info),
                },
            )
            .unwrap();
        self.send(json!({
            "event": "pusher:subscribe",
            "data": { "channel": channel, "auth": auth.auth, "channel_data": auth.channel_data },
        }));
        self.expect_succeeded(channel);
    }

    fn sign_in(&mut self, pusher: &Pusher, user_id: &str) {
        let auth = pusher
            .authenticate_user(&self.socket_id, &json!({ "id": user_id }))
            .unwrap();
        let control = self.send(json!({
            "event": "pusher:signin",
            "data": { "auth": auth.auth, "user_data": auth.user_data },
        }));
        assert_eq!(control, Control::Continue);
        assert_eq!(self.frames()[0]["event"], "pusher:signin_success");
    }
}

#[actix_rt::test]
async fn trigger_on_one_channel_reaches_its_subscriber() {
    let running = Running::start().await;
    let app = running.app();
    let mut subscriber = Client::new(&app);
    let mut bystander = Client::new(&app);
    subscriber.subscribe("news");
    bystander.subscribe("sports");
    let pusher = running.client();

    let answer = pusher
        .trigger("news", "headline", &json!({ "title": "hello" }))
        .send()
        .await
        .unwrap();
    assert!(answer.channels.is_empty());
    let events = subscriber.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["event"], "headline");
    assert_eq!(events[0]["channel"], "news");
    assert_eq!(events[0]["data"], r#"{"title":"hello"}"#);
    assert!(bystander.events().is_empty());
    running.stop().await;
}

#[actix_rt::test]
async fn trigger_on_several_channels_reaches_each() {
    let running = Running::start().await;
    let app = running.app();
    let pusher = running.client();
    let mut public = Client::new(&app);
    let mut private = Client::new(&app);
    public.subscribe("news");
    private.subscribe_private(&pusher, "private-orders");

    pusher
        .trigger_json(["news", "private-orders", "nobody"], "update", "{}")
        .send()
        .await
        .unwrap();
    assert_eq!(public.events()[0]["channel"], "news");
    assert_eq!(private.events()[0]["channel"], "private-orders");
    running.stop().await;
}

#[actix_rt::test]
async fn trigger_with_info_answers_the_channels_counts() {
    let running = Running::start().await;
    let app = running.app();
    let pusher = running.client();
    let mut alice = Client::new(&app);
    let mut alice_again = Client::new(&app);
    let mut bob = Client::new(&app);
    alice.subscribe_presence(&pusher, "presence-room", "alice");
    alice_again.subscribe_presence(&pusher, "presence-room", "alice");
    bob.subscribe_presence(&pusher, "presence-room", "bob");

    let answer = pusher
        .trigger_json("presence-room", "e", "{}")
        .info(["user_count", "subscription_count"])
        .send()
        .await
        .unwrap();
    assert_eq!(
        answer.channels["presence-room"],
        ChannelInfo {
            occupied: None,
            user_count: Some(2),
            subscription_count: Some(3),
        }
    );
    running.stop().await;
}

#[actix_rt::test]
async fn trigger_excluding_a_socket_skips_only_that_connection() {
    let running = Running::start().await;
    let app = running.app();
    let mut sender = Client::new(&app);
    let mut other = Client::new(&app);
    sender.subscribe("news");
    other.subscribe("news");
    let pusher = running.client();
    pusher
        .trigger_json("news", "update", "{}")
        .exclude(sender.socket_id.clone())
        .send()
        .await
        .unwrap();
    assert!(sender.events().is_empty());
    assert_eq!(other.events().len(), 1);
    running.stop().await;
}

#[actix_rt::test]
async fn trigger_on_encrypted_channel_delivers_ciphertext_the_subscriber_can_open() {
    let running = Running::start().await;
    let app = running.app();
    let pusher = running.client();
    let mut subscriber = Client::new(&app);
    subscriber.subscribe_private(&pusher, "private-encrypted-vault");
    pusher
        .trigger("private-encrypted-vault", "secret", &json!({ "pin": 1234 }))
        .send()
        .await
        .unwrap();
    let events = subscriber.events();
    assert_eq!(events.len(), 1);
    let sent = events[0]["data"].as_str().unwrap();
    assert!(!sent.contains("1234"), "the server only sees ciphertext");
    let key = MasterKey::from_base64(MASTER_KEY).unwrap();
    let plain = decrypt(&key, "private-encrypted-vault", sent).unwrap();
    assert_eq!(plain, r#"{"pin":1234}"#);
    running.stop().await;
}

#[actix_rt::test]
async fn trigger_batch_delivers_each_event_and_answers_info() {
    let running = Running::start().await;
    let app = running.app();
    let pusher = running.client();
    let mut a = Client::new(&app);
    let mut b = Client::new(&app);
    a.subscribe("one");
    b.subscribe_presence(&pusher, "presence-two", "bob");

    let answer = pusher
        .trigger_batch(&[
            Event::from_json("one", "first", "1").info(["subscription_count"]),
            Event::from_json("presence-two", "second", "2").info(["user_count"]),
            Event::from_json("three", "third", "3"),
        ])
        .await
        .unwrap();
    assert_eq!(
        answer.batch,
        [
            ChannelInfo {
                subscription_count: Some(1),
                ..ChannelInfo::default()
            },
            ChannelInfo {
                user_count: Some(1),
                ..ChannelInfo::default()
            },
            ChannelInfo::default(),
        ]
    );
    let first = a.events();
    assert_eq!(first.len(), 1);
    assert_eq!(
        (&first[0]["event"], &first[0]["data"]),
        (&json!("first"), &json!("1"))
    );
    let second = b.events();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0]["event"], "second");
    running.stop().await;
}

#[actix_rt::test]
async fn trigger_batch_without_info_answers_an_empty_batch() {
    let running = Running::start().await;
    let app = running.app();
    let mut a = Client::new(&app);
    a.subscribe("one");
    let pusher = running.client();
    let answer = pusher
        .trigger_batch(&[Event::from_json("one", "e", "1")])
        .await
        .unwrap();
    assert!(answer.batch.is_empty());
    assert_eq!(a.events().len(), 1);
    running.stop().await;
}

#[actix_rt::test]
async fn channels_query_lists_occupied_channels_with_counts() {
    let running = Running::start().await;
    let app = running.app();
    let pusher = running.client();
    let mut a = Client::new(&app);
    let mut b = Client::new(&app);
    a.subscribe("news");
    a.subscribe_presence(&pusher, "presence-one", "alice");
    b.subscribe_presence(&pusher, "presence-one", "bob");
    b.sign_in(&pusher, "bob");

    let all = pusher.channels().send().await.unwrap();
    let mut names: Vec<&String> = all.channels.keys().collect();
    names.sort();
    assert_eq!(
        names,
        ["news", "presence-one"],
        "user channels are not listed"
    );

    let presence = pusher
        .channels()
        .filter_by_prefix("presence-")
        .info(["user_count", "subscription_count"])
        .send()
        .await
        .unwrap();
    assert_eq!(presence.channels.len(), 1);
    assert_eq!(
        presence.channels["presence-one"],
        ChannelInfo {
            occupied: None,
            user_count: Some(2),
            subscription_count: Some(2),
        }
    );
    running.stop().await;
}

#[actix_rt::test]
async fn channels_query_for_user_count_without_presence_prefix_is_refused_by_the_server() {
    let running = Running::start().await;
    let pusher = running.client();
    let error = pusher
        .channels()
        .info(["user_count"])
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Http { status: 400, body } if body.contains("presence")),
        "{error:?}"
    );
    running.stop().await;
}

#[actix_rt::test]
async fn channel_query_reports_the_channels_state() {
    let running = Running::start().await;
    let app = running.app();
    let pusher = running.client();
    let mut a = Client::new(&app);
    let mut b = Client::new(&app);
    a.subscribe_presence(&pusher, "presence-room", "alice");
    b.subscribe_presence(&pusher, "presence-room", "alice");

    let info = pusher
        .channel("presence-room")
        .info(["user_count", "subscription_count"])
        .send()
        .await
        .unwrap();
    assert_eq!(
        info,
        ChannelInfo {
            occupied: Some(true),
            user_count: Some(1),
            subscription_count: Some(2),
        }
    );
    let empty = pusher.channel("nobody-here").send().await.unwrap();
    assert_eq!(empty.occupied, Some(false));

    app.disconnect(&a.socket_id);
    app.disconnect(&b.socket_id);
    let vacated = pusher.channel("presence-room").send().await.unwrap();
    assert_eq!(vacated.occupied, Some(false));
    running.stop().await;
}

#[actix_rt::test]
async fn channel_query_for_user_count_of_non_presence_channel_is_400() {
    let running = Running::start().await;
    let pusher = running.client();
    let error = pusher
        .channel("news")
        .info(["user_count"])
        .send()
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(400), "{error:?}");
    running.stop().await;
}

#[actix_rt::test]
async fn presence_users_lists_each_member_once() {
    let running = Running::start().await;
    let app = running.app();
    let pusher = running.client();
    let mut a = Client::new(&app);
    let mut b = Client::new(&app);
    let mut c = Client::new(&app);
    a.subscribe_presence(&pusher, "presence-room", "alice");
    b.subscribe_presence(&pusher, "presence-room", "bob");
    c.subscribe_presence(&pusher, "presence-room", "bob");

    let mut users = pusher.presence_users("presence-room").await.unwrap();
    users.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(
        users,
        [
            PresenceUser { id: "alice".into() },
            PresenceUser { id: "bob".into() }
        ]
    );

    app.disconnect(&a.socket_id);
    let users = pusher.presence_users("presence-room").await.unwrap();
    assert_eq!(users, [PresenceUser { id: "bob".into() }]);
    running.stop().await;
}

#[actix_rt::test]
async fn send_to_user_reaches_every_connection_of_the_signed_in_user() {
    let running = Running::start().await;
    let app = running.app();
    let pusher = running.client();
    let mut phone = Client::new(&app);
    let mut laptop = Client::new(&app);
    let mut stranger = Client::new(&app);
    phone.sign_in(&pusher, "42");
    laptop.sign_in(&pusher, "42");
    stranger.sign_in(&pusher, "7");

    pusher
        .send_to_user("42", "notice", &json!({ "text": "hi" }))
        .await
        .unwrap();
    for client in [&mut phone, &mut laptop] {
        let events = client.events();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0]["event"], "notice");
        assert_eq!(events[0]["channel"], "#server-to-user-42");
        assert_eq!(events[0]["data"], r#"{"text":"hi"}"#);
    }
    assert!(stranger.events().is_empty());
    running.stop().await;
}

#[actix_rt::test]
async fn terminate_user_connections_closes_them_with_4009() {
    let running = Running::start().await;
    let app = running.app();
    let pusher = running.client();
    let mut user = Client::new(&app);
    let mut stranger = Client::new(&app);
    user.sign_in(&pusher, "42");
    stranger.sign_in(&pusher, "7");

    pusher.terminate_user_connections("42").await.unwrap();
    let outbound = user.outbound();
    assert!(
        matches!(outbound.as_slice(), [Outbound::Close(4009, _)]),
        "{outbound:?}"
    );
    assert!(stranger.outbound().is_empty());
    running.stop().await;
}

#[actix_rt::test]
async fn wrong_secret_is_refused_with_401() {
    let running = Running::start().await;
    let app = running.app();
    let mut subscriber = Client::new(&app);
    subscriber.subscribe("news");
    let pusher = running.client_with("not-the-secret");

    let error = pusher
        .trigger_json("news", "e", "{}")
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(&error, Error::Http { status: 401, body } if body.contains("signature")),
        "{error:?}"
    );
    assert!(subscriber.events().is_empty());
    let error = pusher.channels().send().await.unwrap_err();
    assert_eq!(error.status(), Some(401));
    running.stop().await;
}

#[actix_rt::test]
async fn data_too_large_is_refused_by_the_client_before_sending() {
    let running = Running::start().await;
    let app = running.app();
    let mut subscriber = Client::new(&app);
    subscriber.subscribe("news");
    let pusher = running.client();

    let error = pusher
        .trigger_json("news", "e", "x".repeat(10 * 1024 + 1))
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Validation(ValidationError::DataTooLarge {
                size: 10_241,
                limit: 10_240
            })
        ),
        "{error:?}"
    );
    assert!(subscriber.events().is_empty());
    assert_eq!(
        running.server.metrics().http_events.get(),
        0,
        "no request reached the server"
    );

    // Exactly the limit goes through, and the server agrees.
    pusher
        .trigger_json("news", "e", "x".repeat(10 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(subscriber.events().len(), 1);
    running.stop().await;
}

#[actix_rt::test]
async fn batch_with_data_too_large_is_refused_by_the_client_before_sending() {
    let running = Running::start().await;
    let pusher = running.client();
    let error = pusher
        .trigger_batch(&[Event::from_json("news", "e", "x".repeat(20_000))])
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            Error::Validation(ValidationError::DataTooLarge { .. })
        ),
        "{error:?}"
    );
    assert_eq!(running.server.metrics().http_events.get(), 0);
    running.stop().await;
}

#[actix_rt::test]
async fn channel_names_with_every_allowed_punctuation_survive_signing_and_routing() {
    let running = Running::start().await;
    let app = running.app();
    let pusher = running.client();
    let public = "a-b_c=d@e,f.g;h";
    let presence = "presence-a-b_c=d@e,f.g;h";
    let mut a = Client::new(&app);
    a.subscribe(public);
    a.subscribe_presence(&pusher, presence, "alice");

    pusher.trigger_json(public, "e", "{}").send().await.unwrap();
    assert_eq!(a.events()[0]["channel"], public);

    let info = pusher
        .channel(presence)
        .info(["user_count"])
        .send()
        .await
        .unwrap();
    assert_eq!(info.user_count, Some(1));
    let users = pusher.presence_users(presence).await.unwrap();
    assert_eq!(users, [PresenceUser { id: "alice".into() }]);
    let listed = pusher
        .channels()
        .filter_by_prefix("presence-a-b_c=d@e,f.g;")
        .info(["user_count"])
        .send()
        .await
        .unwrap();
    assert_eq!(listed.channels[presence].user_count, Some(1));
    running.stop().await;
}

#[actix_rt::test]
async fn user_ids_with_allowed_punctuation_reach_and_terminate_the_user() {
    let running = Running::start().await;
    let app = running.app();
    let pusher = running.client();
    let user_id = "a-b_c=d@e,f.g;h";
    let mut user = Client::new(&app);
    user.sign_in(&pusher, user_id);

    pusher.send_to_user(user_id, "notice", "hi").await.unwrap();
    let events = user.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["channel"], format!("#server-to-user-{user_id}"));

    pusher.terminate_user_connections(user_id).await.unwrap();
    let outbound = user.outbound();
    assert!(
        matches!(outbound.as_slice(), [Outbound::Close(4009, _)]),
        "{outbound:?}"
    );
    running.stop().await;
}
