//! `/api/contacts/…`
pub mod create;
pub mod list;
pub mod messages;
pub mod notes;
pub mod show;
pub mod viewers;
