//! What the background workers (the outbox dispatcher, the SMS worker) share:
//! a stop that waits for their thread only until a deadline.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Waits for `thread` to end until `give_up`, then joins it. Answers whether
/// it ended; a thread still running is left to run (and to be dropped with
/// the process).
pub fn join_by(thread: JoinHandle<()>, give_up: Instant) -> bool {
    while !thread.is_finished() && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(10));
    }
    if !thread.is_finished() {
        return false;
    }
    let _ = thread.join();
    true
}
