//! Retry pauses for failed reads and writes: exponential back-off with a cap and a retry budget.
//!
//! Sans-IO: it only says how long to pause; the runner sleeps. It has no jitter (no randomness in
//! protocol logic); one replicator per datacenter has no herd to spread.

use std::time::Duration;

use crate::config::RetryConfig;

/// The pauses between consecutive failures, as consul-template counts them: the first failure
/// pauses `backoff`, each further one twice the last, never more than `max_backoff`. `attempts`
/// is the retry budget: that many failures in a row are retried and the next one gives up
/// (0: retry forever).
#[derive(Debug, Clone)]
pub struct Backoff {
    config: RetryConfig,
    failures: u32,
}

impl Backoff {
    /// A back-off with no failures yet.
    pub fn new(config: RetryConfig) -> Self {
        Backoff { config, failures: 0 }
    }

    /// Records one more failure in a row. Returns the pause before the next try, or `None` once the
    /// retry budget is spent.
    pub fn failed(&mut self) -> Option<Duration> {
        let retry = self.failures;
        if self.config.attempts != 0 && retry >= self.config.attempts {
            return None;
        }
        self.failures = self.failures.saturating_add(1);
        // 2^retry saturates long before it matters: the cap applies first.
        let factor = 1u32.checked_shl(retry).unwrap_or(u32::MAX);
        let pause = self
            .config
            .backoff
            .checked_mul(factor)
            .unwrap_or(Duration::MAX)
            .min(self.config.max_backoff);
        Some(pause)
    }

    /// Records a success: the next failure starts again from `backoff` with the whole budget.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// Failures in a row since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(attempts: u32) -> RetryConfig {
        RetryConfig {
            attempts,
            backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(1),
        }
    }

    #[test]
    fn doubles_up_to_the_cap_and_gives_up_after_the_budget() {
        let mut backoff = Backoff::new(config(4));
        let pauses: Vec<_> = std::iter::from_fn(|| backoff.failed()).collect();
        assert_eq!(
            pauses,
            vec![
                Duration::from_millis(250),
                Duration::from_millis(500),
                Duration::from_secs(1),
                Duration::from_secs(1),
            ]
        );
        assert_eq!(backoff.failed(), None);
        assert_eq!(backoff.failures(), 4);
    }

    #[test]
    fn success_resets_and_zero_attempts_never_gives_up() {
        let mut backoff = Backoff::new(config(2));
        assert!(backoff.failed().is_some());
        assert!(backoff.failed().is_some());
        backoff.succeeded();
        assert_eq!(backoff.failed(), Some(Duration::from_millis(250)));

        let mut forever = Backoff::new(config(0));
        for _ in 0..200 {
            assert!(forever.failed().is_some_and(|d| d <= Duration::from_secs(1)));
        }
    }
}
