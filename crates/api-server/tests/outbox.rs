//! The outbox: a request never waits for (or fails because of) the realtime
//! service; events queued while it is down or unreachable are published
//! when it comes back, in order per contact, none lost; and two instances
//! on one PostgreSQL database publish each event exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{
    created_ids, metric, postgres_url, spawn_hosted, spawn_instance, Backend, FakePusher, Options,
    PusherTarget, Recorded, TestApp, TestDb,
};

backend_tests!(
    sends_succeed_quickly_during_an_outage_and_every_event_follows_the_recovery,
    sends_succeed_when_the_realtime_service_is_unreachable,
    sends_stay_fast_while_the_realtime_service_is_slow,
    events_queued_before_a_restart_are_published_by_the_next_start,
);

/// Message ids of `message:created` per contact channel, in arrival order.
fn created_per_contact(events: &[Recorded]) -> HashMap<String, Vec<i64>> {
    let mut per: HashMap<String, Vec<i64>> = HashMap::new();
    for event in events.iter().filter(|e| e.name == "message:created") {
        let id = event.data["message"]["id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        per.entry(event.channels[0].clone()).or_default().push(id);
    }
    per
}

fn assert_in_order(per_contact: &HashMap<String, Vec<i64>>) {
    for (channel, ids) in per_contact {
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(ids, &sorted, "events of {channel} out of commit order");
    }
}

async fn outbox_depth(app: &TestApp) -> f64 {
    metric(&app.metrics().await, "outbox_depth").expect("outbox_depth is exposed")
}

/// The outbox depth once it reaches 0 (or after 5 s): a published round is
/// deleted when the dispatcher commits it, just after the publish.
async fn drained(app: &TestApp) -> f64 {
    let mut depth = outbox_depth(app).await;
    for _ in 0..100 {
        if depth == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        depth = outbox_depth(app).await;
    }
    depth
}

async fn sends_succeed_quickly_during_an_outage_and_every_event_follows_the_recovery(
    backend: Backend,
) {
    let fake = FakePusher::start().await;
    let app = spawn_hosted(backend, &fake).await;
    let contacts = [
        app.contact("+14155550160").await,
        app.contact("+14155550161").await,
    ];
    let token = app.fx.alice.token.clone();

    fake.set_down(true);
    let mut sent: Vec<String> = Vec::new();
    for n in 0..20 {
        let contact = &contacts[n % 2];
        let started = Instant::now();
        let message = app
            .send_message(&token, contact, &format!("during outage {n}"))
            .await;
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(1),
            "send {n} took {elapsed:?} while Pusher was down"
        );
        sent.push(message["id"].as_str().unwrap().to_owned());
    }
    // The dispatcher did try, and was refused.
    let tried = common::eventually(Duration::from_secs(5), || fake.refused() > 0).await;
    assert!(tried, "the fake saw no publish attempt during the outage");
    assert!(created_ids(&fake.events()).is_empty());
    let depth = outbox_depth(&app).await;
    assert!(depth >= 20.0, "outbox_depth {depth} while Pusher is down");
    let metrics = app.metrics().await;
    assert!(
        metric(&metrics, "pusher_errors_total").unwrap_or(0.0) > 0.0,
        "{metrics}"
    );

    fake.set_down(false);
    let recovered = Instant::now();
    let events = fake
        .wait_for(Duration::from_secs(10), |e| created_ids(e).len() >= 20)
        .await;
    let took = recovered.elapsed();
    let mut ids = created_ids(&events);
    assert_eq!(ids.len(), 20, "after {took:?}: {ids:?}");
    ids.sort();
    let mut expected = sent.clone();
    expected.sort();
    assert_eq!(ids, expected, "every message, once");
    assert_in_order(&created_per_contact(&events));
    // The contact list updates follow too (one multi-channel trigger each).
    let updated = fake
        .wait_for(Duration::from_secs(5), |e| {
            e.iter().filter(|e| e.name == "contact:updated").count() >= 20
        })
        .await;
    assert_eq!(
        updated
            .iter()
            .filter(|e| e.name == "contact:updated")
            .count(),
        20
    );
    assert_eq!(drained(&app).await, 0.0);
    fake.assert_all_signed();
}

async fn sends_succeed_when_the_realtime_service_is_unreachable(backend: Backend) {
    let options = Options {
        pusher: Some(unreachable_pusher()),
        ..Options::embedded(backend)
    };
    let db = TestDb::new(backend);
    let app = spawn_instance(db, &options, None).await;
    let contact = app.contact("+14155550162").await;
    for n in 0..5 {
        let started = Instant::now();
        app.send_message(&app.fx.alice.token, &contact, &format!("{n}"))
            .await;
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    let health = app.get_anon("/api/health").await;
    assert_eq!(health.status, 200, "health is about the database");
    assert!(outbox_depth(&app).await >= 5.0);
}

async fn sends_stay_fast_while_the_realtime_service_is_slow(backend: Backend) {
    let fake = FakePusher::start().await;
    let app = spawn_hosted(backend, &fake).await;
    let contact = app.contact("+14155550167").await;
    fake.set_delay(Duration::from_secs(2));
    let mut sent = Vec::new();
    for n in 0..5 {
        let started = Instant::now();
        let m = app
            .send_message(&app.fx.alice.token, &contact, &format!("slow {n}"))
            .await;
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(1),
            "send {n} took {elapsed:?}"
        );
        sent.push(m["id"].as_str().unwrap().to_owned());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The first publish is still hanging when the sends are done.
    assert!(created_ids(&fake.events()).len() < 5);
    fake.set_delay(Duration::ZERO);
    let events = fake
        .wait_for(Duration::from_secs(10), |e| created_ids(e).len() >= 5)
        .await;
    assert_eq!(created_ids(&events), sent);
    fake.assert_all_signed();
}

/// `PUSHER_*` pointing at a port where nothing listens.
fn unreachable_pusher() -> PusherTarget {
    PusherTarget {
        app_id: "4242".into(),
        key: "fakekey0123456789abc".into(),
        secret: "fakesecret0123456789".into(),
        port: common::free_port(),
    }
}

async fn events_queued_before_a_restart_are_published_by_the_next_start(backend: Backend) {
    let fake = FakePusher::start().await;
    let db = TestDb::new(backend);
    // First run: the realtime service cannot be reached.
    let down = Options {
        pusher: Some(unreachable_pusher()),
        ..Options::embedded(backend)
    };
    let first = spawn_instance(db.clone(), &down, None).await;
    let contact = first.contact("+14155550163").await;
    let mut sent = Vec::new();
    for n in 0..3 {
        let m = first
            .send_message(&first.fx.alice.token, &contact, &format!("queued {n}"))
            .await;
        sent.push(m["id"].as_str().unwrap().to_owned());
    }
    let fixtures = first.fx.clone();
    drop(first);
    // Next start: the service is back.
    let second = spawn_instance(db, &Options::hosted(backend, &fake), Some(fixtures)).await;
    let events = fake
        .wait_for(Duration::from_secs(10), |e| created_ids(e).len() >= 3)
        .await;
    assert_eq!(created_ids(&events), sent);
    assert_eq!(drained(&second).await, 0.0);
    fake.assert_all_signed();
}

/// Two instances share one PostgreSQL database and publish to the same
/// Pusher app: each event goes out exactly once, in order per contact.
#[actix_web::test]
async fn two_instances_on_one_postgres_database_publish_every_event_once() {
    if postgres_url().is_none() {
        return;
    }
    let fake = FakePusher::start().await;
    let db = TestDb::new(Backend::Postgres);
    let options = Options::hosted(Backend::Postgres, &fake);
    let a = spawn_instance(db.clone(), &options, None).await;
    let b = spawn_instance(db, &options, Some(a.fx.clone())).await;
    assert_ne!(a.port, b.port);
    let contacts = [
        a.contact("+14155550164").await,
        a.contact("+14155550165").await,
        a.contact("+14155550166").await,
    ];
    let mut sent: Vec<String> = Vec::new();
    for n in 0..30 {
        let (app, token) = if n % 2 == 0 {
            (&a, &a.fx.alice.token)
        } else {
            (&b, &b.fx.bob.token)
        };
        let m = app
            .send_message(token, &contacts[n % 3], &format!("seq {n}"))
            .await;
        sent.push(m["id"].as_str().unwrap().to_owned());
    }
    // And 30 more at once, half through each instance.
    let concurrent = (0..30).map(|n| {
        let (app, token) = if n % 2 == 0 {
            (&a, a.fx.alice.token.clone())
        } else {
            (&b, b.fx.bob.token.clone())
        };
        let contact = contacts[n % 3].clone();
        async move {
            app.send_message(&token, &contact, &format!("burst {n}"))
                .await["id"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    });
    sent.extend(futures_util::future::join_all(concurrent).await);
    assert_eq!(sent.len(), 60);

    let events = fake
        .wait_for(Duration::from_secs(15), |e| {
            created_ids(e).len() >= 60
                && e.iter().filter(|e| e.name == "contact:updated").count() >= 60
        })
        .await;
    // Give a late duplicate the chance to show up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let events = if fake.events().len() > events.len() {
        fake.events()
    } else {
        events
    };
    let mut counts: HashMap<String, usize> = HashMap::new();
    for id in created_ids(&events) {
        *counts.entry(id).or_default() += 1;
    }
    for id in &sent {
        assert_eq!(counts.get(id), Some(&1), "message {id} published once");
    }
    assert_eq!(counts.len(), 60, "no event for an unknown message");
    // The sequential part is in commit order per contact.
    let per_contact = created_per_contact(&events);
    let sequential: Vec<i64> = sent[..30].iter().map(|id| id.parse().unwrap()).collect();
    for ids in per_contact.values() {
        let seq: Vec<i64> = ids
            .iter()
            .copied()
            .filter(|id| sequential.contains(id))
            .collect();
        let mut sorted = seq.clone();
        sorted.sort_unstable();
        assert_eq!(seq, sorted);
    }
    let updates = events
        .iter()
        .filter(|e| e.name == "contact:updated")
        .count();
    assert_eq!(updates, 60, "one contact:updated trigger per message");
    fake.assert_all_signed();
}

backend_tests!(concurrent_writes_all_succeed_and_each_event_is_published_once);

/// Written by hand instead of with `backend_tests!`: only PostgreSQL fails.
mod concurrent_reads_leave_the_true_unread_count_in_the_last_contact_update {
    #[actix_web::test]
    async fn sqlite() {
        super::concurrent_reads_leave_the_true_unread_count_in_the_last_contact_update(
            crate::common::Backend::Sqlite,
        )
        .await;
    }

    /// Deterministic on PostgreSQL: the outbox is locked so that both reads
    /// are inside their transaction before either one publishes.
    #[actix_web::test]
    async fn postgres() {
        if crate::common::postgres_url().is_some() {
            super::interleaved_reads_on_postgres_leave_the_true_unread_count().await;
        }
    }
}

async fn concurrent_writes_all_succeed_and_each_event_is_published_once(backend: Backend) {
    let fake = FakePusher::start().await;
    let app = spawn_hosted(backend, &fake).await;
    let contacts = [
        app.contact("+14155550170").await,
        app.contact("+14155550171").await,
    ];
    let inbound: Vec<i64> = (0..10)
        .map(|n| app.insert_inbound(app.fx.team, &contacts[n % 2], &format!("in {n}")))
        .collect();
    let tokens = [app.fx.alice.token.clone(), app.fx.bob.token.clone()];
    let sends = (0..30).map(|n| {
        let (app, token, contact) = (&app, tokens[n % 2].clone(), contacts[n % 2].clone());
        async move {
            app.post(
                "/api/messages/send",
                &token,
                serde_json::json!({ "contactId": contact, "body": format!("burst {n}") }),
            )
            .await
        }
    });
    let notes = (0..10).map(|n| {
        let (app, token, contact) = (&app, tokens[n % 2].clone(), contacts[n % 2].clone());
        async move {
            app.post(
                &format!("/api/contacts/{contact}/notes"),
                &token,
                serde_json::json!({ "body": format!("note {n}") }),
            )
            .await
        }
    });
    let reads = inbound.iter().enumerate().map(|(n, id)| {
        let (app, token) = (&app, tokens[n % 2].clone());
        async move {
            app.post(
                &format!("/api/messages/{id}/read"),
                &token,
                serde_json::json!({}),
            )
            .await
        }
    });
    let (sends, notes, reads) = tokio::join!(
        futures_util::future::join_all(sends),
        futures_util::future::join_all(notes),
        futures_util::future::join_all(reads),
    );
    for res in sends.iter().chain(notes.iter()) {
        assert_eq!(res.status, 201, "{}", res.text);
    }
    for res in &reads {
        assert_eq!(res.status, 200, "{}", res.text);
    }
    let count = |e: &[Recorded], name: &str| e.iter().filter(|e| e.name == name).count();
    let events = fake
        .wait_for(Duration::from_secs(10), |e| {
            count(e, "message:created") >= 30
                && count(e, "note:created") >= 10
                && count(e, "message:read") >= 10
                && count(e, "contact:updated") >= 40
        })
        .await;
    // Give a late duplicate the chance to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = if fake.events().len() > events.len() {
        fake.events()
    } else {
        events
    };
    assert_eq!(count(&events, "message:created"), 30);
    assert_eq!(count(&events, "note:created"), 10);
    assert_eq!(count(&events, "message:read"), 10);
    assert_eq!(count(&events, "contact:updated"), 40);
    let mut ids = created_ids(&events);
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 30);
    fake.assert_all_signed();
}

async fn concurrent_reads_leave_the_true_unread_count_in_the_last_contact_update(backend: Backend) {
    let fake = FakePusher::start().await;
    let app = spawn_hosted(backend, &fake).await;
    let mut pairs = Vec::new();
    for n in 0..24 {
        let contact = app.contact(&format!("+141555502{n:02}")).await;
        let first = app.insert_inbound(app.fx.team, &contact, "one");
        let second = app.insert_inbound(app.fx.team, &contact, "two");
        pairs.push((contact, first, second));
    }
    let reads = pairs.iter().flat_map(|(_, first, second)| {
        [
            (*first, app.fx.alice.token.clone()),
            (*second, app.fx.bob.token.clone()),
        ]
    });
    let reads = reads.map(|(id, token)| {
        let app = &app;
        async move {
            app.post(
                &format!("/api/messages/{id}/read"),
                &token,
                serde_json::json!({}),
            )
            .await
        }
    });
    for res in futures_util::future::join_all(reads).await {
        assert_eq!(res.status, 200, "{}", res.text);
    }
    let alice_channel = format!("private-user-{}", app.fx.alice.id);
    let events = fake
        .wait_for(Duration::from_secs(10), |e| {
            e.iter().filter(|e| e.name == "contact:updated").count() >= 48
        })
        .await;
    for (contact, _, _) in &pairs {
        let view = app
            .get(&format!("/api/contacts/{contact}"), &app.fx.alice.token)
            .await;
        assert_eq!(view.body["contact"]["unreadCount"], 0);
        let last = events
            .iter()
            .filter(|e| e.name == "contact:updated" && e.channels.contains(&alice_channel))
            .rfind(|e| e.data["contact"]["id"] == contact.as_str())
            .unwrap();
        assert_eq!(
            last.data["contact"]["unreadCount"], 0,
            "the last contact:updated of contact {contact} leaves a stale unread count: {:?}",
            last.data
        );
    }
}

async fn interleaved_reads_on_postgres_leave_the_true_unread_count() {
    use diesel::sql_types::BigInt;
    use diesel::{Connection, RunQueryDsl};

    let fake = FakePusher::start().await;
    let app = spawn_hosted(Backend::Postgres, &fake).await;
    let contact = app.contact("+14155550190").await;
    let first = app.insert_inbound(app.fx.team, &contact, "one");
    let second = app.insert_inbound(app.fx.team, &contact, "two");

    // Hold the outbox so both reads stop at their first outbox insert,
    // after marking their message and before committing.
    let mut lock = diesel::PgConnection::establish(&app.db.url).unwrap();
    diesel::sql_query("BEGIN").execute(&mut lock).unwrap();
    diesel::sql_query("LOCK TABLE outbox IN EXCLUSIVE MODE")
        .execute(&mut lock)
        .unwrap();
    let read = |id: i64, token: String| {
        let request = app
            .req(reqwest::Method::POST, &format!("/api/messages/{id}/read"))
            .bearer_auth(token);
        actix_web::rt::spawn(common::read(request))
    };
    let a = read(first, app.fx.alice.token.clone());
    let b = read(second, app.fx.bob.token.clone());
    // Both requests wait (at the outbox, or behind one another); the
    // dispatcher's claim (RowShareLock) does not count.
    let waiting = "(SELECT count(DISTINCT pid) FROM pg_locks \
                   WHERE NOT granted AND mode <> 'RowShareLock')";
    let mut both_waiting = false;
    for _ in 0..250 {
        let n: i64 = diesel::select(diesel::dsl::sql::<BigInt>(waiting))
            .get_result(&mut lock)
            .unwrap();
        if n >= 2 {
            both_waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    diesel::sql_query("COMMIT").execute(&mut lock).unwrap();
    assert!(both_waiting, "both reads were in their transaction");
    assert_eq!(a.await.unwrap().status, 200);
    assert_eq!(b.await.unwrap().status, 200);

    let view = app
        .get(&format!("/api/contacts/{contact}"), &app.fx.alice.token)
        .await;
    assert_eq!(view.body["contact"]["unreadCount"], 0);
    let alice_channel = format!("private-user-{}", app.fx.alice.id);
    let events = fake
        .wait_for(Duration::from_secs(10), |e| {
            e.iter().filter(|e| e.name == "contact:updated").count() >= 2
        })
        .await;
    let last = events
        .iter()
        .rfind(|e| e.name == "contact:updated" && e.channels.contains(&alice_channel))
        .unwrap();
    assert_eq!(
        last.data["contact"]["unreadCount"], 0,
        "the last contact:updated leaves a stale unread count: {}",
        last.data
    );
}

/// While the last round's removal is still queued in SQLite's writer, the
/// next claim leaves those events out, and they do not hold back the later
/// events of the same contact.
#[test]
fn a_claim_leaves_out_published_events_whose_removal_is_still_queued_and_waits_behind_retried_ones()
{
    use api_server::models::outbox::OutboxRow;
    use std::collections::HashSet;

    let db = TestDb::new(Backend::Sqlite);
    api_server::db::migrate(&db.url).unwrap();
    // Contact 7: events 1, 2, 3; contact 8: event 4.
    for contact in [7, 7, 7, 8] {
        queue(&db, contact, "message:created", &["private-contact-7"]);
    }
    let now = api_server::models::now();
    let claimed = |settling: &[i64], limit| -> Vec<i64> {
        let settling: HashSet<i64> = settling.iter().copied().collect();
        OutboxRow::claim(&mut db.connect(), now, limit, &settling)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect()
    };
    assert_eq!(claimed(&[], 10), vec![1, 2, 3, 4]);
    assert_eq!(
        claimed(&[1, 2], 10),
        vec![3, 4],
        "settling events are left out"
    );
    assert_eq!(
        claimed(&[1, 2], 1),
        vec![3],
        "the limit counts claimable events"
    );
    // A settling event is as good as gone: it breaks no contact's run.
    assert_eq!(claimed(&[2], 10), vec![1, 3, 4]);
    // An event put back for later is not: its contact's later events wait.
    OutboxRow::reschedule(&mut db.connect(), &[1], now + chrono::Duration::hours(1)).unwrap();
    assert_eq!(claimed(&[], 10), vec![4], "2 and 3 wait behind 1");
}

// ---------------------------------------------------------------------------
// The dispatcher on its own, with a publisher in the test's hands.

/// A publisher that records what it accepts, in order, as
/// (channel, event name), and fails on request: every batch refused for
/// good (as a 400 would be), chosen events' single publish failing for a
/// while (as a 503), every publish taking a while.
#[derive(Default)]
struct ScriptedPublisher {
    accepted: std::sync::Mutex<Vec<(String, String)>>,
    refuse_batches: bool,
    /// Event name → how many more times its single publish fails.
    unavailable_for: std::sync::Mutex<HashMap<String, usize>>,
    delay: Duration,
}

impl ScriptedPublisher {
    fn accepted(&self) -> Vec<(String, String)> {
        self.accepted.lock().unwrap().clone()
    }

    /// The accepted event names of `channel`, in order.
    fn on(&self, channel: &str) -> Vec<String> {
        self.accepted()
            .into_iter()
            .filter(|(c, _)| c == channel)
            .map(|(_, name)| name)
            .collect()
    }

    fn record(&self, event: &realtime_core::Event) {
        let channel = event.channels().first().cloned().unwrap_or_default();
        self.accepted
            .lock()
            .unwrap()
            .push((channel, event.name().to_owned()));
    }
}

impl realtime_core::Publisher for ScriptedPublisher {
    fn publish(
        &self,
        event: realtime_core::Event,
    ) -> realtime_core::BoxFuture<'_, realtime_core::Result<realtime_core::TriggerResponse>> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            if let Some(left) = self.unavailable_for.lock().unwrap().get_mut(event.name()) {
                if *left > 0 {
                    *left -= 1;
                    return Err(realtime_core::Error::Http {
                        status: 503,
                        body: "Service Unavailable".into(),
                    });
                }
            }
            self.record(&event);
            Ok(realtime_core::TriggerResponse::default())
        })
    }

    fn publish_batch(
        &self,
        events: Vec<realtime_core::Event>,
    ) -> realtime_core::BoxFuture<'_, realtime_core::Result<realtime_core::BatchResponse>> {
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            if self.refuse_batches {
                return Err(realtime_core::Error::Http {
                    status: 400,
                    body: "refused".into(),
                });
            }
            for event in &events {
                self.record(event);
            }
            Ok(realtime_core::BatchResponse::default())
        })
    }
}

/// Migrates `db` and starts a dispatcher on it as the app does (with the
/// writer on SQLite).
fn start_dispatcher(
    db: &TestDb,
    publisher: std::sync::Arc<ScriptedPublisher>,
) -> api_server::realtime::dispatcher::Dispatcher {
    api_server::db::migrate(&db.url).unwrap();
    let pool = api_server::db::pool(&db.url).unwrap();
    let writer = match db.backend {
        Backend::Sqlite => Some(api_server::db::writer::Writer::start(&db.url).unwrap()),
        Backend::Postgres => None,
    };
    api_server::realtime::dispatcher::Dispatcher::start(
        pool,
        writer,
        publisher,
        api_server::metrics::AppMetrics::new(),
    )
    .unwrap()
}

/// Queues event `name` of `contact` on `channels` (due now).
fn queue(db: &TestDb, contact: i64, name: &str, channels: &[&str]) {
    use api_server::models::outbox::{NewOutboxRow, OutboxRow};
    let now = api_server::models::now();
    OutboxRow::insert(
        &mut db.connect(),
        &NewOutboxRow {
            team_id: 1,
            contact_id: Some(contact),
            event: name,
            channels: serde_json::to_string(channels).unwrap(),
            data: "{}".into(),
            socket_id: None,
            attempts: 0,
            next_attempt_at: now,
            created_at: now,
        },
    )
    .unwrap();
}

/// The rows left in the outbox, as (event name, attempts), by id.
fn queued(db: &TestDb) -> Vec<(String, i32)> {
    use api_server::db::schema::outbox;
    use diesel::prelude::*;
    outbox::table
        .order(outbox::id)
        .select((outbox::event, outbox::attempts))
        .load(&mut db.connect())
        .unwrap()
}

/// Waits until `check` holds (at most 10 s); answers whether it did.
/// `common::eventually` for the tests that run without a runtime.
fn within_10s(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

backend_tests!(
    an_event_failing_for_a_moment_while_its_refused_batch_is_retried_singly_is_not_overtaken,
    shutdown_stops_publishing_at_its_deadline_even_in_the_middle_of_a_round,
);

/// A batch refused for good is retried event by event; when one of those
/// fails for a moment, its contact's later events wait behind it instead
/// of going out first.
async fn an_event_failing_for_a_moment_while_its_refused_batch_is_retried_singly_is_not_overtaken(
    backend: Backend,
) {
    let db = TestDb::new(backend);
    api_server::db::migrate(&db.url).unwrap();
    // One batch: contact 7's a1, a2, a3, then contact 8's b1.
    for (contact, name) in [(7, "a1"), (7, "a2"), (7, "a3"), (8, "b1")] {
        queue(&db, contact, name, &[&format!("private-contact-{contact}")]);
    }
    let publisher = std::sync::Arc::new(ScriptedPublisher {
        refuse_batches: true,
        unavailable_for: std::sync::Mutex::new(HashMap::from([("a2".to_owned(), 1)])),
        ..ScriptedPublisher::default()
    });
    let dispatcher = start_dispatcher(&db, publisher.clone());
    let drained = common::eventually(Duration::from_secs(10), || queued(&db).is_empty()).await;
    dispatcher.shutdown(Duration::from_secs(1));
    assert!(drained, "still queued: {:?}", queued(&db));
    assert_eq!(publisher.on("private-contact-7"), ["a1", "a2", "a3"]);
    assert_eq!(publisher.on("private-contact-8"), ["b1"]);
}

/// No publish starts after the shutdown's deadline, even with most of a
/// round left (here 40 publishes of 200 ms each): shutdown returns within
/// the one publish under way, not after the round or its 6 s of grace, and
/// what was not published stays queued untouched.
async fn shutdown_stops_publishing_at_its_deadline_even_in_the_middle_of_a_round(backend: Backend) {
    let db = TestDb::new(backend);
    api_server::db::migrate(&db.url).unwrap();
    // Events on two channels each go out one by one.
    for n in 0..40 {
        queue(
            &db,
            n,
            &format!("e{n}"),
            &["private-team-1", "private-user-1"],
        );
    }
    let publisher = std::sync::Arc::new(ScriptedPublisher {
        delay: Duration::from_millis(200),
        ..ScriptedPublisher::default()
    });
    let dispatcher = start_dispatcher(&db, publisher.clone());
    assert!(common::eventually(Duration::from_secs(10), || !publisher.accepted().is_empty()).await);
    let started = Instant::now();
    dispatcher.shutdown(Duration::ZERO);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");
    // `shutdown` joined the thread: nothing more goes out or is removed.
    let published = publisher.accepted().len();
    assert!(published < 40, "the whole round went out");
    let left = queued(&db);
    assert_eq!(left.len(), 40 - published, "{left:?}");
    assert!(
        left.iter().all(|(_, attempts)| *attempts == 0),
        "left untouched: {left:?}"
    );
}

/// When removing published events fails for a while, they are not
/// published again after their contact's later events (a stale event after
/// a fresh one): they are left out of the claims and their removal is tried
/// again until it commits.
#[test]
fn a_published_event_whose_removal_fails_for_a_while_is_not_published_again() {
    use diesel::connection::SimpleConnection;

    let db = TestDb::new(Backend::Sqlite);
    api_server::db::migrate(&db.url).unwrap();
    // Another connection to the file makes every removal fail.
    db.connect()
        .batch_execute(
            "CREATE TRIGGER no_delete BEFORE DELETE ON outbox \
             BEGIN SELECT RAISE(FAIL, 'held'); END;",
        )
        .unwrap();
    let publisher = std::sync::Arc::new(ScriptedPublisher::default());
    let dispatcher = start_dispatcher(&db, publisher.clone());
    let channel = "private-contact-7";
    queue(&db, 7, "a", &[channel]);
    dispatcher.wake();
    assert!(within_10s(|| publisher
        .on(channel)
        .contains(&"a".to_owned())));
    queue(&db, 7, "b", &[channel]);
    dispatcher.wake();
    assert!(within_10s(|| publisher
        .on(channel)
        .contains(&"b".to_owned())));
    // Both are still queued: their removal fails.
    assert_eq!(queued(&db).len(), 2);
    db.connect()
        .batch_execute("DROP TRIGGER no_delete;")
        .unwrap();
    let drained = within_10s(|| queued(&db).is_empty());
    dispatcher.shutdown(Duration::from_secs(1));
    assert!(drained, "still queued: {:?}", queued(&db));
    assert_eq!(publisher.on(channel), ["a", "b"]);
}

/// While removals keep failing, the dispatcher stops claiming once about ten
/// rounds' worth of published events wait for removal, rather than leaving
/// ever more of them out of each claim (one bound parameter each: SQLite
/// refuses more than 32766). Once removing works again, everything goes out
/// once, in order.
#[test]
fn while_removals_keep_failing_claims_stop_at_the_cap_and_resume_after() {
    use diesel::connection::SimpleConnection;

    const EVENTS: usize = 12_000;
    let db = TestDb::new(Backend::Sqlite);
    api_server::db::migrate(&db.url).unwrap();
    let mut conn = db.connect();
    conn.batch_execute(&format!(
        "CREATE TRIGGER no_delete BEFORE DELETE ON outbox \
           BEGIN SELECT RAISE(FAIL, 'held'); END; \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {EVENTS}) \
         INSERT INTO outbox (team_id, contact_id, event, channels, data, attempts, \
                             next_attempt_at, created_at) \
         SELECT 1, NULL, 'e' || i, '[\"c\"]', '{{}}', 0, \
                '2000-01-01 00:00:00', '2000-01-01 00:00:00' FROM n;"
    ))
    .unwrap();
    let publisher = std::sync::Arc::new(ScriptedPublisher::default());
    let dispatcher = start_dispatcher(&db, publisher.clone());
    dispatcher.wake();
    assert!(within_10s(|| publisher.accepted().len() >= 10_000));
    // Several more rounds' time: none may claim beyond the cap.
    std::thread::sleep(Duration::from_secs(2));
    let held = publisher.accepted().len();
    assert!(
        held <= 11_000,
        "{held} published while none could be removed"
    );
    conn.batch_execute("DROP TRIGGER no_delete;").unwrap();
    let drained = within_10s(|| queued(&db).is_empty());
    dispatcher.shutdown(Duration::from_secs(1));
    assert!(drained, "{} still queued", queued(&db).len());
    let names: Vec<String> = publisher.on("c");
    let expected: Vec<String> = (1..=EVENTS).map(|i| format!("e{i}")).collect();
    assert!(
        names == expected,
        "published {} events, not each once in order",
        names.len()
    );
}

/// On SQLite the dispatcher must settle through the writer: publishing
/// inside a write transaction of its own would hold the one write lock.
#[test]
fn the_dispatcher_refuses_a_sqlite_database_without_its_writer() {
    let db = TestDb::new(Backend::Sqlite);
    api_server::db::migrate(&db.url).unwrap();
    let refused = api_server::realtime::dispatcher::Dispatcher::start(
        api_server::db::pool(&db.url).unwrap(),
        None,
        std::sync::Arc::new(ScriptedPublisher::default()),
        api_server::metrics::AppMetrics::new(),
    )
    .unwrap_err();
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::InvalidInput,
        "{refused}"
    );
}
