//! The team SMS inbox's API server: actix-web + diesel. Every write in the
//! send, read, note and webhook handlers calls [`realtime::notify_contact`],
//! which queues the event in the outbox in the same transaction; the
//! dispatcher publishes it through a `realtime_core::Publisher`.
//!
//! A request enters at `app.rs` (the one route list, its middleware, and the
//! slow-client deadlines of `slow_clients.rs`) → `routes/api/…` (one file per
//! endpoint) → `models/` (the database) and `realtime/` (events). What runs
//! beside the requests: the outbox dispatcher (`realtime/dispatcher.rs`, events
//! out), the SMS worker (`twilio/delivery.rs`, texts out) and the clean-up
//! (`cleanup.rs`), each started in `app::build` and stopped in `app::shutdown`.

pub mod app;
pub mod auth;
pub mod background;
pub mod cleanup;
pub mod cli;
pub mod config;
pub mod db;
pub mod error;
pub mod metrics;
pub mod models;
pub mod phone;
pub mod realtime;
pub mod routes;
pub mod slow_clients;
pub mod twilio;
