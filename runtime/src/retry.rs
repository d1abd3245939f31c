//! Retry policy: how long to wait before each retry, and whether a failure is retried at all.
//!
//! Everything here is a pure function of the attempt number and the failure, so the schedule is
//! unit-tested without a database. The worker decides; the store only carries the decision out.

use std::time::Duration;

use crate::classify::FailureKind;

/// How long to wait before a retry. `#[job(backoff = ...)]` picks one.
///
/// # Formulas
///
/// `attempt` is the number of the attempt that just failed (1 for the first run), and `u` a
/// uniform random number in `[0, 1)`:
///
/// | backoff | delay before the next attempt |
/// | --- | --- |
/// | `exponential` (default) | `(attempt − 1)⁴ + 15 + u · 10 · attempt` seconds (Sidekiq's schedule: 25 retries span about 20 days), at most [`MAX_DELAY`](Backoff::MAX_DELAY) |
/// | `linear` | `15 · attempt` seconds, at most [`MAX_DELAY`](Backoff::MAX_DELAY) |
/// | `constant` | 15 seconds |
/// | a path to `fn(u32) -> Duration` | what the function returns for `attempt` |
///
/// The jitter spreads the retries of jobs that failed together (a gateway outage) so they do not
/// come back together. A `#[retry_after]` field on the error overrides the delay for that attempt.
///
/// ```
/// use std::time::Duration;
/// use errand::Backoff;
///
/// assert_eq!(Backoff::Constant.delay(3), Duration::from_secs(15));
/// assert_eq!(Backoff::Linear.delay(3), Duration::from_secs(45));
/// let first = Backoff::Exponential.delay(1);
/// assert!(first >= Duration::from_secs(15) && first < Duration::from_secs(25));
/// ```
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Backoff {
    /// `(attempt − 1)⁴ + 15 + jitter` seconds; see the formulas above.
    Exponential,
    /// `15 · attempt` seconds.
    Linear,
    /// 15 seconds.
    Constant,
    /// A function of the attempt that failed.
    Custom(fn(u32) -> Duration),
}

impl Backoff {
    /// The longest delay the built-in backoffs produce: one week.
    pub const MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);

    /// The delay after `attempt` failed, with random jitter where the backoff has it.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with_jitter(attempt, fastrand::f64())
    }

    /// The delay with the jitter's random number `u` in `[0, 1)` given.
    pub(crate) fn delay_with_jitter(&self, attempt: u32, u: f64) -> Duration {
        let attempt = attempt.max(1);
        let seconds = match self {
            Backoff::Exponential => {
                let n = f64::from(attempt - 1);
                n.powi(4) + 15.0 + u.clamp(0.0, 1.0) * 10.0 * f64::from(attempt)
            }
            Backoff::Linear => 15.0 * f64::from(attempt),
            Backoff::Constant => 15.0,
            Backoff::Custom(f) => return f(attempt),
        };
        Duration::from_secs_f64(seconds.min(Backoff::MAX_DELAY.as_secs_f64()))
    }
}

/// What happens to a job after a failed attempt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AfterFailure {
    /// Run again after this long.
    Retry(Duration),
    /// Dead: no retry can help, or no attempts are left.
    Dead,
}

/// The decision after attempt `attempt` of `max_attempts` failed with `kind`.
pub(crate) fn after_failure(
    attempt: u32,
    max_attempts: u32,
    kind: FailureKind,
    retry_after: Option<Duration>,
    backoff: &Backoff,
) -> AfterFailure {
    if !kind.is_retryable() || attempt >= max_attempts {
        return AfterFailure::Dead;
    }
    AfterFailure::Retry(retry_after.unwrap_or_else(|| backoff.delay(attempt)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_schedule_is_pinned() {
        let b = Backoff::Exponential;
        assert_eq!(b.delay_with_jitter(1, 0.0), Duration::from_secs(15));
        assert_eq!(b.delay_with_jitter(2, 0.0), Duration::from_secs(16));
        assert_eq!(b.delay_with_jitter(3, 0.0), Duration::from_secs(31));
        assert_eq!(b.delay_with_jitter(10, 0.0), Duration::from_secs(6576));
        // The jitter stays within 10 s per attempt.
        assert_eq!(b.delay_with_jitter(3, 0.5), Duration::from_secs(46));
        assert!(b.delay_with_jitter(3, 0.999_999) < Duration::from_secs(61));
    }

    #[test]
    fn twenty_five_retries_span_about_three_weeks() {
        let total: Duration = (1..=25)
            .map(|a| Backoff::Exponential.delay_with_jitter(a, 0.5))
            .sum();
        let days = total.as_secs_f64() / 86_400.0;
        assert!((18.0..25.0).contains(&days), "{days} days");
    }

    #[test]
    fn delays_are_capped() {
        assert_eq!(
            Backoff::Exponential.delay_with_jitter(100, 0.0),
            Backoff::MAX_DELAY
        );
        assert_eq!(
            Backoff::Linear.delay_with_jitter(u32::MAX, 0.0),
            Backoff::MAX_DELAY
        );
    }

    #[test]
    fn custom_backoff_is_called_with_the_attempt() {
        fn tenth(attempt: u32) -> Duration {
            Duration::from_millis(100 * u64::from(attempt))
        }
        assert_eq!(Backoff::Custom(tenth).delay(4), Duration::from_millis(400));
    }

    #[test]
    fn decisions() {
        let b = Backoff::Constant;
        let retry = |attempt, kind| after_failure(attempt, 3, kind, None, &b);
        assert_eq!(
            retry(1, FailureKind::Transient),
            AfterFailure::Retry(Duration::from_secs(15))
        );
        assert_eq!(
            retry(2, FailureKind::Panic),
            AfterFailure::Retry(Duration::from_secs(15))
        );
        assert_eq!(retry(3, FailureKind::Transient), AfterFailure::Dead);
        assert_eq!(retry(1, FailureKind::Permanent), AfterFailure::Dead);
        assert_eq!(retry(1, FailureKind::Undecodable), AfterFailure::Dead);
        let after = after_failure(
            1,
            3,
            FailureKind::Transient,
            Some(Duration::from_secs(2)),
            &b,
        );
        assert_eq!(after, AfterFailure::Retry(Duration::from_secs(2)));
    }
}
