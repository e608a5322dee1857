//! `/api/team/…`
pub mod members;
