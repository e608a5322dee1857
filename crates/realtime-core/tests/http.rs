//! HTTP behaviour of the client against a local wiremock server. Every mock
//! verifies the Pusher signature of the request it answers, so a request that
//! is signed wrongly finds no mock and gets wiremock's 404.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use realtime_core::crypto::decrypt;
use realtime_core::signing::{verify_request, Secret, Signer};
use realtime_core::{
    ChannelInfo, Config, ConfigBuilder, Error, Event, MasterKey, PresenceUser, Publisher, Pusher,
    RetryPolicy, ValidationError,
};
use serde_json::{json, Value};
use wiremock::matchers::{body_json, body_partial_json, header, method, path, query_param};
use wiremock::{Match, Mock, MockBuilder, MockServer, Request, ResponseTemplate};

const APP_ID: &str = "4242";
const KEY: &str = "test-key";
const SECRET: &str = "test-secret";
const MASTER_KEY: &str = "a7QyXV8eYrtJBehbuix68XCPO6+LrpnNNReWOkaXW7A=";

/// Matches only requests carrying our `auth_key` and a valid signature made
/// with our secret, as a Pusher server checks them.
struct SignedByApp;

impl Match for SignedByApp {
    fn matches(&self, request: &Request) -> bool {
        let query: Vec<(String, String)> =
            url::form_urlencoded::parse(request.url.query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        let key_matches = query.iter().any(|(k, v)| k == "auth_key" && v == KEY);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        let signer = Signer::new(&Secret::new(SECRET));
        key_matches
            && verify_request(
                &signer,
                request.method.as_str(),
                request.url.path(),
                &query,
                &request.body,
                now,
                600,
            )
            .is_ok()
    }
}

/// A mock for `verb /apps/{APP_ID}{route}` that only signed requests match.
fn signed(verb: &str, route: &str) -> MockBuilder {
    Mock::given(method(verb))
        .and(path(format!("/apps/{APP_ID}{route}")))
        .and(SignedByApp)
}

fn ok_json(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(body)
}

fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
    }
}

fn config_for(port: u16, secret: &str) -> ConfigBuilder {
    Config::builder(APP_ID, KEY, secret)
        .host("127.0.0.1")
        .port(port)
        .use_tls(false)
        .retry(fast_retry(3))
        .timeout(Duration::from_secs(5))
}

fn build(builder: ConfigBuilder) -> Pusher {
    Pusher::new(builder.build().expect("valid config")).expect("client")
}

fn client(server: &MockServer) -> Pusher {
    build(config_for(server.address().port(), SECRET))
}

async fn requests(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.expect("recording on")
}

fn http_error(result: Result<impl std::fmt::Debug, Error>) -> (u16, String) {
    match result {
        Err(Error::Http { status, body }) => (status, body),
        other => panic!("expected Error::Http, got {other:?}"),
    }
}

#[tokio::test]
async fn trigger_posts_name_channels_data_and_socket_id_to_events() {
    let server = MockServer::start().await;
    signed("POST", "/events")
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "name": "my-event",
            "channels": ["my-channel"],
            "data": r#"{"message":"hello"}"#,
            "socket_id": "123.456",
        })))
        .respond_with(ok_json(json!({})))
        .expect(1)
        .mount(&server)
        .await;

    let response = client(&server)
        .trigger("my-channel", "my-event", &json!({"message": "hello"}))
        .exclude("123.456")
        .send()
        .await
        .unwrap();
    assert!(response.channels.is_empty());
}

#[tokio::test]
async fn trigger_with_info_returns_typed_channel_attributes() {
    let server = MockServer::start().await;
    signed("POST", "/events")
        .and(body_partial_json(
            json!({"info": "user_count,subscription_count"}),
        ))
        .respond_with(ok_json(json!(
            {"channels": {"presence-a": {"user_count": 1, "subscription_count": 2}}}
        )))
        .expect(1)
        .mount(&server)
        .await;

    let response = client(&server)
        .trigger("presence-a", "e", &1)
        .info(["user_count", "subscription_count"])
        .send()
        .await
        .unwrap();
    let expected = ChannelInfo {
        occupied: None,
        user_count: Some(1),
        subscription_count: Some(2),
    };
    assert_eq!(
        response.channels,
        HashMap::from([("presence-a".to_owned(), expected)])
    );
}

#[tokio::test]
async fn trigger_batch_posts_batch_and_parses_batch_answer() {
    let server = MockServer::start().await;
    signed("POST", "/batch_events")
        .and(body_json(json!({"batch": [
            {"channel": "c1", "name": "e1", "data": r#"{"a":1}"#},
            {"channel": "presence-b", "name": "e2", "data": "2", "socket_id": "1.2", "info": "user_count"},
        ]})))
        .respond_with(ok_json(json!({"batch": [{}, {"user_count": 3}]})))
        .expect(1)
        .mount(&server)
        .await;

    let events = [
        Event::new("c1", "e1", &json!({"a": 1})).unwrap(),
        Event::new("presence-b", "e2", &2)
            .unwrap()
            .exclude("1.2")
            .info(["user_count"]),
    ];
    let response = client(&server).trigger_batch(&events).await.unwrap();
    assert_eq!(response.batch.len(), 2);
    assert_eq!(response.batch[0], ChannelInfo::default());
    assert_eq!(response.batch[1].user_count, Some(3));
}

#[tokio::test]
async fn channels_query_sends_prefix_and_info_and_parses_the_list() {
    let server = MockServer::start().await;
    signed("GET", "/channels")
        .and(query_param("filter_by_prefix", "presence-"))
        .and(query_param("info", "user_count"))
        .respond_with(ok_json(json!({"channels": {
            "presence-a": {"user_count": 3},
            "presence-b": {"user_count": 1},
        }})))
        .expect(1)
        .mount(&server)
        .await;

    let list = client(&server)
        .channels()
        .filter_by_prefix("presence-")
        .info(["user_count"])
        .send()
        .await
        .unwrap();
    assert_eq!(list.channels.len(), 2);
    assert_eq!(list.channels["presence-a"].user_count, Some(3));
    assert_eq!(list.channels["presence-b"].user_count, Some(1));
}

#[tokio::test]
async fn channel_query_returns_occupied_and_counts() {
    let server = MockServer::start().await;
    signed("GET", "/channels/presence-a")
        .and(query_param("info", "user_count,subscription_count"))
        .respond_with(ok_json(
            json!({"occupied": true, "user_count": 1, "subscription_count": 2}),
        ))
        .expect(1)
        .mount(&server)
        .await;

    let info = client(&server)
        .channel("presence-a")
        .info(["user_count", "subscription_count"])
        .send()
        .await
        .unwrap();
    assert_eq!(info.occupied, Some(true));
    assert_eq!(info.user_count, Some(1));
    assert_eq!(info.subscription_count, Some(2));
}

#[tokio::test]
async fn channel_names_with_every_allowed_punctuation_are_signed_as_sent() {
    let server = MockServer::start().await;
    signed("GET", "/channels/private-a=b@c,d.e;f_g")
        .respond_with(ok_json(json!({"occupied": false})))
        .expect(1)
        .mount(&server)
        .await;
    let info = client(&server)
        .channel("private-a=b@c,d.e;f_g")
        .send()
        .await
        .unwrap();
    assert_eq!(info.occupied, Some(false));
}

#[tokio::test]
async fn presence_users_lists_the_members() {
    let server = MockServer::start().await;
    signed("GET", "/channels/presence-a/users")
        .respond_with(ok_json(json!({"users": [{"id": "1"}, {"id": "2"}]})))
        .expect(1)
        .mount(&server)
        .await;

    let users = client(&server).presence_users("presence-a").await.unwrap();
    let ids = ["1", "2"].map(|id| PresenceUser { id: id.to_owned() });
    assert_eq!(users, ids.to_vec());
}

#[tokio::test]
async fn get_users_for_channel_fails_for_public_channel() {
    let server = MockServer::start().await;
    let result = client(&server).presence_users("my-channel").await;
    assert!(matches!(
        result,
        Err(Error::Validation(ValidationError::NotPresenceChannel(_)))
    ));
    assert_eq!(requests(&server).await.len(), 0);
}

#[tokio::test]
async fn send_to_user_posts_to_the_server_to_user_channel() {
    let server = MockServer::start().await;
    signed("POST", "/events")
        .and(body_json(json!({
            "name": "notice",
            "channels": ["#server-to-user-user-1"],
            "data": r#"{"n":1}"#,
        })))
        .respond_with(ok_json(json!({})))
        .expect(1)
        .mount(&server)
        .await;

    client(&server)
        .send_to_user("user-1", "notice", &json!({"n": 1}))
        .await
        .unwrap();
}

#[tokio::test]
async fn terminate_user_connections_posts_an_empty_object() {
    let server = MockServer::start().await;
    signed("POST", "/users/user-1/terminate_connections")
        .and(body_json(json!({})))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;

    client(&server)
        .terminate_user_connections("user-1")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_request_signed_with_another_secret_is_rejected_by_the_matcher() {
    let server = MockServer::start().await;
    signed("POST", "/events")
        .respond_with(ok_json(json!({})))
        .expect(0)
        .mount(&server)
        .await;

    let wrong = build(config_for(server.address().port(), "another-secret"));
    let (status, _) = http_error(wrong.trigger("my-channel", "e", &1).send().await);
    assert_eq!(status, 404);
    // It did reach the server: the matcher, not the route, refused it.
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn client_errors_surface_with_the_servers_body_and_are_not_retried() {
    for status in [400, 401, 403, 413] {
        let server = MockServer::start().await;
        let text = format!("pusher says no ({status})");
        signed("POST", "/events")
            .respond_with(ResponseTemplate::new(status).set_body_string(text.clone()))
            .expect(1)
            .mount(&server)
            .await;

        let result = client(&server).trigger("my-channel", "e", &1).send().await;
        assert_eq!(http_error(result), (status, text));
        server.verify().await;
    }
}

#[tokio::test]
async fn get_channel_info_fails_for_invalid_attributes() {
    let server = MockServer::start().await;
    let text = "Cannot retrieve the user count unless the channel is a presence channel";
    signed("GET", "/channels/my-channel")
        .and(query_param("info", "user_count"))
        .respond_with(ResponseTemplate::new(400).set_body_string(text))
        .expect(1)
        .mount(&server)
        .await;

    let result = client(&server)
        .channel("my-channel")
        .info(["user_count"])
        .send()
        .await;
    assert_eq!(http_error(result), (400, text.to_owned()));
}

#[tokio::test]
async fn get_channels_fails_for_invalid_attributes() {
    let server = MockServer::start().await;
    let text = "user_count may only be requested for presence channels";
    signed("GET", "/channels")
        .and(query_param("filter_by_prefix", "private-"))
        .and(query_param("info", "user_count"))
        .respond_with(ResponseTemplate::new(400).set_body_string(text))
        .expect(1)
        .mount(&server)
        .await;

    let result = client(&server)
        .channels()
        .filter_by_prefix("private-")
        .info(["user_count"])
        .send()
        .await;
    assert_eq!(http_error(result), (400, text.to_owned()));
}

#[tokio::test]
async fn service_unavailable_twice_then_ok_succeeds_on_the_third_request() {
    let server = MockServer::start().await;
    signed("POST", "/events")
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    signed("POST", "/events")
        .respond_with(ok_json(json!({})))
        .expect(1)
        .mount(&server)
        .await;

    let result = client(&server).trigger("my-channel", "e", &1).send().await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(requests(&server).await.len(), 3);
}

#[tokio::test]
async fn service_unavailable_forever_gives_up_after_max_attempts() {
    let server = MockServer::start().await;
    signed("POST", "/events")
        .respond_with(ResponseTemplate::new(503).set_body_string("over capacity"))
        .expect(4)
        .mount(&server)
        .await;

    let pusher = build(config_for(server.address().port(), SECRET).retry(fast_retry(4)));
    let result = pusher.trigger("my-channel", "e", &1).send().await;
    assert_eq!(http_error(result), (503, "over capacity".to_owned()));
}

#[tokio::test]
async fn a_server_slower_than_the_timeout_gives_a_timeout_error() {
    let server = MockServer::start().await;
    signed("POST", "/events")
        .respond_with(ok_json(json!({})).set_delay(Duration::from_secs(2)))
        .mount(&server)
        .await;

    let timeout = Duration::from_millis(100);
    let pusher = build(
        config_for(server.address().port(), SECRET)
            .timeout(timeout)
            .retry(fast_retry(2)),
    );
    let started = Instant::now();
    let result = pusher.trigger("my-channel", "e", &1).send().await;
    assert!(
        matches!(result, Err(Error::Timeout(t)) if t == timeout),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_closed_port_gives_a_transport_error_after_retrying() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address").port()
    };
    let retry = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(40),
        max_delay: Duration::from_secs(1),
    };
    let pusher = build(config_for(port, SECRET).retry(retry));
    let started = Instant::now();
    let result = pusher.trigger("my-channel", "e", &1).send().await;
    assert!(matches!(result, Err(Error::Transport(_))), "{result:?}");
    // Two back-offs (40 ms, then 80 ms) prove all three attempts were made.
    assert!(started.elapsed() >= Duration::from_millis(120));
}

#[tokio::test]
async fn a_success_with_a_non_json_body_is_a_decode_error() {
    let server = MockServer::start().await;
    signed("POST", "/events")
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>gateway</html>"))
        .expect(1)
        .mount(&server)
        .await;

    let result = client(&server).trigger("my-channel", "e", &1).send().await;
    assert!(
        matches!(&result, Err(Error::Decode(why)) if why.contains("<html>gateway</html>")),
        "{result:?}"
    );
}

#[tokio::test]
async fn an_encrypted_channel_trigger_sends_data_that_decrypts_to_the_plaintext() {
    let server = MockServer::start().await;
    signed("POST", "/events")
        .and(body_partial_json(
            json!({"channels": ["private-encrypted-chat"]}),
        ))
        .respond_with(ok_json(json!({})))
        .expect(1)
        .mount(&server)
        .await;

    let pusher =
        build(config_for(server.address().port(), SECRET).encryption_master_key_base64(MASTER_KEY));
    let plaintext = json!({"text": "top secret"});
    pusher
        .trigger("private-encrypted-chat", "message", &plaintext)
        .send()
        .await
        .unwrap();

    let sent: Value = requests(&server).await[0].body_json().unwrap();
    let data = sent["data"].as_str().expect("data is a string");
    assert!(!data.contains("top secret"));
    let key = MasterKey::from_base64(MASTER_KEY).unwrap();
    let opened = decrypt(&key, "private-encrypted-chat", data).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&opened).unwrap(), plaintext);
}

#[tokio::test]
async fn the_publisher_trait_publishes_through_the_http_api() {
    let server = MockServer::start().await;
    signed("POST", "/events")
        .and(body_partial_json(json!({"name": "via-trait"})))
        .respond_with(ok_json(json!({})))
        .expect(2)
        .mount(&server)
        .await;
    signed("POST", "/batch_events")
        .and(body_partial_json(json!({"batch": [{"channel": "c1"}]})))
        .respond_with(ok_json(json!({"batch": [{}]})))
        .expect(1)
        .mount(&server)
        .await;

    let shared: Arc<dyn Publisher> = Arc::new(client(&server));
    let by_ref: &dyn Publisher = shared.as_ref();
    let event = || Event::new("c1", "via-trait", &json!({})).unwrap();
    by_ref.publish(event()).await.unwrap();
    shared.publish(event()).await.unwrap();
    let batch = shared.publish_batch(vec![event()]).await.unwrap();
    assert_eq!(batch.batch.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_triggers_all_arrive_signed() {
    let server = MockServer::start().await;
    signed("POST", "/events")
        .respond_with(ok_json(json!({})))
        .expect(50)
        .mount(&server)
        .await;

    let pusher = client(&server);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let pusher = pusher.clone();
            tokio::spawn(async move { pusher.trigger(format!("c{i}"), "e", &i).send().await })
        })
        .collect();
    for task in tasks {
        task.await.expect("task finished").unwrap();
    }
}

#[tokio::test]
async fn server_to_user_channels_cannot_be_queried() {
    let server = MockServer::start().await;
    let pusher = client(&server);
    let err = pusher
        .channel("#server-to-user-7")
        .send()
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        realtime_core::Error::Validation(realtime_core::ValidationError::InvalidChannelName(_))
    ));
    assert!(server
        .received_requests()
        .await
        .unwrap_or_default()
        .is_empty());
}
