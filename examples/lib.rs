//! Runnable examples of `realtime-core` used from another Rust service:
//!
//! - `cargo run -p realtime-examples --example trigger`: publish one event.
//! - `cargo run -p realtime-examples --example auth_endpoint`: a plain
//!   actix-web app serving the auth endpoints pusher-js calls, and a webhook.
