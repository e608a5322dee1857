//! The floor of `POST /api/messages/send`: the same database work (a message,
//! its outbox events, the contact's activity) done directly through diesel
//! with the same durability settings, from many threads, with no HTTP, no
//! authentication and no JSON. `scripts/bench-api` runs it next to the server.
//!
//!     cargo run --release -p api-server --example insert_floor -- DATABASE_URL SECONDS THREADS

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api_server::db::{self, write_transaction};
use api_server::models::contact::Contact;
use api_server::models::message::{Message, NewMessage, OUTBOUND, STATUS_NOT_SENT};
use api_server::models::outbox::{NewOutboxRow, OutboxRow};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .ok_or("usage: insert_floor DATABASE_URL SECONDS THREADS")?;
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let threads: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(64);
    db::migrate(&url)?;
    let pool = db::pool(&url)?;
    let contact = {
        let mut conn = pool.get()?;
        Contact::find_in_team(&mut conn, 1, 1)?
            .ok_or("run `api-server demo` on this database first")?
    };
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (pool, stop, done, latencies, contact) = (
                pool.clone(),
                stop.clone(),
                done.clone(),
                latencies.clone(),
                contact.clone(),
            );
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let Ok(mut conn) = pool.get() else { continue };
                    let result = write_transaction(&mut conn, |conn| {
                        let now = api_server::models::now();
                        let message = Message::create(
                            conn,
                            &NewMessage {
                                team_id: contact.team_id,
                                contact_id: contact.id,
                                direction: OUTBOUND,
                                body: "floor",
                                media: "[]".into(),
                                status: STATUS_NOT_SENT,
                                error_code: None,
                                twilio_sid: None,
                                sent_by: Some(1),
                                created_at: now,
                            },
                        )?;
                        for (event, channels) in [
                            ("message:created", "[\"private-contact-1\"]"),
                            ("contact:updated", "[\"private-user-1\",\"private-user-2\"]"),
                        ] {
                            OutboxRow::insert(
                                conn,
                                &NewOutboxRow {
                                    team_id: contact.team_id,
                                    contact_id: Some(contact.id),
                                    event,
                                    channels: channels.into(),
                                    data: format!("{{\"id\":{}}}", message.id),
                                    socket_id: None,
                                    attempts: 0,
                                    // Far in the future: the floor measures inserts, not publishing.
                                    next_attempt_at: now + chrono::Duration::days(365),
                                    created_at: now,
                                },
                            )?;
                        }
                        Contact::touch(conn, contact.id, now)?;
                        Ok::<_, diesel::result::Error>(())
                    });
                    if result.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                        mine.push(started.elapsed());
                    }
                }
                if let Ok(mut all) = latencies.lock() {
                    all.extend(mine);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.join();
    }
    let mut all = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 - 1.0) * p) as usize)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "{{\"label\":\"diesel floor\",\"requests_per_s\":{:.0},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"threads\":{threads}}}",
        done.load(Ordering::Relaxed) as f64 / seconds as f64,
        pct(0.5),
        pct(0.99)
    );
    Ok(())
}
