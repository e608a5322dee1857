//! The login limit: failed logins are counted per client address and per
//! client address + email, and each key past its free failures waits a
//! delay that doubles with every further failure, up to a cap.
//!
//! The counts live in the database (`login_failures`, see
//! [`LoginFailure`]), so every instance on it applies the same limit: an
//! attempt reads its two keys' rows (in the same short call that reads the
//! user), a failure adds one to each with an upsert, a success deletes only
//! its own address + email row when it had one. Rows expire an hour after
//! their last failure and the clean-up removes them. Only the attempts in
//! flight are kept in memory (they last one request).
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
//! - Storage stays bounded whatever is sent: keys are fixed-size digests, a
//!   key counts for nothing [`Policy::forget`] after its last failure, and
//!   the clean-up removes it then.
//! - Concurrent guesses cannot outrun the back-off: attempts in flight count
//!   against the free failures, and a key past them has one attempt in flight
//!   at a time. Attempts in flight are an instance's own (counting them in
//!   the database would cost two writes per login), so across N instances
//!   up to N times as many are in flight; every one of them that fails is
//!   counted, and the delay grows with them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use chrono::NaiveDateTime;
use sha2::{Digest, Sha256};

use crate::db::DbConnection;
use crate::models::login_failure::LoginFailure;

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
    /// Attempts of one key verified at the same time (per instance), at most.
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

    /// How long a new attempt must wait, given the key's stored failures and
    /// the attempts of it in flight here (zero: it may go).
    fn wait(&self, stored: Option<&Counted>, in_flight: u32, now: NaiveDateTime) -> Duration {
        let failures = stored.map_or(0, |s| s.failures);
        if let Some(stored) = stored {
            // Blocked until the last failure's delay has passed (failures
            // only grow while a key counts, so the last one's is the longest).
            let until = stored.last_failure + chrono_duration(self.delay(failures));
            if let Ok(wait) = (until - now).to_std() {
                if wait > Duration::ZERO {
                    return wait;
                }
            }
        }
        let busy =
            in_flight >= self.max_in_flight || (in_flight > 0 && failures + in_flight >= self.free);
        if busy {
            // Its fate depends on the attempts in flight: ask again soon.
            return Duration::from_secs(1);
        }
        Duration::ZERO
    }
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The two keys of a login attempt, as stored: a kind and a 128-bit digest
/// of what they name, in hex (an email of any length costs the same, and
/// neither the address nor the email is stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginKeys {
    address: String,
    address_email: String,
}

impl LoginKeys {
    /// The keys of `email` from `client` (`None`: the address is unknown, and
    /// all such attempts share one address). An IPv6 address counts by its
    /// /64 ([`realtime_server::client_address::counted_network`]).
    pub fn new(client: Option<IpAddr>, email: &str) -> Self {
        let network = client
            .map(
                |ip| match realtime_server::client_address::counted_network(ip) {
                    IpAddr::V4(v4) => v4.octets().to_vec(),
                    IpAddr::V6(v6) => v6.octets().to_vec(),
                },
            )
            .unwrap_or_default();
        LoginKeys {
            address: digest("a", &[&network]),
            address_email: digest("e", &[&network, email.as_bytes()]),
        }
    }

    /// Both keys, to read their rows.
    pub fn all(&self) -> [&str; 2] {
        [&self.address, &self.address_email]
    }

    /// What the rows read for these keys say.
    pub fn stored(&self, rows: &[LoginFailure]) -> Stored {
        let of = |key: &str| {
            rows.iter()
                .find(|row| row.key_digest == key)
                .map(|row| Counted {
                    failures: u32::try_from(row.failures).unwrap_or(0),
                    last_failure: row.last_failure_at,
                })
        };
        Stored {
            address: of(&self.address),
            address_email: of(&self.address_email),
        }
    }
}

fn digest(kind: &str, parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let full = hasher.finalize();
    format!("{kind}:{}", hex::encode(&full[..16]))
}

/// One key's failures as the database holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    /// Failures counted.
    pub failures: u32,
    /// The last one.
    pub last_failure: NaiveDateTime,
}

/// What the database holds for an attempt's keys (`None`: no failure counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    /// The address key.
    pub address: Option<Counted>,
    /// The address + email key.
    pub address_email: Option<Counted>,
}

/// The login limiter (one per process, in the application state): the
/// policies, and this instance's attempts in flight per key.
#[derive(Debug)]
pub struct LoginLimiter {
    address: Policy,
    address_email: Policy,
    in_flight: Mutex<HashMap<String, u32>>,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        LoginLimiter::new(Policy::ADDRESS, Policy::ADDRESS_EMAIL)
    }
}

impl LoginLimiter {
    /// A limiter with these policies.
    pub fn new(address: Policy, address_email: Policy) -> Self {
        LoginLimiter {
            address,
            address_email,
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keys with an attempt in flight here (entries go when their last
    /// attempt ends, so this is bounded by the requests under way).
    pub fn keys_in_flight(&self) -> usize {
        self.lock().len()
    }

    /// Starts an attempt on `keys`: counts it in flight before the caller
    /// reads the stored failures, so that a failure another attempt records
    /// meanwhile is either in what the caller reads or still counted here as
    /// in flight (never neither). Then [`Attempt::admit`] decides.
    pub fn reserve(&self, keys: &LoginKeys) -> Attempt<'_> {
        let mut in_flight = self.lock();
        let mut others = [0u32; 2];
        for (n, key) in keys.all().into_iter().enumerate() {
            let count = in_flight.entry(key.to_owned()).or_insert(0);
            others[n] = *count;
            *count += 1;
        }
        Attempt {
            limiter: self,
            keys: keys.clone(),
            others,
        }
    }

    /// Counts a failure of `keys` at `now` (one upsert per key). Called
    /// while the attempt is still held, so the next attempt sees either the
    /// failure or the attempt in flight.
    pub fn record_failure(
        &self,
        conn: &mut DbConnection,
        keys: &LoginKeys,
        now: NaiveDateTime,
    ) -> diesel::QueryResult<()> {
        for (key, policy) in [
            (&keys.address, &self.address),
            (&keys.address_email, &self.address_email),
        ] {
            LoginFailure::record(conn, key, now, now + chrono_duration(policy.forget))?;
        }
        Ok(())
    }

    /// A success: forgets the failures of its email at its address, and
    /// writes nothing when it had none (`stored`). The address key is kept:
    /// resetting it would let an attacker with one account of their own
    /// wipe it by logging in to that account between guesses at others'.
    pub fn record_success(
        &self,
        conn: &mut DbConnection,
        keys: &LoginKeys,
        stored: &Stored,
    ) -> diesel::QueryResult<()> {
        if stored.address_email.is_some() {
            LoginFailure::reset(conn, &keys.address_email)?;
        }
        Ok(())
    }
}

/// A login attempt, counted in flight until it is dropped (after its
/// outcome is recorded, or when the client left or the database failed:
/// then nothing is counted, since nobody learnt whether the password was
/// right).
#[derive(Debug)]
#[must_use = "an attempt is in flight until dropped"]
pub struct Attempt<'a> {
    limiter: &'a LoginLimiter,
    keys: LoginKeys,
    /// Attempts of each key in flight here before this one.
    others: [u32; 2],
}

impl Attempt<'_> {
    /// Whether the attempt may go, given what the database holds for its
    /// keys; else how long to wait (the attempt is then not counted: drop it).
    pub fn admit(&self, stored: &Stored, now: NaiveDateTime) -> Result<(), Duration> {
        let limiter = self.limiter;
        let wait = limiter
            .address
            .wait(stored.address.as_ref(), self.others[0], now)
            .max(
                limiter
                    .address_email
                    .wait(stored.address_email.as_ref(), self.others[1], now),
            );
        if wait > Duration::ZERO {
            return Err(wait);
        }
        Ok(())
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.limiter.lock();
        for key in self.keys.all() {
            if let Some(count) = in_flight.get_mut(key) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    in_flight.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::db::TestDatabase as TestDb;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    fn t0() -> NaiveDateTime {
        crate::models::now()
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn at(now: NaiveDateTime, d: Duration) -> NaiveDateTime {
        now + chrono_duration(d)
    }

    /// What a login does up to its verification: reserve, read, admit.
    fn begin<'a>(
        limiter: &'a LoginLimiter,
        db: &mut TestDb,
        client: Option<IpAddr>,
        email: &str,
        now: NaiveDateTime,
    ) -> Result<(Attempt<'a>, Stored), Duration> {
        let keys = LoginKeys::new(client, email);
        let attempt = limiter.reserve(&keys);
        let rows = LoginFailure::read(&mut db.conn, &keys.all(), now).unwrap();
        let stored = keys.stored(&rows);
        attempt.admit(&stored, now)?;
        Ok((attempt, stored))
    }

    fn fail_attempt(
        limiter: &LoginLimiter,
        db: &mut TestDb,
        attempt: Attempt<'_>,
        now: NaiveDateTime,
    ) {
        limiter
            .record_failure(&mut db.conn, &attempt.keys, now)
            .unwrap();
    }

    fn succeed_attempt(limiter: &LoginLimiter, db: &mut TestDb, attempt: (Attempt<'_>, Stored)) {
        limiter
            .record_success(&mut db.conn, &attempt.0.keys, &attempt.1)
            .unwrap();
    }

    fn fail(
        limiter: &LoginLimiter,
        db: &mut TestDb,
        client: Option<IpAddr>,
        email: &str,
        now: NaiveDateTime,
    ) {
        let (attempt, _) = begin(limiter, db, client, email, now).unwrap();
        fail_attempt(limiter, db, attempt, now);
    }

    fn wait(
        limiter: &LoginLimiter,
        db: &mut TestDb,
        client: Option<IpAddr>,
        email: &str,
        now: NaiveDateTime,
    ) -> Duration {
        begin(limiter, db, client, email, now)
            .map(|_| ())
            .unwrap_err()
    }

    #[test]
    fn free_failures_then_a_delay_that_doubles_up_to_the_cap() {
        let limiter = LoginLimiter::default();
        let db = &mut TestDb::new();
        let a = ip("192.0.2.1");
        let mut now = t0();
        for _ in 0..5 {
            fail(&limiter, db, a, "victim@example.com", now);
        }
        // The sixth failure is let through, and starts the back-off.
        fail(&limiter, db, a, "victim@example.com", now);
        let mut expected = Vec::new();
        let mut seen = Vec::new();
        for n in 0..12u32 {
            let waited = wait(&limiter, db, a, "victim@example.com", now);
            seen.push(waited);
            expected.push(S(1 << n).min(S(900)));
            // Just before the end of the delay it still waits; at its end it goes.
            let almost = at(now, waited - Duration::from_millis(1));
            assert_eq!(
                wait(&limiter, db, a, "victim@example.com", almost),
                Duration::from_millis(1)
            );
            now = at(now, waited);
            fail(&limiter, db, a, "victim@example.com", now);
        }
        assert_eq!(seen, expected);
    }

    #[test]
    fn failures_elsewhere_never_block_an_email_from_its_own_address() {
        let limiter = LoginLimiter::default();
        let db = &mut TestDb::new();
        let now = t0();
        for _ in 0..50 {
            if let Ok((attempt, _)) =
                begin(&limiter, db, ip("192.0.2.1"), "victim@example.com", now)
            {
                fail_attempt(&limiter, db, attempt, now);
            }
        }
        assert!(begin(&limiter, db, ip("192.0.2.1"), "victim@example.com", now).is_err());
        assert!(begin(&limiter, db, ip("198.51.100.2"), "victim@example.com", now).is_ok());
        // Nor is another email at the blocked address.
        assert!(begin(&limiter, db, ip("192.0.2.1"), "other@example.com", now).is_ok());
    }

    #[test]
    fn a_success_resets_its_own_pair_but_not_the_address() {
        let limiter = LoginLimiter::new(
            Policy {
                free: 3,
                ..Policy::ADDRESS
            },
            Policy::ADDRESS_EMAIL,
        );
        let db = &mut TestDb::new();
        let a = ip("192.0.2.1");
        let now = t0();
        for _ in 0..2 {
            fail(&limiter, db, a, "mine@example.com", now);
        }
        let ok = begin(&limiter, db, a, "mine@example.com", now).unwrap();
        succeed_attempt(&limiter, db, ok);
        // The pair starts again: 2 more failures would have been 4 of 5.
        for _ in 0..2 {
            fail(&limiter, db, a, "mine@example.com", now);
        }
        // The address kept every failure (4 > 3 free): it waits.
        assert_eq!(wait(&limiter, db, a, "other@example.com", now), S(1));
        // A success of the attacker's own account does not wipe it.
        let later = at(now, S(1));
        let ok = begin(&limiter, db, a, "mine@example.com", later).unwrap();
        succeed_attempt(&limiter, db, ok);
        fail(&limiter, db, a, "victim@example.com", later);
        assert_eq!(wait(&limiter, db, a, "victim@example.com", later), S(2));
    }

    #[test]
    fn a_success_is_never_counted_and_an_abandoned_attempt_neither() {
        let limiter = LoginLimiter::default();
        let db = &mut TestDb::new();
        let a = ip("192.0.2.1");
        let now = t0();
        for _ in 0..200 {
            let ok = begin(&limiter, db, a, "user@example.com", now).unwrap();
            succeed_attempt(&limiter, db, ok);
            drop(begin(&limiter, db, a, "user@example.com", now).unwrap());
        }
        assert_eq!(limiter.keys_in_flight(), 0, "nothing to remember");
        let keys = LoginKeys::new(a, "user@example.com");
        assert!(LoginFailure::read(&mut db.conn, &keys.all(), now)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn concurrent_guesses_cannot_outrun_the_free_failures() {
        let limiter = LoginLimiter::default();
        let db = &mut TestDb::new();
        let a = ip("192.0.2.1");
        let now = t0();
        let mut in_flight = Vec::new();
        while let Ok((attempt, _)) = begin(&limiter, db, a, "victim@example.com", now) {
            in_flight.push(attempt);
        }
        assert_eq!(in_flight.len(), 5, "as many as the free failures");
        for attempt in in_flight {
            fail_attempt(&limiter, db, attempt, now);
        }
        // Past them, one at a time.
        let (one, _) = begin(&limiter, db, a, "victim@example.com", now).unwrap();
        assert_eq!(wait(&limiter, db, a, "victim@example.com", now), S(1));
        fail_attempt(&limiter, db, one, now);
        assert_eq!(wait(&limiter, db, a, "victim@example.com", now), S(1));
        assert_eq!(
            wait(
                &limiter,
                db,
                a,
                "victim@example.com",
                at(now, S(1) - Duration::from_millis(1))
            ),
            Duration::from_millis(1)
        );
    }

    #[test]
    fn the_address_key_is_looser_and_stops_email_rotation() {
        let limiter = LoginLimiter::default();
        let db = &mut TestDb::new();
        let a = ip("192.0.2.1");
        let now = t0();
        for n in 0..100 {
            fail(&limiter, db, a, &format!("user{n}@example.com"), now);
        }
        fail(&limiter, db, a, "user100@example.com", now);
        assert_eq!(wait(&limiter, db, a, "fresh@example.com", now), S(1));
        // Another address is untouched.
        assert!(begin(&limiter, db, ip("192.0.2.2"), "fresh@example.com", now).is_ok());
    }

    #[test]
    fn an_ipv6_subscriber_is_counted_by_its_64() {
        let limiter = LoginLimiter::default();
        let db = &mut TestDb::new();
        let now = t0();
        for n in 0..6 {
            let address = format!("2001:db8:1:2::{n:x}");
            fail(&limiter, db, ip(&address), "victim@example.com", now);
        }
        assert!(begin(
            &limiter,
            db,
            ip("2001:db8:1:2:ffff::1"),
            "victim@example.com",
            now
        )
        .is_err());
        assert!(begin(
            &limiter,
            db,
            ip("2001:db8:1:3::1"),
            "victim@example.com",
            now
        )
        .is_ok());
    }

    #[test]
    fn keys_are_forgotten_after_their_last_failure_and_then_removed() {
        let limiter = LoginLimiter::default();
        let db = &mut TestDb::new();
        let a = ip("192.0.2.1");
        let now = t0();
        for _ in 0..6 {
            fail(&limiter, db, a, "victim@example.com", now);
        }
        fail(&limiter, db, a, "victim@example.com", at(now, S(10)));
        let later = at(at(now, S(10)), Policy::ADDRESS_EMAIL.forget);
        // Forgotten: five free failures again, the upsert starting over.
        for _ in 0..5 {
            fail(&limiter, db, a, "victim@example.com", later);
        }
        assert!(begin(&limiter, db, a, "victim@example.com", later).is_ok());
        // Rows past their time are removed by the clean-up, the others kept.
        fail(&limiter, db, ip("192.0.2.9"), "old@example.com", now);
        let removed = LoginFailure::delete_expired(&mut db.conn, at(later, S(1)), 500).unwrap();
        assert_eq!(removed, 2, "the old address and its pair");
        let keys = LoginKeys::new(a, "victim@example.com");
        assert_eq!(
            LoginFailure::read(&mut db.conn, &keys.all(), later)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn without_an_address_all_attempts_share_one() {
        let limiter = LoginLimiter::default();
        let db = &mut TestDb::new();
        let now = t0();
        for _ in 0..6 {
            fail(&limiter, db, None, "victim@example.com", now);
        }
        assert!(begin(&limiter, db, None, "victim@example.com", now).is_err());
    }

    #[test]
    fn keys_name_no_address_and_no_email() {
        let keys = LoginKeys::new(ip("192.0.2.1"), "victim@example.com");
        for key in keys.all() {
            assert_eq!(key.len(), 34, "{key}");
            assert!(!key.contains("192") && !key.contains("victim"), "{key}");
        }
        assert_ne!(keys, LoginKeys::new(ip("192.0.2.1"), "other@example.com"));
        assert_eq!(
            LoginKeys::new(ip("2001:db8::1"), "x").all()[0],
            LoginKeys::new(ip("2001:db8::2"), "y").all()[0]
        );
    }
}
