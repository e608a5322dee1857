//! When to try a request again: a pure function of what went wrong and how
//! many attempts were made, so it is tested without a network.
//!
//! Only failures that a later attempt may cure are retried: the transport
//! (connection refused or reset, timeout) and 5xx answers. A 4xx says the
//! request itself is wrong and is never retried.

use std::time::Duration;

/// What one attempt ended with, as far as the retry decision cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The server answered with this non-success status.
    Status(u16),
    /// No answer: the connection failed, was reset, or timed out.
    Transport,
}

/// Whether to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Wait this long, then send the request again.
    RetryAfter(Duration),
    /// Report the failure to the caller.
    GiveUp,
}

/// Exponential backoff for failed API requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 means never retry).
    pub max_attempts: u32,
    /// Wait after the first failure; doubled after each further one.
    pub base_delay: Duration,
    /// The longest wait between two attempts.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Three attempts, waiting 100 ms then 200 ms.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn never() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// Decides what to do after attempt number `attempt` (counting from 1)
    /// ended with `failure`.
    pub fn decide(&self, failure: Failure, attempt: u32) -> RetryDecision {
        let retryable = match failure {
            Failure::Transport => true,
            Failure::Status(status) => (500..600).contains(&status),
        };
        if !retryable || attempt >= self.max_attempts {
            return RetryDecision::GiveUp;
        }
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        let delay = self.base_delay.saturating_mul(factor).min(self.max_delay);
        RetryDecision::RetryAfter(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_are_never_retried() {
        let policy = RetryPolicy::default();
        for status in [400, 401, 403, 404, 413, 429] {
            assert_eq!(
                policy.decide(Failure::Status(status), 1),
                RetryDecision::GiveUp
            );
        }
    }

    #[test]
    fn server_errors_and_transport_failures_back_off_exponentially() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(350),
        };
        let ms = |n| RetryDecision::RetryAfter(Duration::from_millis(n));
        assert_eq!(policy.decide(Failure::Status(503), 1), ms(100));
        assert_eq!(policy.decide(Failure::Status(500), 2), ms(200));
        assert_eq!(policy.decide(Failure::Transport, 3), ms(350));
        assert_eq!(policy.decide(Failure::Transport, 4), ms(350));
        assert_eq!(policy.decide(Failure::Transport, 5), RetryDecision::GiveUp);
    }

    #[test]
    fn a_single_attempt_policy_never_retries() {
        assert_eq!(
            RetryPolicy::never().decide(Failure::Transport, 1),
            RetryDecision::GiveUp
        );
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let policy = RetryPolicy {
            max_attempts: u32::MAX,
            ..RetryPolicy::default()
        };
        assert_eq!(
            policy.decide(Failure::Transport, 200),
            RetryDecision::RetryAfter(policy.max_delay)
        );
    }
}
