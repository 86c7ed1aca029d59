//! Capped exponential backoff with jitter, as the engine and the delivery worker record it.

use std::time::Duration;

/// Capped exponential backoff with jitter: the delay after `failures` failures in a row
/// (1 or more) is `base * 2^(failures-1)`, capped, of which the second half is random
/// ("equal jitter": never shorter than half, so retries cannot bunch up at zero). `unit` is a
/// random number in [0, 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    pub fn delay(&self, failures: u32, unit: f64) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        let full = self.base.saturating_mul(1u32 << exp).min(self.cap);
        let half = full / 2;
        half + half.mul_f64(unit.clamp(0.0, 1.0))
    }
}
