//! Outbound SMS are durable: queued with their message, sent once by the SMS
//! worker through a local fake of Twilio's REST API that checks what it gets
//! (basic auth with the account SID and token; To, From, Body,
//! StatusCallback) and serves the Messages list; retried when Twilio cannot
//! have sent them, looked up (and their SID adopted) when it may have,
//! resumed after a stop, failed with a code when the attempts are spent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api_server::models::message::Message;
use api_server::models::sms_outbox::SmsJob;
use base64::Engine;
use common::{
    eventually, metric, postgres_url, spawn_instance, Backend, FakePusher, Options, TestApp, TestDb,
};
use serde_json::{json, Value};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
const AUTH_TOKEN: &str = "fake-twilio-token-0123456789";
const TEAM_PHONE: &str = "+14155550100";
/// Long enough for a loaded debug build; every wait ends on its condition.
const DEADLINE: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// The fake Twilio.

/// What message creations answer.
#[derive(Debug, Clone)]
enum Mode {
    /// 201 after `delay`; `store`: the message is kept (and listed), as
    /// Twilio keeps what it accepted even when its answer is lost.
    Accept { delay: Duration, store: bool },
    /// 400 with a Twilio error code.
    Refuse { code: i64 },
    /// `status` (429, 500, 503) the next `times` creations, then `Accept`.
    Fail { status: u16, times: usize },
}

/// A message creation as it arrived.
#[derive(Debug, Clone)]
struct Create {
    form: HashMap<String, String>,
    /// What the fake answered (201, 400, 503…).
    answered: u16,
    sid: Option<String>,
}

#[derive(Debug, Clone)]
struct Stored {
    sid: String,
    to: String,
    from: String,
    body: String,
    created: chrono::DateTime<chrono::Utc>,
}

#[derive(Default)]
struct TwilioState {
    mode: Mutex<Option<Mode>>,
    creates: Mutex<Vec<Create>>,
    /// The query of every Messages list read.
    lookups: Mutex<Vec<Vec<(String, String)>>>,
    stored: Mutex<Vec<Stored>>,
    /// Requests the fake refused for bad credentials or a missing field.
    bad: Mutex<Vec<String>>,
}

struct FakeTwilio {
    server: MockServer,
    state: Arc<TwilioState>,
}

struct TwilioResponder(Arc<TwilioState>);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn twilio_error(status: u16, code: i64, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    }))
}

fn listed(m: &Stored) -> Value {
    let date = m.created.to_rfc2822();
    json!({
        "account_sid": ACCOUNT_SID,
        "sid": m.sid,
        "status": "sent",
        "body": m.body,
        "to": m.to,
        "from": m.from,
        "direction": "outbound-api",
        "date_created": date,
        "date_sent": date,
        "date_updated": date,
        "error_code": null,
    })
}

impl Respond for TwilioResponder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let state = &self.0;
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}"))
        );
        let auth = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if auth != Some(expected.as_str()) {
            lock(&state.bad).push(format!(
                "{} {}: bad auth {auth:?}",
                request.method, request.url
            ));
            return twilio_error(401, 20003, "Authenticate");
        }
        let path = format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json");
        if request.url.path() != path {
            lock(&state.bad).push(format!("unknown path {}", request.url));
            return twilio_error(404, 20404, "The requested resource was not found");
        }
        match request.method.as_str() {
            "GET" => {
                let query: Vec<(String, String)> = request.url.query_pairs().into_owned().collect();
                lock(&state.lookups).push(query.clone());
                let get = |name: &str| {
                    query
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                };
                let since = get("DateSent>").map(|d| {
                    chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d")
                        .expect("DateSent> is YYYY-MM-DD")
                });
                let messages: Vec<Value> = lock(&state.stored)
                    .iter()
                    .rev()
                    .filter(|m| get("To").is_none_or(|to| to == m.to))
                    .filter(|m| get("From").is_none_or(|from| from == m.from))
                    .filter(|m| since.is_none_or(|day| m.created.date_naive() >= day))
                    .map(listed)
                    .collect();
                ResponseTemplate::new(200).set_body_json(json!({
                    "messages": messages,
                    "page": 0,
                    "page_size": 50,
                    "next_page_uri": null,
                }))
            }
            "POST" => {
                let form: HashMap<String, String> = url::form_urlencoded::parse(&request.body)
                    .into_owned()
                    .collect();
                for field in ["To", "From", "Body", "StatusCallback"] {
                    if form.get(field).is_none_or(|v| v.is_empty()) {
                        lock(&state.bad).push(format!("a create without {field}: {form:?}"));
                        return twilio_error(400, 21602, "a required field is missing");
                    }
                }
                let mut mode = lock(&state.mode);
                let current = mode.clone().unwrap_or(Mode::Accept {
                    delay: Duration::ZERO,
                    store: true,
                });
                let mut record = Create {
                    form: form.clone(),
                    answered: 201,
                    sid: None,
                };
                let answer = match current {
                    Mode::Refuse { code } => {
                        record.answered = 400;
                        twilio_error(400, code, "Invalid 'To' Phone Number")
                    }
                    Mode::Fail { status, times } if times > 0 => {
                        *mode = Some(Mode::Fail {
                            status,
                            times: times - 1,
                        });
                        record.answered = status;
                        twilio_error(status, 20500, "Unavailable")
                    }
                    Mode::Fail { .. } | Mode::Accept { .. } => {
                        let (delay, store) = match current {
                            Mode::Accept { delay, store } => (delay, store),
                            _ => (Duration::ZERO, true),
                        };
                        let sid = format!("SM{:032x}", rand::random::<u128>());
                        let created = chrono::Utc::now();
                        let message = Stored {
                            sid: sid.clone(),
                            to: form["To"].clone(),
                            from: form["From"].clone(),
                            body: form["Body"].clone(),
                            created,
                        };
                        if store {
                            lock(&state.stored).push(message.clone());
                        }
                        record.sid = Some(sid.clone());
                        let mut body = listed(&message);
                        body["status"] = json!("queued");
                        ResponseTemplate::new(201)
                            .set_body_json(body)
                            .set_delay(delay)
                    }
                };
                lock(&state.creates).push(record);
                answer
            }
            _ => twilio_error(405, 20004, "Method not allowed"),
        }
    }
}

impl FakeTwilio {
    /// Starts the fake on `listener` (or a free port).
    async fn start_on(listener: Option<std::net::TcpListener>) -> Self {
        let builder = MockServer::builder();
        let server = match listener {
            Some(listener) => builder.listener(listener).start().await,
            None => builder.start().await,
        };
        let state = Arc::new(TwilioState::default());
        Mock::given(wiremock::matchers::any())
            .respond_with(TwilioResponder(state.clone()))
            .mount(&server)
            .await;
        FakeTwilio { server, state }
    }

    async fn start() -> Self {
        Self::start_on(None).await
    }

    fn set_mode(&self, mode: Mode) {
        *lock(&self.state.mode) = Some(mode);
    }

    /// Keeps a message as if Twilio had taken it; answers its SID.
    fn store(&self, to: &str, body: &str) -> String {
        let sid = format!("SM{:032x}", rand::random::<u128>());
        lock(&self.state.stored).push(Stored {
            sid: sid.clone(),
            to: to.into(),
            from: TEAM_PHONE.into(),
            body: body.into(),
            created: chrono::Utc::now(),
        });
        sid
    }

    fn creates(&self) -> Vec<Create> {
        lock(&self.state.creates).clone()
    }

    fn creates_of(&self, body: &str) -> Vec<Create> {
        self.creates()
            .into_iter()
            .filter(|c| c.form.get("Body").map(String::as_str) == Some(body))
            .collect()
    }

    fn lookups(&self) -> Vec<Vec<(String, String)>> {
        lock(&self.state.lookups).clone()
    }

    fn assert_all_proper(&self) {
        let bad = lock(&self.state.bad).clone();
        assert!(bad.is_empty(), "the fake Twilio refused: {bad:#?}");
    }
}

// ---------------------------------------------------------------------------
// The app against it.

/// Options for an app whose Twilio is at `base`, with short retries and a
/// `timeout_ms` per request; hosted realtime through `pusher`.
fn options(backend: Backend, base: &str, pusher: &FakePusher, timeout_ms: u64) -> Options {
    let mut options = Options::hosted(backend, pusher);
    options.extra = vec![
        ("TWILIO_ACCOUNT_SID".into(), ACCOUNT_SID.into()),
        ("TWILIO_AUTH_TOKEN".into(), AUTH_TOKEN.into()),
        ("TWILIO_API_BASE".into(), base.into()),
        ("TWILIO_SEND_ATTEMPTS".into(), "4".into()),
        ("TWILIO_RETRY_BASE_MS".into(), "20".into()),
        ("TWILIO_RETRY_MAX_MS".into(), "100".into()),
        ("TWILIO_TIMEOUT_MS".into(), timeout_ms.to_string()),
    ];
    options
}

async fn spawn(backend: Backend, twilio: &FakeTwilio, pusher: &FakePusher) -> TestApp {
    let options = options(backend, &twilio.server.uri(), pusher, 5_000);
    spawn_instance(TestDb::new(backend), &options, None).await
}

fn message(app: &TestApp, id: &str) -> Message {
    Message::reload(&mut app.db.connect(), id.parse().unwrap()).unwrap()
}

fn job(app: &TestApp, id: &str) -> Option<SmsJob> {
    SmsJob::find(&mut app.db.connect(), id.parse().unwrap()).unwrap()
}

/// Waits until the message satisfies `check`; answers it.
async fn wait_message(
    app: &TestApp,
    id: &str,
    what: &str,
    check: impl Fn(&Message) -> bool,
) -> Message {
    let ok = eventually(DEADLINE, || check(&message(app, id))).await;
    let current = message(app, id);
    assert!(ok, "{what}: {current:?}, job {:?}", job(app, id));
    current
}

/// The `message:status` events the fake Pusher got for message `id`.
fn status_events(pusher: &FakePusher, id: &str) -> Vec<Value> {
    pusher
        .named("message:status")
        .into_iter()
        .map(|e| e.data["message"].clone())
        .filter(|m| m["id"] == id)
        .collect()
}

async fn metric_of(app: &TestApp, name: &str) -> f64 {
    metric(&app.metrics().await, name).unwrap_or_else(|| panic!("{name} is exposed"))
}

// ---------------------------------------------------------------------------
// The cases.

backend_tests!(
    a_send_is_handed_to_twilio_once_with_its_credentials_and_fields,
    a_send_queued_while_twilio_is_unreachable_is_delivered_once_it_comes_up,
    an_answer_lost_to_the_timeout_is_looked_up_and_its_sid_adopted,
    a_send_in_flight_when_the_process_stops_is_resumed_by_the_next_start,
    a_5xx_is_looked_up_and_sent_again_only_when_twilio_has_not_got_it,
    spent_attempts_fail_the_message_with_twilio_unavailable_and_tell_the_page,
    a_refusal_fails_the_message_at_once_with_twilios_code,
    a_status_callback_before_the_answer_is_kept_and_applied,
);

async fn a_send_is_handed_to_twilio_once_with_its_credentials_and_fields(backend: Backend) {
    let (twilio, pusher) = (FakeTwilio::start().await, FakePusher::start().await);
    let app = spawn(backend, &twilio, &pusher).await;
    let contact = app.contact("+14155550111").await;
    let key = common::unique("key");
    let post = || {
        common::read(common::json_body(
            app.req(reqwest::Method::POST, "/api/messages/send")
                .bearer_auth(&app.fx.alice.token)
                .header("Idempotency-Key", &key),
            &json!({ "contactId": contact, "body": "hello once" }),
        ))
    };
    let first = post().await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert_eq!(first.body["message"]["status"], "queued");
    let id = first.body["message"]["id"].as_str().unwrap().to_owned();
    let sent = wait_message(&app, &id, "the SID", |m| m.twilio_sid.is_some()).await;
    assert_eq!(sent.status, "queued");
    assert!(job(&app, &id).is_none(), "the job is gone once recorded");

    // A retry with the same key answers the message as it is now; no
    // second job, no second SMS.
    let again = post().await;
    assert!([200, 201].contains(&again.status), "{}", again.text);
    assert_eq!(again.body["message"]["id"], id.as_str());
    assert_eq!(
        again.body["message"]["twilioSid"],
        sent.twilio_sid.clone().unwrap()
    );
    assert!(job(&app, &id).is_none());

    let creates = twilio.creates();
    assert_eq!(creates.len(), 1, "{creates:?}");
    let form = &creates[0].form;
    assert_eq!(form["To"], "+14155550111");
    assert_eq!(form["From"], TEAM_PHONE);
    assert_eq!(form["Body"], "hello once");
    assert_eq!(
        form["StatusCallback"],
        format!("{}/api/webhooks/twilio/status", app.address)
    );
    assert_eq!(creates[0].sid, sent.twilio_sid);
    assert!(twilio.lookups().is_empty(), "a clean send needs no lookup");
    twilio.assert_all_proper();

    let events = pusher
        .wait_for(DEADLINE, |_| !status_events(&pusher, &id).is_empty())
        .await;
    assert!(!events.is_empty());
    assert_eq!(
        status_events(&pusher, &id)[0]["twilioSid"],
        sent.twilio_sid.unwrap()
    );
    assert_eq!(metric_of(&app, "sms_sent_total").await, 1.0);
    assert_eq!(metric_of(&app, "sms_retried_total").await, 0.0);
}

async fn a_send_queued_while_twilio_is_unreachable_is_delivered_once_it_comes_up(backend: Backend) {
    let pusher = FakePusher::start().await;
    // Nothing listens there yet: connection refused.
    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let app = spawn_instance(
        TestDb::new(backend),
        &options(backend, &base, &pusher, 5_000),
        None,
    )
    .await;
    let contact = app.contact("+14155550112").await;
    let id = app
        .send_message(&app.fx.alice.token, &contact, "after the outage")
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ok = eventually(DEADLINE, || job(&app, &id).is_some_and(|j| j.attempts >= 2)).await;
    assert!(ok, "retried while Twilio is down: {:?}", job(&app, &id));
    // Put back as nothing was sent: no lookup needed.
    let waiting = job(&app, &id).unwrap();
    assert!(waiting.last_error.is_some());
    assert_eq!(message(&app, &id).status, "queued");

    let twilio = FakeTwilio::start_on(Some(
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap(),
    ))
    .await;
    let sent = wait_message(&app, &id, "delivered once Twilio is up", |m| {
        m.twilio_sid.is_some()
    })
    .await;
    let creates = twilio.creates_of("after the outage");
    assert_eq!(creates.len(), 1, "{creates:?}");
    assert_eq!(creates[0].sid, sent.twilio_sid);
    assert!(
        twilio.lookups().is_empty(),
        "a refused connection sent nothing: no lookup"
    );
    assert!(metric_of(&app, "sms_retried_total").await >= 1.0);
    twilio.assert_all_proper();
}

async fn an_answer_lost_to_the_timeout_is_looked_up_and_its_sid_adopted(backend: Backend) {
    let (twilio, pusher) = (FakeTwilio::start().await, FakePusher::start().await);
    // Twilio takes the message but answers after the client gave up.
    twilio.set_mode(Mode::Accept {
        delay: Duration::from_secs(3),
        store: true,
    });
    let options = options(backend, &twilio.server.uri(), &pusher, 300);
    let app = spawn_instance(TestDb::new(backend), &options, None).await;
    let contact = app.contact("+14155550113").await;
    let id = app
        .send_message(&app.fx.alice.token, &contact, "answered too late")
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sent = wait_message(&app, &id, "the adopted SID", |m| m.twilio_sid.is_some()).await;
    let creates = twilio.creates();
    assert_eq!(creates.len(), 1, "sent twice: {creates:?}");
    assert_eq!(sent.twilio_sid, creates[0].sid);
    assert_eq!(sent.status, "sent", "the status Twilio listed");
    let lookups = twilio.lookups();
    assert!(!lookups.is_empty());
    let today = chrono::Utc::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string();
    let yesterday = (chrono::Utc::now().date_naive() - chrono::Duration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let dated = lookups
        .iter()
        .find(|q| q.iter().any(|(k, _)| k == "DateSent>"))
        .expect("a lookup filtered by DateSent>=");
    let get = |name: &str| {
        dated
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(get("To").as_deref(), Some("+14155550113"));
    assert_eq!(get("From").as_deref(), Some(TEAM_PHONE));
    let day = get("DateSent>").unwrap();
    assert!(day == today || day == yesterday, "{day}");
    twilio.assert_all_proper();
}

async fn a_send_in_flight_when_the_process_stops_is_resumed_by_the_next_start(backend: Backend) {
    let (twilio, pusher) = (FakeTwilio::start().await, FakePusher::start().await);
    // Twilio takes the message; its answer is still on the way when the
    // process stops.
    twilio.set_mode(Mode::Accept {
        delay: Duration::from_secs(20),
        store: true,
    });
    let db = TestDb::new(backend);
    let options = options(backend, &twilio.server.uri(), &pusher, 500);
    let first = spawn_instance(db.clone(), &options, None).await;
    let contact = first.contact("+14155550114").await;
    let id = first
        .send_message(&first.fx.alice.token, &contact, "in flight at the stop")
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(eventually(DEADLINE, || !twilio.creates().is_empty()).await);
    // Stopped with no time to finish: the send is cut off mid-request, as a
    // kill would, and its job stays claimed.
    first.state.sms.shutdown(Duration::ZERO);
    let left = job(&first, &id).expect("the job is still queued");
    assert!(left.lock_token.is_some() && left.sent_unknown, "{left:?}");
    assert_eq!(message(&first, &id).status, "queued");
    let fixtures = first.fx.clone();
    drop(first);

    twilio.set_mode(Mode::Accept {
        delay: Duration::ZERO,
        store: true,
    });
    let second = spawn_instance(db, &options, Some(fixtures)).await;
    let sent = wait_message(&second, &id, "resumed after the lease", |m| {
        m.twilio_sid.is_some()
    })
    .await;
    let creates = twilio.creates();
    assert_eq!(
        creates.len(),
        1,
        "Twilio had it: adopted, not sent again: {creates:?}"
    );
    assert_eq!(sent.twilio_sid, creates[0].sid);
    assert!(job(&second, &id).is_none());
    twilio.assert_all_proper();
}

async fn a_5xx_is_looked_up_and_sent_again_only_when_twilio_has_not_got_it(backend: Backend) {
    let (twilio, pusher) = (FakeTwilio::start().await, FakePusher::start().await);
    twilio.set_mode(Mode::Fail {
        status: 500,
        times: 1,
    });
    let app = spawn(backend, &twilio, &pusher).await;
    let contact = app.contact("+14155550115").await;
    let id = app
        .send_message(&app.fx.alice.token, &contact, "after a 500")
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let sent = wait_message(&app, &id, "sent after the lookup", |m| {
        m.twilio_sid.is_some()
    })
    .await;
    let creates = twilio.creates();
    assert_eq!(
        creates.iter().map(|c| c.answered).collect::<Vec<_>>(),
        vec![500, 201]
    );
    assert_eq!(sent.twilio_sid, creates[1].sid);
    assert!(
        !twilio.lookups().is_empty(),
        "a 500 is looked up before sending again"
    );
    twilio.assert_all_proper();
}

async fn spent_attempts_fail_the_message_with_twilio_unavailable_and_tell_the_page(
    backend: Backend,
) {
    let (twilio, pusher) = (FakeTwilio::start().await, FakePusher::start().await);
    twilio.set_mode(Mode::Fail {
        status: 503,
        times: usize::MAX,
    });
    let app = spawn(backend, &twilio, &pusher).await;
    let contact = app.contact("+14155550116").await;
    let id = app
        .send_message(&app.fx.alice.token, &contact, "never taken")
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let failed = wait_message(&app, &id, "failed", |m| m.status == "failed").await;
    assert_eq!(failed.error_code.as_deref(), Some("twilio_unavailable"));
    assert!(failed.twilio_sid.is_none());
    assert!(job(&app, &id).is_none(), "no job left behind");
    // TWILIO_SEND_ATTEMPTS=4: four requests, each a 503, then no more.
    assert_eq!(twilio.creates_of("never taken").len(), 4);
    pusher
        .wait_for(DEADLINE, |_| {
            status_events(&pusher, &id)
                .iter()
                .any(|m| m["status"] == "failed")
        })
        .await;
    let event = status_events(&pusher, &id)
        .into_iter()
        .find(|m| m["status"] == "failed")
        .expect("message:status failed published");
    assert_eq!(event["errorCode"], "twilio_unavailable");
    let shown = app
        .get(
            &format!("/api/contacts/{contact}/messages"),
            &app.fx.alice.token,
        )
        .await;
    let listed = shown.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id.as_str())
        .cloned()
        .unwrap();
    assert_eq!(listed["status"], "failed");
    assert_eq!(metric_of(&app, "sms_failed_total").await, 1.0);
    assert_eq!(metric_of(&app, "sms_retried_total").await, 3.0);
    assert_eq!(metric_of(&app, "sms_sent_total").await, 0.0);
    twilio.assert_all_proper();
}

async fn a_refusal_fails_the_message_at_once_with_twilios_code(backend: Backend) {
    let (twilio, pusher) = (FakeTwilio::start().await, FakePusher::start().await);
    twilio.set_mode(Mode::Refuse { code: 21211 });
    let app = spawn(backend, &twilio, &pusher).await;
    let contact = app.contact("+14155550117").await;
    let id = app
        .send_message(&app.fx.alice.token, &contact, "refused")
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let failed = wait_message(&app, &id, "failed", |m| m.status == "failed").await;
    assert_eq!(failed.error_code.as_deref(), Some("21211"));
    assert!(job(&app, &id).is_none());
    pusher
        .wait_for(DEADLINE, |_| {
            status_events(&pusher, &id)
                .iter()
                .any(|m| m["errorCode"] == "21211")
        })
        .await;
    assert!(status_events(&pusher, &id)
        .iter()
        .any(|m| m["errorCode"] == "21211"));
    // Once: a refusal is not retried, and needs no lookup.
    assert_eq!(twilio.creates().len(), 1);
    assert!(twilio.lookups().is_empty());
    assert_eq!(metric_of(&app, "sms_retried_total").await, 0.0);
    assert_eq!(metric_of(&app, "sms_failed_total").await, 1.0);
    twilio.assert_all_proper();
}

async fn a_status_callback_before_the_answer_is_kept_and_applied(backend: Backend) {
    let (twilio, pusher) = (FakeTwilio::start().await, FakePusher::start().await);
    twilio.set_mode(Mode::Accept {
        delay: Duration::from_millis(1500),
        store: true,
    });
    let app = spawn(backend, &twilio, &pusher).await;
    let contact = app.contact("+14155550118").await;
    let id = app
        .send_message(&app.fx.alice.token, &contact, "fast callback")
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(eventually(DEADLINE, || !twilio.creates().is_empty()).await);
    let create = twilio.creates().remove(0);
    let sid = create.sid.clone().unwrap();
    // Twilio calls back while its answer to the send is still on its way.
    let url = create.form["StatusCallback"].clone();
    let params: Vec<(String, String)> = [
        ("MessageSid", sid.as_str()),
        ("MessageStatus", "sent"),
        ("AccountSid", ACCOUNT_SID),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let signature = api_server::twilio::signature::expected_signature(AUTH_TOKEN, &url, &params);
    let form: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter())
        .finish();
    let res = common::read(
        app.req(reqwest::Method::POST, "/api/webhooks/twilio/status")
            .header("X-Twilio-Signature", signature)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(form),
    )
    .await;
    assert_eq!(res.status, 204, "{}", res.text);
    let sent = wait_message(&app, &id, "the SID", |m| m.twilio_sid.is_some()).await;
    assert_eq!(sent.twilio_sid.as_deref(), Some(sid.as_str()));
    assert_eq!(sent.status, "sent", "the early callback was applied");
    twilio.assert_all_proper();
}

/// Two instances on one PostgreSQL database: every send goes out exactly
/// once, whichever instance queued it.
#[actix_web::test]
async fn two_instances_on_one_postgres_database_send_each_sms_once() {
    if postgres_url().is_none() {
        return;
    }
    let (twilio, pusher) = (FakeTwilio::start().await, FakePusher::start().await);
    let db = TestDb::new(Backend::Postgres);
    let options = options(Backend::Postgres, &twilio.server.uri(), &pusher, 5_000);
    let a = spawn_instance(db.clone(), &options, None).await;
    let b = spawn_instance(db, &options, Some(a.fx.clone())).await;
    let contact = a.contact("+14155550119").await;
    let sends = (0..20).map(|n| {
        let (app, token) = if n % 2 == 0 {
            (&a, a.fx.alice.token.clone())
        } else {
            (&b, b.fx.bob.token.clone())
        };
        let contact = contact.clone();
        async move {
            app.send_message(&token, &contact, &format!("burst {n}"))
                .await["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    });
    let ids = futures_util::future::join_all(sends).await;
    for id in &ids {
        wait_message(&a, id, "sent", |m| m.twilio_sid.is_some()).await;
    }
    let creates = twilio.creates();
    assert_eq!(creates.len(), 20, "each SMS once: {creates:?}");
    for n in 0..20 {
        assert_eq!(twilio.creates_of(&format!("burst {n}")).len(), 1);
    }
    twilio.assert_all_proper();
}

/// Outbound messages an earlier build left `queued` without a SID (its send
/// ran in a task a stop could cut short) are queued by the migration and
/// looked up first: one Twilio has is adopted; one it has not, written long
/// ago, fails instead of reaching the contact late. Nothing is sent.
#[actix_web::test]
async fn messages_left_queued_by_an_earlier_build_are_looked_up_not_sent_blindly() {
    use diesel::connection::SimpleConnection;
    use diesel::Connection;
    let (twilio, pusher) = (FakeTwilio::start().await, FakePusher::start().await);
    let db = TestDb::new(Backend::Sqlite);
    let mut conn = diesel::SqliteConnection::establish(&db.url).unwrap();
    for up in [
        include_str!("../../../migrations/sqlite/2026-11-25-000001_init/up.sql"),
        include_str!("../../../migrations/sqlite/2026-11-25-000002_early_statuses/up.sql"),
        include_str!("../../../migrations/sqlite/2026-11-26-000003_contact_unread_count/up.sql"),
    ] {
        conn.batch_execute(up).unwrap();
    }
    conn.batch_execute(
        "CREATE TABLE __diesel_schema_migrations (
             version VARCHAR(50) PRIMARY KEY NOT NULL,
             run_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP);
         INSERT INTO __diesel_schema_migrations (version)
             VALUES ('20261125000001'), ('20261125000002'), ('20261126000003');
         INSERT INTO teams (id, name, phone_number, created_at) VALUES (1, 'Acme', '+14155550100', '2026-11-25 00:00:00');
         INSERT INTO contacts (id, team_id, name, phone, created_at, updated_at) VALUES
             (1, 1, 'Carol', '+14155550121', '2026-11-25 00:00:00', '2026-11-25 00:00:00');
         INSERT INTO messages (id, team_id, contact_id, direction, body, media, status, twilio_sid, created_at) VALUES
             (1, 1, 1, 'outbound', 'reached Twilio', '[]', 'queued', NULL, '2026-11-25 00:00:01'),
             (2, 1, 1, 'outbound', 'never reached Twilio', '[]', 'queued', NULL, '2026-11-25 00:00:02'),
             (3, 1, 1, 'outbound', 'sent long ago', '[]', 'delivered', 'SM00000000000000000000000000000003', '2026-11-25 00:00:03');",
    )
    .unwrap();
    drop(conn);
    let sid = twilio.store("+14155550121", "reached Twilio");

    let map = common::config_map(
        &options(Backend::Sqlite, &twilio.server.uri(), &pusher, 5_000),
        &db,
    );
    let config = api_server::config::Config::from_lookup(|name| map.get(name).cloned()).unwrap();
    let running = api_server::app::build(config).unwrap();
    let handle = running.server.handle();
    actix_web::rt::spawn(running.server);
    let state = running.state;
    let read = |id: i64| Message::reload(&mut db.connect(), id).unwrap();
    let settled = eventually(DEADLINE, || {
        read(1).twilio_sid.is_some() && read(2).status == "failed"
    })
    .await;
    assert!(settled, "{:?} {:?}", read(1), read(2));
    assert_eq!(read(1).twilio_sid.as_deref(), Some(sid.as_str()));
    assert_eq!(read(2).error_code.as_deref(), Some("twilio_unavailable"));
    assert_eq!(read(3).status, "delivered");
    assert!(
        twilio.creates().is_empty(),
        "nothing sent blindly: {:?}",
        twilio.creates()
    );
    assert!(SmsJob::find(&mut db.connect(), 3).unwrap().is_none());
    twilio.assert_all_proper();
    state.sms.shutdown(Duration::from_secs(2));
    state.dispatcher.shutdown(Duration::from_secs(2));
    handle.stop(false).await;
}
