//! `/api/auth/…`
pub mod login;
pub mod logout;
pub mod session;
