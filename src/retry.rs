//! The retry policy for rows whose delivery failed: a plain value with a pure
//! [`RetryPolicy::decide`], so it is tested directly and never sleeps.
//!
//! Delays grow exponentially from `base` and are capped at `cap`, with "equal jitter": half of
//! the delay is fixed, the other half random, so rows that failed together (a whole batch on a
//! leader change) do not come back together. A row that has used `max_attempts` is parked.
//! Outages (Kafka, Postgres or the registry unreachable) never reach this policy: they cost no
//! attempt.

use std::time::Duration;

/// Base, cap and attempt limit of one topic (after `[retry]` defaults and topic overrides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
    pub max_attempts: u32,
}

/// What to do with a row that failed for a reason that may pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again after this delay.
    RetryAfter(Duration),
    /// Attempts are used up: park the row.
    GiveUp,
}

impl RetryPolicy {
    /// The delay before attempt `attempt + 1`, for a row that has now failed `attempt` times
    /// (1-based), without jitter: `base × 2^(attempt-1)`, at most `cap`.
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(32);
        self.base
            .checked_mul(1u32 << doublings.min(31))
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// Decides for a row that has now failed `attempt` times. `unit` is a number in [0, 1)
    /// (random in production, fixed in tests): the delay is `delay/2 + unit × delay/2`.
    pub fn decide(&self, attempt: u32, unit: f64) -> RetryDecision {
        if attempt >= self.max_attempts {
            return RetryDecision::GiveUp;
        }
        let full = self.delay(attempt);
        let half = full / 2;
        RetryDecision::RetryAfter(half + half.mul_f64(unit.clamp(0.0, 1.0)))
    }
}

/// A number in [0, 1) for jitter, from the clock's nanoseconds mixed with a counter; jitter only
/// needs to spread retries, not to be unpredictable.
pub fn jitter_unit() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    // SplitMix64 step over clock ⊕ counter.
    let mut z = nanos ^ COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(60),
            max_attempts: 5,
        }
    }

    #[test]
    fn delays_double_from_the_base_until_the_cap() {
        let p = policy();
        let ms: Vec<u128> = (1..=10).map(|a| p.delay(a).as_millis()).collect();
        assert_eq!(
            ms,
            [500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000]
        );
    }

    #[test]
    fn huge_attempt_counts_stay_at_the_cap_without_overflow() {
        let p = policy();
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(60));
        assert_eq!(p.delay(64), Duration::from_secs(60));
    }

    #[test]
    fn jitter_keeps_the_delay_between_half_and_the_full_delay() {
        let p = policy();
        assert_eq!(
            p.decide(3, 0.0),
            RetryDecision::RetryAfter(Duration::from_millis(1000))
        );
        assert_eq!(
            p.decide(3, 0.5),
            RetryDecision::RetryAfter(Duration::from_millis(1500))
        );
        for _ in 0..1000 {
            let RetryDecision::RetryAfter(d) = p.decide(2, jitter_unit()) else {
                panic!("attempt 2 of 5 must be retried");
            };
            assert!(d >= Duration::from_millis(500) && d < Duration::from_millis(1000));
        }
    }

    #[test]
    fn the_row_is_parked_once_max_attempts_are_used() {
        let p = policy();
        assert!(matches!(p.decide(4, 0.3), RetryDecision::RetryAfter(_)));
        assert_eq!(p.decide(5, 0.3), RetryDecision::GiveUp);
        assert_eq!(p.decide(6, 0.3), RetryDecision::GiveUp);
    }

    #[test]
    fn one_attempt_means_park_at_the_first_failure() {
        let p = RetryPolicy {
            max_attempts: 1,
            ..policy()
        };
        assert_eq!(p.decide(1, 0.0), RetryDecision::GiveUp);
    }
}
