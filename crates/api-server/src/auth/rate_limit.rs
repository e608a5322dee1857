//! A sliding-window limit on login attempts, per client address and per
//! email, so a password cannot be guessed at speed.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Allows `max` attempts per key within `window`.
#[derive(Debug)]
pub struct RateLimiter {
    max: usize,
    window: Duration,
    attempts: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl RateLimiter {
    /// A limiter of `max` attempts per `window`.
    pub fn new(max: usize, window: Duration) -> Self {
        RateLimiter {
            max,
            window,
            attempts: Mutex::new(HashMap::new()),
        }
    }

    /// Records an attempt under each key; answers how long to wait if any
    /// key is over its limit (the attempt is then not counted).
    pub fn check(&self, keys: &[String], now: Instant) -> Result<(), Duration> {
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        if attempts.len() > 10_000 {
            let window = self.window;
            attempts.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < window)
            });
        }
        let mut wait = Duration::ZERO;
        for key in keys {
            let times = attempts.entry(key.clone()).or_default();
            while times
                .front()
                .is_some_and(|t| now.duration_since(*t) >= self.window)
            {
                times.pop_front();
            }
            if times.len() >= self.max {
                if let Some(oldest) = times.front() {
                    wait = wait.max(self.window.saturating_sub(now.duration_since(*oldest)));
                }
            }
        }
        if wait > Duration::ZERO {
            return Err(wait);
        }
        for key in keys {
            attempts.entry(key.clone()).or_default().push_back(now);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_over_the_limit_wait_for_the_window() {
        let limiter = RateLimiter::new(3, Duration::from_secs(60));
        let start = Instant::now();
        let keys = vec!["ip:1".to_owned(), "email:a".to_owned()];
        for _ in 0..3 {
            assert!(limiter.check(&keys, start).is_ok());
        }
        let wait = limiter
            .check(&keys, start + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        assert!(limiter
            .check(&keys, start + Duration::from_secs(61))
            .is_ok());
        // Another address for the same email is limited by the email key.
        let other = vec!["ip:2".to_owned(), "email:b".to_owned()];
        assert!(limiter.check(&other, start).is_ok());
    }
}
