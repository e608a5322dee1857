//! `/api/realtime/…`
pub mod config;
