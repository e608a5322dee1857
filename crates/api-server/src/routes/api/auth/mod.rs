//! `/api/auth/…`
pub mod login;
pub mod logout;
