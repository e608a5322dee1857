//! The SMS inbox API server.
fn main() {}
