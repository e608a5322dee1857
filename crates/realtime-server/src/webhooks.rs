//! Webhooks to the app's URL: events are batched, signed as Pusher signs
//! them (`X-Pusher-Key`, `X-Pusher-Signature`), retried with backoff, and
//! `channel_vacated`/`member_removed` wait a few seconds so that a page
//! reload (leave, then join again at once) sends nothing at all.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use realtime_core::retry::{Failure, RetryDecision, RetryPolicy};
use realtime_core::{Credentials, Webhook, WebhookEvent};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::metrics::Metrics;

/// How long events gather before they are sent together.
const BATCH_WINDOW: Duration = Duration::from_millis(50);
/// Most events in one webhook request.
const MAX_BATCH: usize = 100;

enum Command {
    Event(WebhookEvent),
    Flush(oneshot::Sender<()>),
}

/// The queue the app's state machine pushes webhook events into.
#[derive(Debug, Clone)]
pub struct WebhookQueue {
    commands: mpsc::UnboundedSender<Command>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl WebhookQueue {
    /// Starts the dispatcher for one app's webhooks (needs a tokio runtime).
    pub fn spawn(
        url: String,
        credentials: Credentials,
        leave_delay: Duration,
        metrics: Metrics,
    ) -> Self {
        let (commands, receiver) = mpsc::unbounded_channel();
        let (batches, batch_receiver) = mpsc::unbounded_channel();
        tokio::spawn(gather(receiver, batches, leave_delay));
        tokio::spawn(send_batches(batch_receiver, url, credentials, metrics));
        WebhookQueue { commands }
    }

    /// A queue whose events are only recorded, for tests of what is sent.
    #[cfg(test)]
    pub(crate) fn recorder() -> (Self, Recorded) {
        let (commands, receiver) = mpsc::unbounded_channel();
        (WebhookQueue { commands }, Recorded(receiver))
    }

    /// Queues one event.
    pub fn push(&self, event: WebhookEvent) {
        // A closed queue means the dispatcher is gone at shutdown; nothing to do.
        let _ = self.commands.send(Command::Event(event));
    }

    /// Sends everything queued now, delayed leaves included, and waits until
    /// it is delivered (or given up on).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Flush(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

/// What a [`WebhookQueue::recorder`] was given.
#[cfg(test)]
pub(crate) struct Recorded(mpsc::UnboundedReceiver<Command>);

#[cfg(test)]
impl Recorded {
    /// The events pushed since the last call.
    pub(crate) fn take(&mut self) -> Vec<WebhookEvent> {
        let mut events = Vec::new();
        while let Ok(command) = self.0.try_recv() {
            if let Command::Event(event) = command {
                events.push(event);
            }
        }
        events
    }
}

/// A leave waiting out its delay, keyed by what would cancel it.
type LeaveKey = (String, Option<String>);

struct Batch {
    events: Vec<WebhookEvent>,
    done: Option<oneshot::Sender<()>>,
}

/// Collects events into batches, holding leaves back for `leave_delay`.
async fn gather(
    mut commands: mpsc::UnboundedReceiver<Command>,
    batches: mpsc::UnboundedSender<Batch>,
    leave_delay: Duration,
) {
    let mut pending: Vec<WebhookEvent> = Vec::new();
    let mut leaves: HashMap<LeaveKey, (Instant, WebhookEvent)> = HashMap::new();
    let mut tick = tokio::time::interval(BATCH_WINDOW);
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Event(event)) => accept(event, &mut pending, &mut leaves, leave_delay),
                Some(Command::Flush(done)) => {
                    let mut due: Vec<_> = leaves.drain().map(|(_, v)| v).collect();
                    due.sort_by_key(|(at, _)| *at);
                    pending.extend(due.into_iter().map(|(_, e)| e));
                    let events = std::mem::take(&mut pending);
                    let _ = batches.send(Batch { events, done: Some(done) });
                }
                None => break,
            },
            _ = tick.tick() => {
                let now = Instant::now();
                let mut due: Vec<(Instant, WebhookEvent)> = Vec::new();
                leaves.retain(|_, (at, event)| {
                    if *at <= now {
                        due.push((*at, event.clone()));
                        false
                    } else {
                        true
                    }
                });
                due.sort_by_key(|(at, _)| *at);
                pending.extend(due.into_iter().map(|(_, e)| e));
                while !pending.is_empty() {
                    let rest = pending.split_off(pending.len().min(MAX_BATCH));
                    let events = std::mem::replace(&mut pending, rest);
                    let _ = batches.send(Batch { events, done: None });
                }
            }
        }
    }
}

/// A join cancels a pending leave of the same channel (and user); both are
/// then left out, so a reload does not flap.
fn accept(
    event: WebhookEvent,
    pending: &mut Vec<WebhookEvent>,
    leaves: &mut HashMap<LeaveKey, (Instant, WebhookEvent)>,
    leave_delay: Duration,
) {
    match &event {
        WebhookEvent::ChannelVacated { channel } => {
            leaves.insert(
                (channel.clone(), None),
                (Instant::now() + leave_delay, event),
            );
        }
        WebhookEvent::MemberRemoved { channel, user_id } => {
            let key = (channel.clone(), Some(user_id.clone()));
            leaves.insert(key, (Instant::now() + leave_delay, event));
        }
        WebhookEvent::ChannelOccupied { channel } => {
            if leaves.remove(&(channel.clone(), None)).is_none() {
                pending.push(event);
            }
        }
        WebhookEvent::MemberAdded { channel, user_id } => {
            if leaves
                .remove(&(channel.clone(), Some(user_id.clone())))
                .is_none()
            {
                pending.push(event);
            }
        }
        _ => pending.push(event),
    }
}

async fn send_batches(
    mut batches: mpsc::UnboundedReceiver<Batch>,
    url: String,
    credentials: Credentials,
    metrics: Metrics,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let retry = RetryPolicy {
        max_attempts: 5,
        base_delay: Duration::from_millis(500),
        max_delay: Duration::from_secs(8),
    };
    while let Some(batch) = batches.recv().await {
        if !batch.events.is_empty() {
            deliver(&client, &url, &credentials, &retry, &metrics, batch.events).await;
        }
        if let Some(done) = batch.done {
            let _ = done.send(());
        }
    }
}

async fn deliver(
    client: &reqwest::Client,
    url: &str,
    credentials: &Credentials,
    retry: &RetryPolicy,
    metrics: &Metrics,
    events: Vec<WebhookEvent>,
) {
    let time_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let count = events.len();
    let body = match serde_json::to_vec(&Webhook { time_ms, events }) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(error = %e, "could not serialise a webhook");
            return;
        }
    };
    let signature = credentials.signer().sign_hex(&[&body]);
    let mut attempt = 1;
    loop {
        metrics.webhook_requests.inc();
        let answer = client
            .post(url)
            .header("Content-Type", "application/json")
            .header("X-Pusher-Key", credentials.key())
            .header("X-Pusher-Signature", &signature)
            .body(body.clone())
            .send()
            .await;
        let failure = match answer {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => Failure::Status(response.status().as_u16()),
            Err(_) => Failure::Transport,
        };
        // Unlike API calls, a webhook receiver's 4xx may be a passing fault
        // of a deploy; Pusher retries those too.
        let failure = match failure {
            Failure::Status(_) => Failure::Status(500),
            other => other,
        };
        match retry.decide(failure, attempt) {
            RetryDecision::RetryAfter(delay) => {
                tracing::warn!(%url, attempt, ?delay, "webhook delivery failed; retrying");
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            RetryDecision::GiveUp => {
                metrics.webhook_failures.inc();
                tracing::error!(%url, attempt, events = count, "webhook delivery failed; giving up");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occupied(c: &str) -> WebhookEvent {
        WebhookEvent::ChannelOccupied { channel: c.into() }
    }
    fn vacated(c: &str) -> WebhookEvent {
        WebhookEvent::ChannelVacated { channel: c.into() }
    }

    #[test]
    fn a_leave_followed_by_a_join_sends_nothing() {
        let mut pending = Vec::new();
        let mut leaves = HashMap::new();
        let delay = Duration::from_secs(3);
        accept(occupied("a"), &mut pending, &mut leaves, delay);
        accept(vacated("a"), &mut pending, &mut leaves, delay);
        accept(occupied("a"), &mut pending, &mut leaves, delay);
        assert_eq!(pending, vec![occupied("a")]);
        assert!(leaves.is_empty());
    }

    #[test]
    fn member_leaves_are_held_per_user() {
        let mut pending = Vec::new();
        let mut leaves = HashMap::new();
        let delay = Duration::from_secs(3);
        let removed = WebhookEvent::MemberRemoved {
            channel: "presence-a".into(),
            user_id: "1".into(),
        };
        let added_other = WebhookEvent::MemberAdded {
            channel: "presence-a".into(),
            user_id: "2".into(),
        };
        accept(removed, &mut pending, &mut leaves, delay);
        accept(added_other.clone(), &mut pending, &mut leaves, delay);
        assert_eq!(pending, vec![added_other]);
        assert_eq!(leaves.len(), 1);
    }
}
