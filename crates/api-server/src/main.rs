//! `api-server`: the inbox API and its command line.
fn main() {}
