//! `/api/webhooks/…`
pub mod pusher;
