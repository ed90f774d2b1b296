//! The pure parts of running checks: Consul's success/failure counters, the bounds on a check's output
//! with Consul's truncation markers, and error texts in Go's words.

use super::CheckStatus;

/// Consul's `StatusHandler`: a result is reported only once enough consecutive results agree.
///
/// Passing and warning results count as successes; `success_before_passing` of them in a row are needed
/// before one is reported. Critical results count as failures: after `failures_before_warning` in a row
/// a failure is reported as a warning, after `failures_before_critical` as critical. The counters start
/// at their thresholds, so the very first result of a new check is reported whatever it is.
#[derive(Debug, Clone)]
pub(crate) struct StatusCounter {
    success_before_passing: u32,
    failures_before_warning: u32,
    failures_before_critical: u32,
    successes: u32,
    failures: u32,
}

impl StatusCounter {
    /// Counters with Consul's thresholds; `failures_before_warning` of 0 means the same as
    /// `failures_before_critical`.
    pub(crate) fn new(
        success_before_passing: u32,
        failures_before_warning: u32,
        failures_before_critical: u32,
    ) -> Self {
        let failures_before_warning = if failures_before_warning == 0 {
            failures_before_critical
        } else {
            failures_before_warning
        };
        StatusCounter {
            success_before_passing,
            failures_before_warning,
            failures_before_critical,
            successes: success_before_passing,
            failures: failures_before_critical,
        }
    }

    /// Counts one result; the status to report, or `None` while a threshold is not reached.
    pub(crate) fn observe(&mut self, status: CheckStatus) -> Option<CheckStatus> {
        match status {
            CheckStatus::Passing | CheckStatus::Warning => {
                self.successes = self.successes.saturating_add(1);
                self.failures = 0;
                (self.successes >= self.success_before_passing).then_some(status)
            }
            CheckStatus::Critical => {
                self.failures = self.failures.saturating_add(1);
                self.successes = 0;
                if self.failures >= self.failures_before_critical {
                    Some(CheckStatus::Critical)
                } else if self.failures >= self.failures_before_warning {
                    Some(CheckStatus::Warning)
                } else {
                    None
                }
            }
        }
    }
}

/// Consul's circular output buffer: keeps the last `limit` bytes written and counts them all.
#[derive(Debug, Clone)]
pub(crate) struct TailBuffer {
    limit: usize,
    kept: std::collections::VecDeque<u8>,
    total: u64,
}

impl TailBuffer {
    pub(crate) fn new(limit: usize) -> Self {
        TailBuffer {
            limit,
            kept: std::collections::VecDeque::new(),
            total: 0,
        }
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        self.total = self.total.saturating_add(bytes.len() as u64);
        let tail = bytes.len().saturating_sub(self.limit);
        let bytes = bytes.get(tail..).unwrap_or_default();
        self.kept.extend(bytes);
        let excess = self.kept.len().saturating_sub(self.limit);
        self.kept.drain(..excess);
    }

    /// The bytes kept, as text (invalid UTF-8 replaced, as the catalog holds text).
    pub(crate) fn text(&self) -> String {
        let bytes: Vec<u8> = self.kept.iter().copied().collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Whether more was written than kept.
    pub(crate) fn truncated(&self) -> bool {
        self.total > self.kept.len() as u64
    }

    /// A script's output as Consul reports it: the tail, after `Captured <kept> of <total> bytes` when
    /// some was dropped.
    pub(crate) fn script_output(&self) -> String {
        if self.truncated() {
            format!(
                "Captured {} of {} bytes\n...\n{}",
                self.kept.len(),
                self.total,
                self.text()
            )
        } else {
            self.text()
        }
    }
}

/// Bounds an output reported through the API (a TTL update) as Consul does: the first `limit` bytes
/// and ` ... (captured <limit> of <total> bytes)`. Cuts at a character boundary at or below `limit`.
pub(crate) fn truncate_head(output: &str, limit: usize) -> String {
    let total = output.len();
    if total <= limit {
        return output.to_owned();
    }
    let mut cut = limit;
    while cut > 0 && !output.is_char_boundary(cut) {
        cut -= 1;
    }
    let head = output.get(..cut).unwrap_or_default();
    format!("{head} ... (captured {limit} of {total} bytes)")
}

/// An OS error as Go prints it: `connection refused`, not `Connection refused (os error 111)`.
pub(crate) fn go_io_error(err: &std::io::Error) -> String {
    if err.kind() == std::io::ErrorKind::TimedOut {
        return "i/o timeout".to_owned();
    }
    let text = err.to_string();
    let text = match text.find(" (os error ") {
        Some(at) => text.get(..at).unwrap_or(text.as_str()).to_owned(),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text,
    }
}

/// The status a script's exit gives: 0 passing, 1 warning, anything else (or a signal) critical.
pub(crate) fn exit_status(code: Option<i32>) -> CheckStatus {
    match code {
        Some(0) => CheckStatus::Passing,
        Some(1) => CheckStatus::Warning,
        _ => CheckStatus::Critical,
    }
}

/// The status an HTTP answer gives: 2xx passing, 429 warning, anything else critical.
pub(crate) fn http_status(code: u16) -> CheckStatus {
    match code {
        200..=299 => CheckStatus::Passing,
        429 => CheckStatus::Warning,
        _ => CheckStatus::Critical,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CheckStatus::{Critical, Passing, Warning};

    #[test]
    fn first_result_is_reported_whatever_the_thresholds() {
        let mut c = StatusCounter::new(3, 0, 3);
        assert_eq!(c.observe(Critical), Some(Critical));
        let mut c = StatusCounter::new(3, 0, 3);
        assert_eq!(c.observe(Passing), Some(Passing));
    }

    #[test]
    fn success_before_passing_needs_consecutive_successes() {
        let mut c = StatusCounter::new(3, 0, 1);
        assert_eq!(c.observe(Critical), Some(Critical));
        assert_eq!(c.observe(Passing), None);
        assert_eq!(c.observe(Warning), None);
        assert_eq!(c.observe(Passing), Some(Passing));
        assert_eq!(c.observe(Passing), Some(Passing));
        // A failure resets the run of successes.
        assert_eq!(c.observe(Critical), Some(Critical));
        assert_eq!(c.observe(Passing), None);
        assert_eq!(c.observe(Critical), Some(Critical));
        assert_eq!(c.observe(Passing), None);
        assert_eq!(c.observe(Passing), None);
        assert_eq!(c.observe(Warning), Some(Warning));
    }

    #[test]
    fn failures_before_critical_and_warning() {
        let mut c = StatusCounter::new(1, 0, 3);
        assert_eq!(c.observe(Passing), Some(Passing));
        assert_eq!(c.observe(Critical), None);
        assert_eq!(c.observe(Critical), None);
        assert_eq!(c.observe(Critical), Some(Critical));
        assert_eq!(c.observe(Passing), Some(Passing));
        assert_eq!(c.observe(Critical), None);

        let mut c = StatusCounter::new(1, 2, 4);
        assert_eq!(c.observe(Passing), Some(Passing));
        assert_eq!(c.observe(Critical), None);
        assert_eq!(c.observe(Critical), Some(Warning));
        assert_eq!(c.observe(Critical), Some(Warning));
        assert_eq!(c.observe(Critical), Some(Critical));
    }

    #[test]
    fn zero_thresholds_report_everything() {
        let mut c = StatusCounter::new(0, 0, 0);
        for s in [Passing, Critical, Warning, Critical, Critical, Passing] {
            assert_eq!(c.observe(s), Some(s));
        }
    }

    #[test]
    fn tail_buffer_keeps_the_end_and_marks_truncation() {
        let mut b = TailBuffer::new(4);
        b.write(b"ab");
        assert_eq!(b.script_output(), "ab");
        b.write(b"cdef");
        assert_eq!(b.text(), "cdef");
        b.write(b"0123456789");
        assert_eq!(b.text(), "6789");
        assert_eq!(b.script_output(), "Captured 4 of 16 bytes\n...\n6789");
    }

    #[test]
    fn head_truncation_as_ttl_updates() {
        assert_eq!(truncate_head("short", 10), "short");
        assert_eq!(
            truncate_head("abcdefghij", 4),
            "abcd ... (captured 4 of 10 bytes)"
        );
        // A cut inside a character moves back to its start.
        assert_eq!(truncate_head("aé", 2), "a ... (captured 2 of 3 bytes)");
    }

    #[test]
    fn status_mappings() {
        assert_eq!(http_status(200), Passing);
        assert_eq!(http_status(204), Passing);
        assert_eq!(http_status(299), Passing);
        assert_eq!(http_status(429), Warning);
        assert_eq!(http_status(301), Critical);
        assert_eq!(http_status(500), Critical);
        assert_eq!(exit_status(Some(0)), Passing);
        assert_eq!(exit_status(Some(1)), Warning);
        assert_eq!(exit_status(Some(2)), Critical);
        assert_eq!(exit_status(None), Critical);
    }

    #[test]
    fn io_errors_in_go_words() {
        let refused = std::io::Error::from_raw_os_error(111);
        assert_eq!(go_io_error(&refused), "connection refused");
        let timeout = std::io::Error::from(std::io::ErrorKind::TimedOut);
        assert_eq!(go_io_error(&timeout), "i/o timeout");
    }
}
