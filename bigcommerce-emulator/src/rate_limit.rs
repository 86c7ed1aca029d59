//! Rate-limit bookkeeping: a per-store quota per fixed window, and the legacy rolling hour.
//!
//! Invariant: pure; every call takes the current time in milliseconds.

use std::collections::VecDeque;

/// What the `X-Rate-Limit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateStatus {
    pub window_ms: u64,
    /// Milliseconds until the quota refreshes.
    pub reset_ms: u64,
    pub quota: u32,
    pub left: u32,
}

impl RateStatus {
    /// Whole seconds to wait, rounded up, for `X-Retry-After`.
    pub fn retry_after_secs(&self) -> u64 {
        self.reset_ms.div_ceil(1000)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed(RateStatus),
    Limited(RateStatus),
}

/// A fixed window that opens with the first request after the previous one closed.
#[derive(Debug, Clone)]
pub struct Window {
    pub quota: u32,
    pub window_ms: u64,
    started_at_ms: Option<u64>,
    used: u32,
}

impl Window {
    pub fn new(quota: u32, window_ms: u64) -> Window {
        Window {
            quota,
            window_ms,
            started_at_ms: None,
            used: 0,
        }
    }

    fn roll(&mut self, now_ms: u64) {
        match self.started_at_ms {
            Some(start) if now_ms >= start && now_ms - start < self.window_ms => {}
            _ => {
                self.started_at_ms = Some(now_ms);
                self.used = 0;
            }
        }
    }

    fn status(&self, now_ms: u64) -> RateStatus {
        let start = self.started_at_ms.unwrap_or(now_ms);
        RateStatus {
            window_ms: self.window_ms,
            reset_ms: (start + self.window_ms).saturating_sub(now_ms),
            quota: self.quota,
            left: self.quota.saturating_sub(self.used),
        }
    }

    /// Counts one request if the quota allows it.
    pub fn take(&mut self, now_ms: u64) -> Decision {
        self.roll(now_ms);
        if self.used >= self.quota {
            return Decision::Limited(self.status(now_ms));
        }
        self.used += 1;
        Decision::Allowed(self.status(now_ms))
    }

    /// The headers without counting a request.
    pub fn peek(&mut self, now_ms: u64) -> RateStatus {
        self.roll(now_ms);
        self.status(now_ms)
    }

    /// Changes quota and window; the current window keeps what it has used.
    pub fn configure(&mut self, quota: u32, window_ms: u64) {
        self.quota = quota;
        self.window_ms = window_ms;
    }
}

const HOUR_MS: u64 = 3_600_000;

/// Legacy accounts' rolling-hour quota, reported in `X-BC-ApiLimit-Remaining`.
#[derive(Debug, Clone)]
pub struct RollingHour {
    pub quota: u32,
    hits: VecDeque<u64>,
}

impl RollingHour {
    pub fn new(quota: u32) -> RollingHour {
        RollingHour {
            quota,
            hits: VecDeque::new(),
        }
    }

    /// Counts one request; returns what remains, or None when the hour's quota is spent.
    pub fn take(&mut self, now_ms: u64) -> Option<u32> {
        while let Some(&first) = self.hits.front() {
            if first + HOUR_MS <= now_ms || first > now_ms {
                self.hits.pop_front();
            } else {
                break;
            }
        }
        if self.hits.len() >= self.quota as usize {
            return None;
        }
        self.hits.push_back(now_ms);
        Some(self.quota - self.hits.len() as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_counts_down_then_refreshes() {
        let mut w = Window::new(2, 30_000);
        let steps: [(u64, Decision); 5] = [
            (
                1_000,
                Decision::Allowed(RateStatus {
                    window_ms: 30_000,
                    reset_ms: 30_000,
                    quota: 2,
                    left: 1,
                }),
            ),
            (
                11_000,
                Decision::Allowed(RateStatus {
                    window_ms: 30_000,
                    reset_ms: 20_000,
                    quota: 2,
                    left: 0,
                }),
            ),
            (
                21_000,
                Decision::Limited(RateStatus {
                    window_ms: 30_000,
                    reset_ms: 10_000,
                    quota: 2,
                    left: 0,
                }),
            ),
            (
                31_000,
                Decision::Allowed(RateStatus {
                    window_ms: 30_000,
                    reset_ms: 30_000,
                    quota: 2,
                    left: 1,
                }),
            ),
            (
                31_500,
                Decision::Allowed(RateStatus {
                    window_ms: 30_000,
                    reset_ms: 29_500,
                    quota: 2,
                    left: 0,
                }),
            ),
        ];
        for (now, expected) in steps {
            assert_eq!(w.take(now), expected, "at {now}");
        }
    }

    #[test]
    fn retry_after_rounds_up() {
        let s = RateStatus {
            window_ms: 30_000,
            reset_ms: 1_001,
            quota: 1,
            left: 0,
        };
        assert_eq!(s.retry_after_secs(), 2);
    }

    #[test]
    fn a_clock_moved_back_opens_a_new_window() {
        let mut w = Window::new(1, 30_000);
        assert!(matches!(w.take(50_000), Decision::Allowed(_)));
        assert!(matches!(w.take(10_000), Decision::Allowed(_)));
    }

    #[test]
    fn the_rolling_hour_forgets_old_requests() {
        let mut h = RollingHour::new(2);
        assert_eq!(h.take(0), Some(1));
        assert_eq!(h.take(1_000), Some(0));
        assert_eq!(h.take(2_000), None);
        assert_eq!(h.take(HOUR_MS), Some(0));
    }
}
