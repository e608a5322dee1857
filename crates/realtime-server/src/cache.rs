//! The last event of each cache channel (`cache-*`, `private-cache-*`,
//! `private-encrypted-cache-*`, `presence-cache-*`), kept for a while and
//! sent to each new subscriber right after `subscription_succeeded`.
//!
//! Bounded twice: an entry lives for the app's `cache_ttl` (Pusher keeps 30
//! minutes), and the cache holds at most `capacity` channels; expired entries
//! are swept at most once a minute, and a new channel finds no room in a
//! cache full of live entries (its event is still delivered, only not kept).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::outbox::TextFrame;

/// How often expired entries are swept out (they are never served).
const SWEEP_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
struct Cached {
    frame: TextFrame,
    expires: Instant,
}

/// The last event per cache channel.
#[derive(Debug)]
pub struct EventCache {
    entries: HashMap<Arc<str>, Cached>,
    ttl: Duration,
    capacity: usize,
    next_sweep: Instant,
}

impl EventCache {
    /// An empty cache whose entries live `ttl`, for at most `capacity` channels.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        EventCache {
            entries: HashMap::new(),
            ttl,
            capacity,
            next_sweep: Instant::now() + SWEEP_EVERY,
        }
    }

    /// Keeps `frame` as the channel's last event. Answers false when the
    /// cache had no room for a new channel.
    pub fn store(&mut self, channel: &str, frame: TextFrame, now: Instant) -> bool {
        self.put(channel, frame, now + self.ttl, now)
    }

    /// Keeps an event another node cached, for what is left of its life,
    /// unless this node has one for the channel already (its own is as new).
    pub fn fill(&mut self, channel: &str, frame: TextFrame, left: Duration, now: Instant) {
        if self.get(channel, now).is_none() {
            self.put(channel, frame, now + left.min(self.ttl), now);
        }
    }

    fn put(&mut self, channel: &str, frame: TextFrame, expires: Instant, now: Instant) -> bool {
        if now >= self.next_sweep {
            self.sweep(now);
        }
        if let Some(entry) = self.entries.get_mut(channel) {
            *entry = Cached { frame, expires };
            return true;
        }
        if self.entries.len() >= self.capacity {
            self.sweep(now);
            if self.entries.len() >= self.capacity {
                return false;
            }
        }
        self.entries
            .insert(Arc::from(channel), Cached { frame, expires });
        true
    }

    /// The channel's last event, if it has not expired.
    pub fn get(&mut self, channel: &str, now: Instant) -> Option<TextFrame> {
        match self.entries.get(channel) {
            Some(entry) if entry.expires > now => Some(entry.frame.clone()),
            Some(_) => {
                self.entries.remove(channel);
                None
            }
            None => None,
        }
    }

    /// The channel's last event and what is left of its life, if it has not
    /// expired.
    pub fn get_with_life(&mut self, channel: &str, now: Instant) -> Option<(TextFrame, Duration)> {
        let frame = self.get(channel, now)?;
        let expires = self.entries.get(channel)?.expires;
        Some((frame, expires - now))
    }

    /// Every live entry with what is left of its life (to hand to a node
    /// that joins).
    pub fn live(&self, now: Instant) -> Vec<(Arc<str>, TextFrame, Duration)> {
        self.entries
            .iter()
            .filter(|(_, entry)| entry.expires > now)
            .map(|(channel, entry)| (channel.clone(), entry.frame.clone(), entry.expires - now))
            .collect()
    }

    /// Channels with an entry, live or not yet swept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn sweep(&mut self, now: Instant) {
        self.entries.retain(|_, entry| entry.expires > now);
        self.next_sweep = now + SWEEP_EVERY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> TextFrame {
        TextFrame::from(text)
    }

    #[test]
    fn the_last_event_is_kept_until_it_expires() {
        let now = Instant::now();
        let mut cache = EventCache::new(Duration::from_secs(30), 10);
        assert!(cache.get("cache-a", now).is_none());
        cache.store("cache-a", frame("one"), now);
        cache.store("cache-a", frame("two"), now + Duration::from_secs(10));
        assert_eq!(
            cache
                .get("cache-a", now + Duration::from_secs(20))
                .unwrap()
                .text(),
            "two"
        );
        assert!(cache
            .get("cache-a", now + Duration::from_secs(41))
            .is_none());
        assert!(cache.is_empty(), "an expired entry read is gone");
    }

    #[test]
    fn a_full_cache_makes_room_only_from_expired_entries() {
        let now = Instant::now();
        let mut cache = EventCache::new(Duration::from_secs(30), 2);
        assert!(cache.store("cache-a", frame("a"), now));
        assert!(cache.store("cache-b", frame("b"), now));
        assert!(!cache.store("cache-c", frame("c"), now), "no room");
        assert!(
            cache.store("cache-a", frame("a2"), now),
            "a known channel is replaced"
        );
        let later = now + Duration::from_secs(31);
        assert!(
            cache.store("cache-c", frame("c"), later),
            "room once the others expired"
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn expired_entries_are_swept_by_later_stores() {
        let now = Instant::now();
        let mut cache = EventCache::new(Duration::from_secs(1), 1000);
        for i in 0..100 {
            cache.store(&format!("cache-{i}"), frame("x"), now);
        }
        cache.store(
            "cache-new",
            frame("y"),
            now + SWEEP_EVERY + Duration::from_secs(1),
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_peers_entry_fills_only_a_gap_and_keeps_its_age() {
        let now = Instant::now();
        let mut cache = EventCache::new(Duration::from_secs(30), 10);
        cache.store("cache-a", frame("mine"), now);
        cache.fill("cache-a", frame("theirs"), Duration::from_secs(5), now);
        assert_eq!(cache.get("cache-a", now).unwrap().text(), "mine");
        cache.fill("cache-b", frame("theirs"), Duration::from_secs(5), now);
        assert!(cache.get("cache-b", now + Duration::from_secs(6)).is_none());
        assert_eq!(cache.live(now).len(), 1);
    }
}
