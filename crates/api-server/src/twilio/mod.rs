//! Twilio: the webhook signature, the REST client for outbound messages, and
//! the order of message statuses.

pub mod client;
pub mod delivery;
pub mod inbound;
pub mod signature;
pub mod status;
