//! The one place the wall clock is read; everything else takes `now` as an argument.

/// Seconds since the Unix epoch (0 if the clock is before it, which no Lambda host is).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
