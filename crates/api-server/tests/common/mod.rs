//! The harness of the integration tests (zero2prod style): `spawn_app()`
//! starts the real server on a free port with its own database (a fresh
//! SQLite file, or a fresh PostgreSQL database when `POSTGRES_TEST_URL` is
//! set), seeds two teams, logs their users in over HTTP, and talks HTTP to
//! it. `FakePusher` is a wiremock server that checks every request's Pusher
//! signature, records the events it accepts, and can play an outage.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::web;
use api_server::app::{AppState, Running};
use api_server::config::Config;
use api_server::db::DbConnection;
use api_server::models::message::{Message, NewMessage};
use api_server::models::user::{NewUser, User};
use diesel::{Connection, PgConnection, RunQueryDsl};
use realtime_core::Credentials;
use reqwest::header::{HeaderMap, CONTENT_TYPE};
use serde_json::{json, Value};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Every seeded user's password.
pub const PASSWORD: &str = "correct-horse-42";
/// Runs each named `async fn name(backend: Backend)` once on SQLite and once
/// on PostgreSQL (the latter passes silently when `POSTGRES_TEST_URL` is
/// unset): `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[actix_web::test]
                async fn sqlite() {
                    super::$name($crate::common::Backend::Sqlite).await;
                }

                #[actix_web::test]
                async fn postgres() {
                    if $crate::common::postgres_url().is_some() {
                        super::$name($crate::common::Backend::Postgres).await;
                    }
                }
            }
        )*
    };
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file in the temporary directory.
    Sqlite,
    /// A fresh database on `POSTGRES_TEST_URL`.
    Postgres,
}

/// `POSTGRES_TEST_URL`, when set, without TLS unless the URL asks for it.
///
/// A test process exits while the servers of finished tests may still be
/// closing (or the pool still opening) connections on other threads. With
/// TLS, libpq calls into OpenSSL there while OpenSSL's exit handler frees
/// its state: the likely cause of a test process dying after every test
/// passed, once in about ten loaded runs here ("malloc_consolidate():
/// unaligned fastbin chunk detected"; the same as diesel-rs/diesel#3441).
/// The local test server needs no TLS.
pub fn postgres_url() -> Option<String> {
    let url = std::env::var("POSTGRES_TEST_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())?;
    let mut parsed = url::Url::parse(&url).expect("POSTGRES_TEST_URL is a URL");
    if !parsed.query_pairs().any(|(key, _)| key == "sslmode") {
        parsed.query_pairs_mut().append_pair("sslmode", "disable");
    }
    Some(parsed.to_string())
}

/// A name no other test (or test process) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}_{}_{}_{:08x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst),
        rand::random::<u32>()
    )
}

/// A database of its own, removed when the last holder drops it.
#[derive(Debug)]
pub struct TestDb {
    /// The `DATABASE_URL`.
    pub url: String,
    /// Which backend.
    pub backend: Backend,
    postgres: Option<(String, String)>,
    sqlite: Option<std::path::PathBuf>,
}

impl TestDb {
    /// A fresh, empty database.
    pub fn new(backend: Backend) -> Arc<Self> {
        match backend {
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("{}.db", unique("api_server_test")));
                Arc::new(TestDb {
                    url: path.to_string_lossy().into_owned(),
                    backend,
                    postgres: None,
                    sqlite: Some(path),
                })
            }
            Backend::Postgres => {
                let admin = postgres_url().expect("POSTGRES_TEST_URL is set");
                let name = unique("test");
                let mut conn = PgConnection::establish(&admin).expect("connect POSTGRES_TEST_URL");
                let mut attempts = 0;
                loop {
                    match diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut conn) {
                        Ok(_) => break,
                        // Concurrent CREATE DATABASE may collide on the template.
                        Err(e) if attempts < 20 => {
                            attempts += 1;
                            eprintln!("CREATE DATABASE {name} failed ({e}); retrying");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        Err(e) => panic!("CREATE DATABASE {name}: {e}"),
                    }
                }
                let mut url = url::Url::parse(&admin).expect("POSTGRES_TEST_URL is a URL");
                url.set_path(&name);
                Arc::new(TestDb {
                    url: url.to_string(),
                    backend,
                    postgres: Some((admin, name)),
                    sqlite: None,
                })
            }
        }
    }

    /// A new connection (migrations must have run: `build` runs them).
    pub fn connect(&self) -> DbConnection {
        api_server::db::connect(&self.url).expect("connect to the test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.postgres {
            if let Ok(mut conn) = PgConnection::establish(admin) {
                let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn);
            }
        }
        if let Some(path) = &self.sqlite {
            for suffix in ["", "-wal", "-shm"] {
                let mut file = path.clone().into_os_string();
                file.push(suffix);
                let _ = std::fs::remove_file(file);
            }
        }
    }
}

/// A seeded user with a bearer token.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub token: String,
}

impl TestUser {
    /// The id as the API shows it.
    pub fn sid(&self) -> String {
        self.id.to_string()
    }
}

/// Who `spawn_app` seeded: team one with Alice and Bob, team two with Mallory.
#[derive(Debug, Clone)]
pub struct Fixtures {
    pub team: i64,
    pub other_team: i64,
    pub alice: TestUser,
    pub bob: TestUser,
    pub mallory: TestUser,
}

/// How to start the app.
#[derive(Debug, Clone)]
pub struct Options {
    pub backend: Backend,
    /// `PUSHER_*` pointing at a fake; `None` is the embedded mode.
    pub pusher: Option<PusherTarget>,
    /// `PUBLIC_URL`.
    pub public_url: Option<String>,
    /// Listen on a port chosen before `build` (so `PORT` is the real one).
    pub fixed_port: bool,
    /// More variables.
    pub extra: Vec<(String, String)>,
}

impl Options {
    /// Embedded realtime on `backend`.
    pub fn embedded(backend: Backend) -> Self {
        Options {
            backend,
            pusher: None,
            public_url: None,
            fixed_port: false,
            extra: Vec::new(),
        }
    }

    /// Hosted mode against `fake`.
    pub fn hosted(backend: Backend, fake: &FakePusher) -> Self {
        Options {
            pusher: Some(fake.target()),
            ..Options::embedded(backend)
        }
    }
}

/// Where the hosted mode publishes.
#[derive(Debug, Clone)]
pub struct PusherTarget {
    pub app_id: String,
    pub key: String,
    pub secret: String,
    pub port: u16,
}

/// A running app.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`.
    pub address: String,
    pub port: u16,
    pub state: web::Data<AppState>,
    pub db: Arc<TestDb>,
    pub client: reqwest::Client,
    pub fx: Fixtures,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // Stop the SMS worker (a send under way stays claimed for the next
        // start), let the dispatcher publish what is left, then stop both.
        self.state.sms.shutdown(Duration::from_secs(2));
        self.state.dispatcher.shutdown(Duration::from_secs(2));
        // `stop` sends the command at once; its answer is not awaited.
        drop(self.handle.stop(false));
    }
}

/// A free port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The configuration map of `options` for `db`.
pub fn config_map(options: &Options, db: &TestDb) -> HashMap<String, String> {
    let mut map = HashMap::new();
    let port = if options.fixed_port { free_port() } else { 0 };
    map.insert("HOST".to_owned(), "127.0.0.1".to_owned());
    map.insert("PORT".to_owned(), port.to_string());
    map.insert("DATABASE_URL".to_owned(), db.url.clone());
    if let Some(url) = &options.public_url {
        map.insert("PUBLIC_URL".to_owned(), url.clone());
    }
    if let Some(pusher) = &options.pusher {
        map.insert("PUSHER_APP_ID".to_owned(), pusher.app_id.clone());
        map.insert("PUSHER_KEY".to_owned(), pusher.key.clone());
        map.insert("PUSHER_SECRET".to_owned(), pusher.secret.clone());
        map.insert("PUSHER_HOST".to_owned(), "127.0.0.1".to_owned());
        map.insert("PUSHER_PORT".to_owned(), pusher.port.to_string());
        map.insert("PUSHER_SCHEME".to_owned(), "http".to_owned());
    }
    map.extend(options.extra.iter().cloned());
    map
}

/// Starts the app on `backend` with the embedded realtime server.
pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_with(Options::embedded(backend)).await
}

/// Starts the app on `backend`, publishing to `fake`.
pub async fn spawn_hosted(backend: Backend, fake: &FakePusher) -> TestApp {
    spawn_with(Options::hosted(backend, fake)).await
}

/// Starts the app with a fresh database, seeded.
pub async fn spawn_with(options: Options) -> TestApp {
    let db = TestDb::new(options.backend);
    spawn_instance(db, &options, None).await
}

/// Starts one instance on `db`. Without `fixtures` the database is seeded
/// and the users log in; with them (a second instance on the same
/// database) their sessions are reused.
pub async fn spawn_instance(
    db: Arc<TestDb>,
    options: &Options,
    fixtures: Option<Fixtures>,
) -> TestApp {
    let map = config_map(options, &db);
    let config = Config::from_lookup(|name| map.get(name).cloned()).expect("a valid configuration");
    let Running {
        server,
        state,
        port,
    } = api_server::app::build(config).expect("the app builds");
    let handle = server.handle();
    actix_web::rt::spawn(server);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        // The server closes a connection idle for its keep-alive (5 s); a
        // test that blocks longer must not reuse one it may be closing.
        .pool_idle_timeout(Duration::from_secs(2))
        .build()
        .expect("an HTTP client");
    let address = format!("http://127.0.0.1:{port}");
    let fx = match fixtures {
        Some(fx) => fx,
        None => seed_and_login(&db, &client, &address).await,
    };
    TestApp {
        address,
        port,
        state,
        db,
        client,
        fx,
        handle,
    }
}

/// An argon2id hash of [`PASSWORD`] with low cost parameters: the app's
/// verifier reads the parameters from the PHC string, and the default cost
/// takes ~0.4 s per hash in a debug build, which the suite cannot afford
/// for every seeded user. (`cli::create_user` itself is covered by cli.rs.)
pub fn cheap_password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
        let params = argon2::Params::new(64, 1, 1, None).expect("argon2 params");
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        argon
            .hash_password(PASSWORD.as_bytes(), &SaltString::generate(&mut OsRng))
            .expect("hash")
            .to_string()
    })
}

/// Inserts a user of `team` whose password is [`PASSWORD`].
pub fn insert_user(conn: &mut DbConnection, team: i64, email: &str, name: &str) -> i64 {
    User::create(
        conn,
        &NewUser {
            team_id: team,
            email,
            name,
            password_hash: cheap_password_hash(),
            created_at: api_server::models::now(),
        },
    )
    .expect("insert user")
    .id
}

async fn seed_and_login(db: &TestDb, client: &reqwest::Client, address: &str) -> Fixtures {
    let mut conn = db.connect();
    let team = api_server::cli::create_team(&mut conn, "Team One", "+14155550100")
        .expect("create team one");
    let other_team = api_server::cli::create_team(&mut conn, "Team Two", "+14155550199")
        .expect("create team two");
    let alice = insert_user(&mut conn, team, "alice@example.com", "Alice Agent");
    let bob = insert_user(&mut conn, team, "bob@example.com", "Bob Agent");
    let mallory = insert_user(
        &mut conn,
        other_team,
        "mallory@example.org",
        "Mallory Other",
    );
    drop(conn);
    let login = |id: i64, email: &'static str, name: &'static str| async move {
        let res = client
            .post(format!("{address}/api/auth/login"))
            .header(CONTENT_TYPE, "application/json")
            .body(json!({ "email": email, "password": PASSWORD }).to_string())
            .send()
            .await
            .expect("login request");
        assert_eq!(res.status().as_u16(), 200, "login of {email}");
        let body: Value = serde_json::from_str(&res.text().await.expect("login body"))
            .expect("login answers JSON");
        TestUser {
            id,
            email: email.to_owned(),
            name: name.to_owned(),
            token: body["token"].as_str().expect("a token").to_owned(),
        }
    };
    Fixtures {
        team,
        other_team,
        alice: login(alice, "alice@example.com", "Alice Agent").await,
        bob: login(bob, "bob@example.com", "Bob Agent").await,
        mallory: login(mallory, "mallory@example.org", "Mallory Other").await,
    }
}

/// An HTTP answer, its body read.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    /// The body as JSON (`Null` when it is not JSON).
    pub body: Value,
    pub elapsed: Duration,
}

impl Resp {
    /// Asserts the contract's error shape and answers its code.
    pub fn error_code(&self) -> String {
        let error = &self.body["error"];
        assert!(
            error["code"].is_string() && error["message"].is_string(),
            "error shape {{\"error\":{{\"code\",\"message\"}}}} expected, got {} {}",
            self.status,
            self.text
        );
        error["code"].as_str().unwrap_or_default().to_owned()
    }

    /// Every `Set-Cookie` header.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect()
    }
}

impl TestApp {
    /// The absolute URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// A request builder for `path`.
    pub fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// Sends `request` and reads the answer.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Resp {
        read(request).await
    }

    /// `GET path` with a bearer token.
    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.send(self.req(reqwest::Method::GET, path).bearer_auth(token))
            .await
    }

    /// `GET path` without credentials.
    pub async fn get_anon(&self, path: &str) -> Resp {
        self.send(self.req(reqwest::Method::GET, path)).await
    }

    /// `POST path` with a JSON body and a bearer token.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.send(json_body(
            self.req(reqwest::Method::POST, path).bearer_auth(token),
            &body,
        ))
        .await
    }

    /// Creates a contact as `token`'s user; answers it.
    pub async fn create_contact(&self, token: &str, name: &str, phone: &str) -> Value {
        let res = self
            .post(
                "/api/contacts",
                token,
                json!({ "name": name, "phone": phone }),
            )
            .await;
        assert_eq!(res.status, 201, "create contact: {}", res.text);
        res.body["contact"].clone()
    }

    /// Creates a contact in team one (as Alice); answers its id.
    pub async fn contact(&self, phone: &str) -> String {
        let alice = self.fx.alice.token.clone();
        self.create_contact(&alice, "Carol Customer", phone).await["id"]
            .as_str()
            .expect("a contact id")
            .to_owned()
    }

    /// Sends a message as `token`'s user; answers it.
    pub async fn send_message(&self, token: &str, contact_id: &str, body: &str) -> Value {
        let res = self
            .post(
                "/api/messages/send",
                token,
                json!({ "contactId": contact_id, "body": body }),
            )
            .await;
        assert_eq!(res.status, 201, "send: {}", res.text);
        res.body["message"].clone()
    }

    /// Stores an inbound (received) message directly; answers its id.
    pub fn insert_inbound(&self, team: i64, contact_id: &str, body: &str) -> i64 {
        let mut conn = self.db.connect();
        Message::create(
            &mut conn,
            &NewMessage {
                team_id: team,
                contact_id: contact_id.parse().expect("a numeric contact id"),
                direction: "inbound",
                body,
                media: "[]".into(),
                status: "received",
                error_code: None,
                twilio_sid: None,
                sent_by: None,
                created_at: api_server::models::now(),
            },
        )
        .expect("insert inbound message")
        .id
    }

    /// How many messages the database holds.
    pub fn message_count(&self) -> i64 {
        use api_server::db::schema::messages;
        use diesel::QueryDsl;
        let mut conn = self.db.connect();
        messages::table
            .count()
            .get_result(&mut conn)
            .expect("count messages")
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> String {
        let res = self.get_anon("/metrics").await;
        assert_eq!(res.status, 200);
        res.text
    }
}

/// A metric's value in Prometheus text (the first sample of that name).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        let key = key.split('{').next()?;
        (key == name).then(|| value.parse().ok())?
    })
}

/// Sets a JSON body.
pub fn json_body(request: reqwest::RequestBuilder, body: &Value) -> reqwest::RequestBuilder {
    request
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_string())
}

/// Sends a request and reads the answer.
pub async fn read(request: reqwest::RequestBuilder) -> Resp {
    let started = Instant::now();
    let res = request.send().await.expect("the request reaches the app");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.expect("a readable body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        text,
        body,
        elapsed: started.elapsed(),
    }
}

/// Waits until `check` holds, at most `timeout`.
pub async fn eventually<F: FnMut() -> bool>(timeout: Duration, mut check: F) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------
// The fake Pusher.

/// One event the fake accepted.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The order of arrival.
    pub seq: usize,
    pub name: String,
    pub channels: Vec<String>,
    /// `data`, decoded from its JSON text.
    pub data: Value,
    pub socket_id: Option<String>,
    /// `events` or `batch_events`.
    pub endpoint: &'static str,
}

#[derive(Default)]
struct FakeState {
    down: AtomicBool,
    delay_ms: AtomicU64,
    events: Mutex<Vec<Recorded>>,
    refused: AtomicUsize,
    bad_signatures: Mutex<Vec<String>>,
    /// Presence members per channel, as Pusher's users query answers them.
    presence: Mutex<HashMap<String, Vec<String>>>,
    /// Presence users queries answered.
    presence_queries: AtomicUsize,
}

/// A Pusher-compatible HTTP API that checks signatures and records events.
pub struct FakePusher {
    pub server: MockServer,
    pub app_id: String,
    pub key: String,
    pub secret: String,
    state: Arc<FakeState>,
}

/// Matches only requests correctly signed with the app's key and secret
/// (what Pusher itself checks); the others are remembered for the test.
struct SignedBy {
    credentials: Credentials,
    state: Arc<FakeState>,
}

impl wiremock::Match for SignedBy {
    fn matches(&self, request: &Request) -> bool {
        let query: Vec<(String, String)> =
            url::form_urlencoded::parse(request.url.query().unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let key_ok = query
            .iter()
            .any(|(k, v)| k == "auth_key" && v == self.credentials.key());
        let verdict = realtime_core::signing::verify_request(
            self.credentials.signer(),
            request.method.as_str(),
            request.url.path(),
            &query,
            &request.body,
            now,
            600,
        );
        match (key_ok, verdict) {
            (true, Ok(())) => true,
            (_, verdict) => {
                self.state
                    .bad_signatures
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(format!(
                        "{} {} (key ok: {key_ok}): {verdict:?}",
                        request.method, request.url
                    ));
                false
            }
        }
    }
}

struct Responder {
    app_id: String,
    state: Arc<FakeState>,
}

fn decode_data(data: &Value) -> Value {
    match data {
        Value::String(text) => serde_json::from_str(text).unwrap_or_else(|_| data.clone()),
        other => other.clone(),
    }
}

impl Respond for Responder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if self.state.down.load(Ordering::SeqCst) {
            self.state.refused.fetch_add(1, Ordering::SeqCst);
            return ResponseTemplate::new(503).set_body_string("Service Unavailable");
        }
        let delay = Duration::from_millis(self.state.delay_ms.load(Ordering::SeqCst));
        let prefix = format!("/apps/{}/", self.app_id);
        let Some(path) = request.url.path().strip_prefix(&prefix) else {
            return ResponseTemplate::new(404).set_body_string("unknown app");
        };
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let mut events = self.state.events.lock().unwrap_or_else(|e| e.into_inner());
        let socket = |v: &Value| v["socket_id"].as_str().map(str::to_owned);
        match (request.method.as_str(), path) {
            ("POST", "events") => {
                let channels = match (&body["channels"], &body["channel"]) {
                    (Value::Array(list), _) => list
                        .iter()
                        .filter_map(|c| c.as_str().map(str::to_owned))
                        .collect(),
                    (_, Value::String(one)) => vec![one.clone()],
                    _ => Vec::new(),
                };
                let seq = events.len();
                events.push(Recorded {
                    seq,
                    name: body["name"].as_str().unwrap_or_default().to_owned(),
                    channels,
                    data: decode_data(&body["data"]),
                    socket_id: socket(&body),
                    endpoint: "events",
                });
                ResponseTemplate::new(200)
                    .set_body_string("{}")
                    .set_delay(delay)
            }
            ("POST", "batch_events") => {
                let batch = body["batch"].as_array().cloned().unwrap_or_default();
                for event in &batch {
                    let seq = events.len();
                    events.push(Recorded {
                        seq,
                        name: event["name"].as_str().unwrap_or_default().to_owned(),
                        channels: event["channel"]
                            .as_str()
                            .map(|c| vec![c.to_owned()])
                            .unwrap_or_default(),
                        data: decode_data(&event["data"]),
                        socket_id: socket(event),
                        endpoint: "batch_events",
                    });
                }
                ResponseTemplate::new(200)
                    .set_body_string(r#"{"batch":[]}"#)
                    .set_delay(delay)
            }
            ("GET", "channels") => ResponseTemplate::new(200).set_body_string(r#"{"channels":{}}"#),
            // `GET /apps/{id}/channels/{channel}/users`, as Pusher answers it
            // for a presence channel (no members: an empty list).
            ("GET", path) if path.starts_with("channels/") && path.ends_with("/users") => {
                let channel = &path["channels/".len()..path.len() - "/users".len()];
                if !channel.starts_with("presence-") {
                    return ResponseTemplate::new(400)
                        .set_body_string("users query only for presence channels");
                }
                self.state.presence_queries.fetch_add(1, Ordering::SeqCst);
                let members = self
                    .state
                    .presence
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(channel)
                    .cloned()
                    .unwrap_or_default();
                let users: Vec<Value> = members.iter().map(|id| json!({ "id": id })).collect();
                ResponseTemplate::new(200)
                    .set_body_string(json!({ "users": users }).to_string())
                    .set_delay(delay)
            }
            // The rest: not known here.
            _ => ResponseTemplate::new(404).set_body_string("not found"),
        }
    }
}

impl FakePusher {
    /// Starts the fake, answering 200.
    pub async fn start() -> Self {
        let server = MockServer::start().await;
        let app_id = "4242".to_owned();
        let key = "fakekey0123456789abc".to_owned();
        let secret = "fakesecret0123456789".to_owned();
        let state = Arc::new(FakeState::default());
        Mock::given(SignedBy {
            credentials: Credentials::new(app_id.clone(), key.clone(), secret.clone()),
            state: state.clone(),
        })
        .respond_with(Responder {
            app_id: app_id.clone(),
            state: state.clone(),
        })
        .with_priority(1)
        .mount(&server)
        .await;
        Mock::given(wiremock::matchers::any())
            .respond_with(ResponseTemplate::new(401).set_body_string("invalid signature"))
            .with_priority(10)
            .mount(&server)
            .await;
        FakePusher {
            server,
            app_id,
            key,
            secret,
            state,
        }
    }

    /// What the app's `PUSHER_*` variables say.
    pub fn target(&self) -> PusherTarget {
        PusherTarget {
            app_id: self.app_id.clone(),
            key: self.key.clone(),
            secret: self.secret.clone(),
            port: self.server.address().port(),
        }
    }

    /// The app's credentials, to verify what the app signs.
    pub fn credentials(&self) -> Credentials {
        Credentials::new(self.app_id.clone(), self.key.clone(), self.secret.clone())
    }

    /// Answers 503 to everything (`true`) or serves again (`false`).
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Delays every accepted publish by `delay` (a slow service).
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Sets the members Pusher reports on a presence channel.
    pub fn set_presence(&self, channel: &str, user_ids: &[String]) {
        self.state
            .presence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(channel.to_owned(), user_ids.to_vec());
    }

    /// Presence users queries answered (correctly signed).
    pub fn presence_queries(&self) -> usize {
        self.state.presence_queries.load(Ordering::SeqCst)
    }

    /// Requests answered 503.
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// Every accepted event, in order of arrival.
    pub fn events(&self) -> Vec<Recorded> {
        self.state
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Accepted events named `name`.
    pub fn named(&self, name: &str) -> Vec<Recorded> {
        self.events()
            .into_iter()
            .filter(|e| e.name == name)
            .collect()
    }

    /// Accepted events on `channel`, in order.
    pub fn on_channel(&self, channel: &str) -> Vec<Recorded> {
        self.events()
            .into_iter()
            .filter(|e| e.channels.iter().any(|c| c == channel))
            .collect()
    }

    /// Waits until `check` holds on the recorded events (at most `timeout`);
    /// answers the events then.
    pub async fn wait_for<F: Fn(&[Recorded]) -> bool>(
        &self,
        timeout: Duration,
        check: F,
    ) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events();
            if check(&events) || Instant::now() > deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asserts that every request the fake received was correctly signed.
    pub fn assert_all_signed(&self) {
        let bad = self
            .state
            .bad_signatures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        assert!(bad.is_empty(), "badly signed requests: {bad:#?}");
    }
}

/// The message ids of `message:created` events in `events`, in order.
pub fn created_ids(events: &[Recorded]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.name == "message:created")
        .filter_map(|e| e.data["message"]["id"].as_str().map(str::to_owned))
        .collect()
}
