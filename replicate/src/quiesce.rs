//! Quiescence (consul-replicate's `wait = "min:max"`): replicate once the source has been quiet for
//! `min`, or at the latest `max` after the first change of a burst.
//!
//! Sans-IO: the caller passes the time in and sleeps until [`Quiescence::due_at`] itself.

use tokio::time::Instant;

use crate::config::WaitConfig;

/// The two timers of one prefix.
#[derive(Debug, Clone)]
pub struct Quiescence {
    config: WaitConfig,
    quiet_at: Option<Instant>,
    deadline: Option<Instant>,
}

impl Quiescence {
    /// Timers for `config`, neither armed.
    pub fn new(config: WaitConfig) -> Self {
        Quiescence {
            config,
            quiet_at: None,
            deadline: None,
        }
    }

    /// The source changed at `now`: the quiet timer restarts, and the deadline is armed if this is
    /// the burst's first change.
    pub fn changed(&mut self, now: Instant) {
        self.quiet_at = Some(now + self.config.min);
        if self.deadline.is_none() {
            self.deadline = Some(now + self.config.max);
        }
    }

    /// When a pass is due: the earlier of the two timers, `None` when nothing changed.
    pub fn due_at(&self) -> Option<Instant> {
        match (self.quiet_at, self.deadline) {
            (Some(quiet), Some(deadline)) => Some(quiet.min(deadline)),
            (one, other) => one.or(other),
        }
    }

    /// Whether a pass is due at `now`.
    pub fn is_due(&self, now: Instant) -> bool {
        self.due_at().is_some_and(|due| due <= now)
    }

    /// The pass ran: both timers are disarmed until the next change.
    pub fn fire(&mut self) {
        self.quiet_at = None;
        self.deadline = None;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn quiet_timer_restarts_and_deadline_is_armed_once() {
        let start = Instant::now();
        let mut q = Quiescence::new(WaitConfig {
            min: secs(2),
            max: secs(8),
        });
        assert_eq!(q.due_at(), None);
        q.changed(start);
        assert_eq!(q.due_at(), Some(start + secs(2)));
        q.changed(start + secs(1));
        assert_eq!(q.due_at(), Some(start + secs(3)));
        assert!(!q.is_due(start + secs(2)));
        // A steady trickle of changes cannot push the pass past the deadline.
        for s in 2..20 {
            q.changed(start + secs(s));
        }
        assert_eq!(q.due_at(), Some(start + secs(8)));
        assert!(q.is_due(start + secs(8)));
        q.fire();
        assert_eq!(q.due_at(), None);
        q.changed(start + secs(30));
        assert_eq!(q.due_at(), Some(start + secs(32)));
    }
}
