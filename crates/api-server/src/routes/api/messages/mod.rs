//! `/api/messages/…`
pub mod read;
pub mod send;
