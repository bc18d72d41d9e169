//! Waiting between attempts of a call that may succeed later (429, 5xx, a timeout).

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// "Full jitter": a random wait between zero and `base` × 2^attempt (the exponent capped at 6),
/// so that callers that failed together do not retry together.
pub fn full_jitter(base: Duration, attempt: u32) -> Duration {
    let ceiling = base * (1u32 << attempt.min(6));
    let micros = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(RandomState::new().hash_one(attempt) % (micros + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_stay_under_a_ceiling_that_doubles_then_stops_growing() {
        let base = Duration::from_millis(10);
        for attempt in 0..12 {
            let ceiling = base * (1 << attempt.min(6));
            for _ in 0..50 {
                assert!(full_jitter(base, attempt) <= ceiling);
            }
        }
        assert_eq!(full_jitter(Duration::ZERO, 3), Duration::ZERO);
    }
}
