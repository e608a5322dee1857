//! The login limit: failed logins are counted per client address and per
//! client address + email, and each key past its free failures waits a
//! delay that doubles with every further failure, up to a cap.
//!
//! What it is built not to do:
//!
//! - It never counts a successful login, and it keeps no per-email key
//!   across addresses: failures from elsewhere never block a user logging in
//!   from their own address (a per-email lock would let anyone lock anyone
//!   out by guessing wrong ten times).
//! - The address key allows many more failures than the address + email key,
//!   so one attacker guessing one email behind a shared address (an office
//!   NAT, or a proxy when `TRUSTED_PROXIES` is not set) does not block the
//!   other users of that address for long; an attacker rotating emails is
//!   stopped by the address key.
//! - Memory stays bounded whatever is sent: keys are fixed-size digests, a
//!   key is forgotten [`Policy::forget`] after its last failure, and the table
//!   never holds more than `max_keys` (past that, the keys that matter least
//!   are dropped first: those neither blocked nor near their limit).
//! - Concurrent guesses cannot outrun the back-off: attempts in flight count
//!   against the free failures, and a key past them has one attempt in flight
//!   at a time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The limits of one kind of key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failures allowed with no delay.
    pub free: u32,
    /// The delay after the first failure past the free ones; each further
    /// failure doubles it.
    pub base: Duration,
    /// The longest delay.
    pub cap: Duration,
    /// A key is forgotten this long after its last failure (at least `cap`,
    /// so a key is never forgotten while it is blocked).
    pub forget: Duration,
    /// Attempts of one key verified at the same time, at most.
    pub max_in_flight: u32,
}

impl Policy {
    /// The client address + email key: 5 free failures, then 1 s, 2 s, 4 s …
    /// up to 15 minutes; forgotten an hour after the last failure.
    pub const ADDRESS_EMAIL: Policy = Policy {
        free: 5,
        base: Duration::from_secs(1),
        cap: Duration::from_secs(15 * 60),
        forget: Duration::from_secs(60 * 60),
        max_in_flight: 5,
    };

    /// The client address key, looser: 100 free failures (whatever the
    /// emails), then 1 s, 2 s, 4 s … up to 15 minutes; forgotten an hour
    /// after the last failure; 16 attempts in flight at most.
    pub const ADDRESS: Policy = Policy {
        free: 100,
        base: Duration::from_secs(1),
        cap: Duration::from_secs(15 * 60),
        forget: Duration::from_secs(60 * 60),
        max_in_flight: 16,
    };

    /// The delay after `failures` failures.
    fn delay(&self, failures: u32) -> Duration {
        let Some(past) = failures.checked_sub(self.free + 1) else {
            return Duration::ZERO;
        };
        // 2^past, without overflowing: past 30 doublings the cap has won anyway.
        let factor = 1u32 << past.min(30);
        self.base.saturating_mul(factor).min(self.cap)
    }
}

/// The default cap on keys held (about 100 bytes each).
pub const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Address,
    AddressEmail,
}

/// A key: its kind and a 128-bit digest of what it names, so an email of any
/// length costs the same few bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    kind: Kind,
    digest: [u8; 16],
}

impl Key {
    fn new(kind: Kind, parts: &[&[u8]]) -> Self {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        let full = hasher.finalize();
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&full[..16]);
        Key { kind, digest }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    in_flight: u32,
    /// The last failure (or, before any, when the entry was made).
    last_failure: Instant,
    blocked_until: Option<Instant>,
}

impl Entry {
    fn new(now: Instant) -> Self {
        Entry {
            failures: 0,
            in_flight: 0,
            last_failure: now,
            blocked_until: None,
        }
    }

    fn stale(&self, policy: &Policy, now: Instant) -> bool {
        self.in_flight == 0 && now.saturating_duration_since(self.last_failure) >= policy.forget
    }

    fn blocked(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|until| until > now)
    }

    /// How long a new attempt must wait (zero: it may go).
    fn wait(&self, policy: &Policy, now: Instant) -> Duration {
        if let Some(until) = self.blocked_until.filter(|until| *until > now) {
            return until - now;
        }
        let busy = self.in_flight >= policy.max_in_flight
            || (self.in_flight > 0 && self.failures + self.in_flight >= policy.free);
        if busy {
            // Its fate depends on the attempts in flight: ask again soon.
            return Duration::from_secs(1);
        }
        Duration::ZERO
    }

    fn idle(&self) -> bool {
        self.failures == 0 && self.in_flight == 0
    }
}

/// The login limiter (one per process, in the application state).
#[derive(Debug)]
pub struct LoginLimiter {
    address: Policy,
    address_email: Policy,
    max_keys: usize,
    entries: Mutex<HashMap<Key, Entry>>,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        LoginLimiter::new(Policy::ADDRESS, Policy::ADDRESS_EMAIL, MAX_KEYS)
    }
}

/// The part of a client address a key names: what
/// [`realtime_server::client_address::counted_network`] counts it as (an
/// IPv4 address, or an IPv6 address's /64), as bytes.
fn network(address: IpAddr) -> Vec<u8> {
    match realtime_server::client_address::counted_network(address) {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

impl LoginLimiter {
    /// A limiter with these policies, holding at most `max_keys` keys.
    pub fn new(address: Policy, address_email: Policy, max_keys: usize) -> Self {
        LoginLimiter {
            address,
            address_email,
            max_keys: max_keys.max(2),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn policy(&self, kind: Kind) -> &Policy {
        match kind {
            Kind::Address => &self.address,
            Kind::AddressEmail => &self.address_email,
        }
    }

    /// How many keys are held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a login attempt of `email` from `client` (`None`: the address
    /// is unknown, and all such attempts share one key). Refused, it answers
    /// how long to wait, and the attempt is not counted. Accepted, the
    /// attempt must end with [`Attempt::failed`] or [`Attempt::succeeded`];
    /// dropped without either (the client left, the database failed), it is
    /// not counted: nobody learnt whether the password was right.
    pub fn begin(
        &self,
        client: Option<IpAddr>,
        email: &str,
        now: Instant,
    ) -> Result<Attempt<'_>, Duration> {
        let network = client.map(network).unwrap_or_default();
        let keys = [
            Key::new(Kind::Address, &[&network]),
            Key::new(Kind::AddressEmail, &[&network, email.as_bytes()]),
        ];
        let mut entries = self.lock();
        let mut wait = Duration::ZERO;
        for key in &keys {
            let policy = self.policy(key.kind);
            if entries.get(key).is_some_and(|e| e.stale(policy, now)) {
                entries.remove(key);
            }
            if let Some(entry) = entries.get(key) {
                wait = wait.max(entry.wait(policy, now));
            }
        }
        if wait > Duration::ZERO {
            return Err(wait);
        }
        let new_keys = keys.iter().filter(|k| !entries.contains_key(k)).count();
        if entries.len() + new_keys > self.max_keys {
            self.make_room(&mut entries, new_keys, now);
            if entries.len() + new_keys > self.max_keys {
                // Every key held has an attempt in flight: nothing can go.
                return Err(Duration::from_secs(1));
            }
        }
        for key in &keys {
            entries
                .entry(*key)
                .or_insert_with(|| Entry::new(now))
                .in_flight += 1;
        }
        Ok(Attempt {
            limiter: self,
            keys,
            ended: false,
        })
    }

    /// Drops forgotten keys; if that is not enough, drops about an eighth of
    /// the table, the keys that matter least first: not blocked, fewest
    /// failures, oldest last failure. Keys with attempts in flight stay.
    fn make_room(&self, entries: &mut HashMap<Key, Entry>, needed: usize, now: Instant) {
        entries.retain(|key, entry| !entry.stale(self.policy(key.kind), now));
        if entries.len() + needed <= self.max_keys {
            return;
        }
        let mut candidates: Vec<(bool, u32, Instant, Key)> = entries
            .iter()
            .filter(|(_, e)| e.in_flight == 0)
            .map(|(key, e)| (e.blocked(now), e.failures, e.last_failure, *key))
            .collect();
        let count = (self.max_keys / 8).max(needed).min(candidates.len());
        if count == 0 {
            return;
        }
        candidates.select_nth_unstable_by(count - 1, |a, b| (a.0, a.1, a.2).cmp(&(b.0, b.1, b.2)));
        for (_, _, _, key) in &candidates[..count] {
            entries.remove(key);
        }
    }

    fn end(&self, keys: &[Key; 2], outcome: Outcome, now: Instant) {
        let mut entries = self.lock();
        for key in keys {
            let policy = *self.policy(key.kind);
            let Some(entry) = entries.get_mut(key) else {
                continue;
            };
            entry.in_flight = entry.in_flight.saturating_sub(1);
            match (outcome, key.kind) {
                (Outcome::Failed, _) => {
                    entry.failures = entry.failures.saturating_add(1);
                    entry.last_failure = now;
                    let delay = policy.delay(entry.failures);
                    if delay > Duration::ZERO {
                        let until = now + delay;
                        entry.blocked_until =
                            Some(entry.blocked_until.map_or(until, |b| b.max(until)));
                    }
                }
                // A success resets only the counter of this email at this
                // address. Resetting the address's counter too would let an
                // attacker with one account of their own wipe it by logging
                // in to that account between guesses at others' passwords.
                (Outcome::Succeeded, Kind::AddressEmail) => {
                    entry.failures = 0;
                    entry.blocked_until = None;
                }
                (Outcome::Succeeded, Kind::Address) | (Outcome::Abandoned, _) => {}
            }
            if entry.idle() {
                entries.remove(key);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Failed,
    Succeeded,
    Abandoned,
}

/// A login attempt the limiter let through.
#[derive(Debug)]
#[must_use = "an attempt must be ended with failed() or succeeded()"]
pub struct Attempt<'a> {
    limiter: &'a LoginLimiter,
    keys: [Key; 2],
    ended: bool,
}

impl Attempt<'_> {
    /// The password was wrong (or the email unknown): counted under both keys.
    pub fn failed(mut self, now: Instant) {
        self.ended = true;
        self.limiter.end(&self.keys, Outcome::Failed, now);
    }

    /// The password was right: never counted, and the failures of this email
    /// at this address are forgotten.
    pub fn succeeded(mut self) {
        self.ended = true;
        self.limiter
            .end(&self.keys, Outcome::Succeeded, Instant::now());
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.limiter
                .end(&self.keys, Outcome::Abandoned, Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    fn fail(limiter: &LoginLimiter, client: Option<IpAddr>, email: &str, now: Instant) {
        limiter.begin(client, email, now).unwrap().failed(now);
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn free_failures_then_a_delay_that_doubles_up_to_the_cap() {
        let limiter = LoginLimiter::default();
        let a = ip("192.0.2.1");
        let mut now = Instant::now();
        for _ in 0..5 {
            fail(&limiter, a, "victim@example.com", now);
        }
        // The sixth failure is let through, and starts the back-off.
        fail(&limiter, a, "victim@example.com", now);
        let mut expected = Vec::new();
        let mut seen = Vec::new();
        for n in 0..12u32 {
            let wait = limiter.begin(a, "victim@example.com", now).unwrap_err();
            seen.push(wait);
            expected.push(S(1 << n).min(S(900)));
            // Just before the end of the delay it still waits; at its end it goes.
            assert_eq!(
                limiter
                    .begin(
                        a,
                        "victim@example.com",
                        now + wait - Duration::from_millis(1)
                    )
                    .unwrap_err(),
                Duration::from_millis(1)
            );
            now += wait;
            fail(&limiter, a, "victim@example.com", now);
        }
        assert_eq!(seen, expected);
    }

    #[test]
    fn failures_elsewhere_never_block_an_email_from_its_own_address() {
        let limiter = LoginLimiter::default();
        let now = Instant::now();
        for _ in 0..50 {
            let _ = limiter
                .begin(ip("192.0.2.1"), "victim@example.com", now)
                .map(|a| a.failed(now));
        }
        assert!(limiter
            .begin(ip("192.0.2.1"), "victim@example.com", now)
            .is_err());
        limiter
            .begin(ip("198.51.100.2"), "victim@example.com", now)
            .unwrap()
            .succeeded();
        // Nor is another email at the blocked address.
        limiter
            .begin(ip("192.0.2.1"), "other@example.com", now)
            .unwrap()
            .succeeded();
    }

    #[test]
    fn a_success_resets_its_own_pair_but_not_the_address() {
        let limiter = LoginLimiter::new(
            Policy {
                free: 3,
                ..Policy::ADDRESS
            },
            Policy::ADDRESS_EMAIL,
            MAX_KEYS,
        );
        let a = ip("192.0.2.1");
        let now = Instant::now();
        for _ in 0..2 {
            fail(&limiter, a, "mine@example.com", now);
        }
        limiter
            .begin(a, "mine@example.com", now)
            .unwrap()
            .succeeded();
        // The pair starts again: 2 more failures would have been 4 of 5.
        for _ in 0..2 {
            fail(&limiter, a, "mine@example.com", now);
        }
        // The address kept every failure (4 > 3 free): it waits.
        assert_eq!(
            limiter.begin(a, "other@example.com", now).unwrap_err(),
            S(1)
        );
        // A success of the attacker's own account does not wipe it.
        let later = now + S(1);
        limiter
            .begin(a, "mine@example.com", later)
            .unwrap()
            .succeeded();
        fail(&limiter, a, "victim@example.com", later);
        assert_eq!(
            limiter.begin(a, "victim@example.com", later).unwrap_err(),
            S(2)
        );
    }

    #[test]
    fn a_success_is_never_counted_and_an_abandoned_attempt_neither() {
        let limiter = LoginLimiter::default();
        let a = ip("192.0.2.1");
        let now = Instant::now();
        for _ in 0..1000 {
            limiter
                .begin(a, "user@example.com", now)
                .unwrap()
                .succeeded();
            drop(limiter.begin(a, "user@example.com", now).unwrap());
        }
        assert!(limiter.is_empty(), "nothing to remember");
    }

    #[test]
    fn concurrent_guesses_cannot_outrun_the_free_failures() {
        let limiter = LoginLimiter::default();
        let a = ip("192.0.2.1");
        let now = Instant::now();
        let mut in_flight = Vec::new();
        while let Ok(attempt) = limiter.begin(a, "victim@example.com", now) {
            in_flight.push(attempt);
        }
        assert_eq!(in_flight.len(), 5, "as many as the free failures");
        for attempt in in_flight {
            attempt.failed(now);
        }
        // Past them, one at a time.
        let one = limiter.begin(a, "victim@example.com", now).unwrap();
        assert_eq!(
            limiter.begin(a, "victim@example.com", now).unwrap_err(),
            S(1)
        );
        one.failed(now);
        assert_eq!(
            limiter.begin(a, "victim@example.com", now).unwrap_err(),
            S(1)
        );
        assert_eq!(
            limiter
                .begin(
                    a,
                    "victim@example.com",
                    now + S(1) - Duration::from_millis(1)
                )
                .unwrap_err(),
            Duration::from_millis(1)
        );
    }

    #[test]
    fn the_address_key_is_looser_and_stops_email_rotation() {
        let limiter = LoginLimiter::default();
        let a = ip("192.0.2.1");
        let now = Instant::now();
        for n in 0..100 {
            fail(&limiter, a, &format!("user{n}@example.com"), now);
        }
        fail(&limiter, a, "user100@example.com", now);
        assert_eq!(
            limiter.begin(a, "fresh@example.com", now).unwrap_err(),
            S(1)
        );
        // Another address is untouched.
        assert!(limiter
            .begin(ip("192.0.2.2"), "fresh@example.com", now)
            .is_ok());
    }

    #[test]
    fn an_ipv6_subscriber_is_counted_by_its_64() {
        let limiter = LoginLimiter::default();
        let now = Instant::now();
        for n in 0..6 {
            let address = format!("2001:db8:1:2::{n:x}");
            fail(&limiter, ip(&address), "victim@example.com", now);
        }
        assert!(limiter
            .begin(ip("2001:db8:1:2:ffff::1"), "victim@example.com", now)
            .is_err());
        assert!(limiter
            .begin(ip("2001:db8:1:3::1"), "victim@example.com", now)
            .is_ok());
    }

    #[test]
    fn keys_are_forgotten_after_their_last_failure() {
        let limiter = LoginLimiter::default();
        let a = ip("192.0.2.1");
        let now = Instant::now();
        for _ in 0..6 {
            fail(&limiter, a, "victim@example.com", now);
        }
        fail(&limiter, a, "victim@example.com", now + S(10));
        let later = now + S(10) + Policy::ADDRESS_EMAIL.forget;
        // Forgotten: five free failures again.
        for _ in 0..5 {
            fail(&limiter, a, "victim@example.com", later);
        }
        assert!(limiter.begin(a, "victim@example.com", later).is_ok());
    }

    #[test]
    fn memory_is_bounded_and_blocked_keys_are_kept_longest() {
        let limiter = LoginLimiter::new(Policy::ADDRESS, Policy::ADDRESS_EMAIL, 1000);
        let now = Instant::now();
        let attacker = ip("192.0.2.1");
        for _ in 0..6 {
            fail(&limiter, attacker, "victim@example.com", now);
        }
        for n in 0..20_000u32 {
            let client = Some(IpAddr::from((0x0a00_0000 + n).to_be_bytes()));
            fail(&limiter, client, &format!("{n}@example.com"), now);
            assert!(limiter.len() <= 1000);
        }
        // The blocked pair survived the flood of one-failure keys.
        assert!(limiter.begin(attacker, "victim@example.com", now).is_err());
    }

    #[test]
    fn without_an_address_all_attempts_share_one() {
        let limiter = LoginLimiter::default();
        let now = Instant::now();
        for _ in 0..6 {
            fail(&limiter, None, "victim@example.com", now);
        }
        assert!(limiter.begin(None, "victim@example.com", now).is_err());
    }
}
