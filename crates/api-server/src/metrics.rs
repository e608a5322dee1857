//! Prometheus metrics of the API: requests, the outbox (depth, oldest age),
//! events published (and today's count beside Pusher's free daily quota),
//! Pusher errors, the delay from commit to publish, and outbound SMS sent,
//! retried and failed.
//!
//! No label value is taken from a request as it came: each is one of a fixed
//! set, so a client cannot grow the registry (and `/metrics`) without bound.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use actix_web::http::Method;
use chrono::Datelike;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The `route` label of a request that no route matched.
pub const UNMATCHED: &str = "unmatched";

/// The `method` label: HTTP's own methods by name, any other as `OTHER`
/// (a client may send any token as a method).
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// Pusher's free plan: messages per day.
pub const PUSHER_FREE_DAILY_QUOTA: i64 = 200_000;

/// The API's metrics; clones share the values.
#[derive(Clone, Debug)]
pub struct AppMetrics {
    registry: Registry,
    /// Requests by method, route pattern and status; record them with
    /// [`AppMetrics::record_request`], which keeps every label in a fixed set.
    pub requests: IntCounterVec,
    /// Events waiting in the outbox (set when scraped).
    pub outbox_depth: IntGauge,
    /// Age of the oldest waiting event, in seconds (set when scraped).
    pub outbox_oldest_age: IntGauge,
    /// Events published.
    pub events_published: IntCounter,
    /// Failed publish attempts and refused events.
    pub pusher_errors: IntCounter,
    /// Events published since midnight UTC.
    pub events_today: IntGauge,
    /// Pusher's free daily quota, for dashboards to compare with.
    pub daily_quota: IntGauge,
    /// From the commit of a change to the publish of its event.
    pub commit_to_publish: Histogram,
    /// Outbound SMS Twilio took (or a lookup found it had).
    pub sms_sent: IntCounter,
    /// Attempts to send an SMS put back for a later try.
    pub sms_retried: IntCounter,
    /// Outbound SMS that ended `failed` (refused, or attempts spent).
    pub sms_failed: IntCounter,
    /// Outbound SMS waiting to be handed to Twilio (set when scraped).
    pub sms_queued: IntGauge,
    today: Arc<(AtomicI64, AtomicU64)>,
}

impl Default for AppMetrics {
    fn default() -> Self {
        Self::new()
    }
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    // Each metric is registered once, here; a clash is impossible.
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

impl AppMetrics {
    /// A fresh set of metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let opts = |name: &str, help: &str| Opts::new(name, help);
        let requests = IntCounterVec::new(
            opts(
                "http_requests_total",
                "HTTP requests by method, matched route pattern and status",
            ),
            &["method", "route", "status"],
        )
        .unwrap_or_else(|_| unreachable!());
        let histogram = Histogram::with_opts(
            HistogramOpts::new(
                "outbox_commit_to_publish_seconds",
                "Delay from an event's write (in its change's transaction) to its publish",
            )
            // Fine steps up to 20 ms, where the delay under load is judged.
            .buckets(vec![
                0.001, 0.002, 0.005, 0.0075, 0.01, 0.0125, 0.015, 0.0175, 0.02, 0.03, 0.05, 0.1,
                0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
        )
        .unwrap_or_else(|_| unreachable!());
        let gauge = |name: &str, help: &str| {
            IntGauge::with_opts(opts(name, help)).unwrap_or_else(|_| unreachable!())
        };
        let counter = |name: &str, help: &str| {
            IntCounter::with_opts(opts(name, help)).unwrap_or_else(|_| unreachable!())
        };
        let metrics = AppMetrics {
            requests: register(&registry, requests),
            outbox_depth: register(
                &registry,
                gauge("outbox_depth", "Events waiting in the outbox"),
            ),
            outbox_oldest_age: register(
                &registry,
                gauge(
                    "outbox_oldest_age_seconds",
                    "Age of the oldest waiting event",
                ),
            ),
            events_published: register(
                &registry,
                counter("events_published_total", "Events published"),
            ),
            pusher_errors: register(
                &registry,
                counter(
                    "pusher_errors_total",
                    "Failed publish attempts and refused events",
                ),
            ),
            events_today: register(
                &registry,
                gauge(
                    "events_published_today",
                    "Events published since midnight UTC",
                ),
            ),
            daily_quota: register(
                &registry,
                gauge(
                    "pusher_free_daily_quota",
                    "Messages per day on Pusher's free plan",
                ),
            ),
            commit_to_publish: register(&registry, histogram),
            sms_sent: register(
                &registry,
                counter("sms_sent_total", "Outbound SMS Twilio took"),
            ),
            sms_retried: register(
                &registry,
                counter(
                    "sms_retried_total",
                    "Attempts to send an SMS put back for a later try",
                ),
            ),
            sms_queued: register(
                &registry,
                gauge("sms_queued", "Outbound SMS waiting to be handed to Twilio"),
            ),
            sms_failed: register(
                &registry,
                counter(
                    "sms_failed_total",
                    "Outbound SMS that ended failed (refused, or attempts spent)",
                ),
            ),
            today: Arc::new((AtomicI64::new(0), AtomicU64::new(0))),
            registry,
        };
        metrics.daily_quota.set(PUSHER_FREE_DAILY_QUOTA);
        metrics
    }

    /// Counts one answered request. Every label comes from a fixed set, so
    /// no request can add a series that stays forever: the method by name
    /// when it is one of HTTP's own, else `OTHER`; the route as the pattern
    /// it matched (`/api/contacts/{id}`), or `unmatched`, never the path
    /// itself; the status as its number (at most 900 values).
    pub fn record_request(&self, method: &Method, route: Option<&str>, status: u16) {
        self.requests
            .with_label_values(&[
                method_label(method),
                route.unwrap_or(UNMATCHED),
                &status.to_string(),
            ])
            .inc();
    }

    /// Counts published events, today's count restarting at midnight UTC.
    pub fn record_published(&self, count: u64) {
        self.events_published.inc_by(count);
        let day = chrono::Utc::now().date_naive().num_days_from_ce() as i64;
        let (current_day, today) = &*self.today;
        if current_day.swap(day, Ordering::SeqCst) != day {
            today.store(0, Ordering::SeqCst);
        }
        let total = today.fetch_add(count, Ordering::SeqCst) + count;
        self.events_today.set(total as i64);
    }

    /// The metrics in Prometheus' text format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buffer);
        String::from_utf8(buffer).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_http_s_own_are_other() {
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        let custom = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&custom), "OTHER");
    }
}
