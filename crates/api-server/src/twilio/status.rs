//! Message statuses in Twilio's words, and their order: a status callback
//! that arrives late (`sent` after `delivered`) changes nothing.

/// How far along a status is; `None` for words Twilio does not use.
pub fn rank(status: &str) -> Option<u8> {
    Some(match status {
        "accepted" | "scheduled" => 0,
        "queued" => 1,
        "sending" => 2,
        "sent" => 3,
        "delivered" | "undelivered" | "failed" | "canceled" | "received" => 4,
        "read" => 5,
        _ => return None,
    })
}

/// Whether a message in status `current` may move to `next`: only forwards.
/// A message that was never handed to Twilio (`not_sent`) takes any status.
pub fn may_move(current: &str, next: &str) -> bool {
    match (rank(current), rank(next)) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(now), Some(then)) => then > now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_never_move_backwards() {
        assert!(may_move("queued", "sent"));
        assert!(may_move("sent", "delivered"));
        assert!(may_move("sending", "undelivered"));
        assert!(!may_move("delivered", "sent"));
        assert!(!may_move("failed", "queued"));
        assert!(!may_move("delivered", "undelivered"));
        assert!(!may_move("sent", "sent"));
        assert!(!may_move("queued", "exploded"));
        assert!(may_move("not_sent", "queued"));
        assert!(may_move("delivered", "read"));
    }
}
