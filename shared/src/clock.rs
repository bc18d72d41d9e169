//! The one place the wall clock is read; everything else takes `now` as an argument.

/// Seconds since the Unix epoch (0 if the clock is before it, which no Lambda host is).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The monotonic instant at which the wall clock reads `unix_millis` (a Lambda invocation's
/// deadline): now, when that time has passed.
pub fn instant_of_unix_millis(unix_millis: u64) -> std::time::Instant {
    let now_millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    std::time::Instant::now()
        + std::time::Duration::from_millis(unix_millis.saturating_sub(now_millis))
}
