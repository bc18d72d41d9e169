//! Billing periods: which period a moment of usage belongs to.
//!
//! A period is `[start, end)`: usage exactly at `end` belongs to the next one. A subscription's
//! period comes from Stripe (the processor stores it); when usage arrives after it ended and
//! before the renewal event, the next period is derived here the way Stripe derives it, by
//! calendar months from the period's start (or by the same length, for an interval that is not
//! a whole number of months). The next period always starts exactly where the last one ended,
//! which is what Stripe's renewal reports too, so usage and the renewal event agree on the
//! period whichever arrives first. Without a subscription (the free plan) the period is the
//! calendar month, UTC.

const DAY: i64 = 86_400;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Period {
    pub start: i64,
    pub end: i64,
}

impl Period {
    pub fn contains(&self, t: i64) -> bool {
        self.start <= t && t < self.end
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (`civil_from_days`).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    days_from_civil(ny, nm, 1) - days_from_civil(y, m, 1)
}

/// `t` moved by `months` calendar months, the day clamped to the target month's length
/// (Jan 31 + 1 month = Feb 28/29), as Stripe moves billing dates.
pub fn add_months(t: i64, months: i64) -> i64 {
    let (days, secs) = (t.div_euclid(DAY), t.rem_euclid(DAY));
    let (y, m, d) = civil_from_days(days);
    let index = y * 12 + (m - 1) + months;
    let (ny, nm) = (index.div_euclid(12), index.rem_euclid(12) + 1);
    let nd = d.min(days_in_month(ny, nm));
    days_from_civil(ny, nm, nd) * DAY + secs
}

/// The calendar month (UTC) that contains `t`.
pub fn calendar_month(t: i64) -> Period {
    let (y, m, _) = civil_from_days(t.div_euclid(DAY));
    let start = days_from_civil(y, m, 1) * DAY;
    Period {
        start,
        end: start + days_in_month(y, m) * DAY,
    }
}

/// The period that contains `t`, given a known period (a subscription's), stepping from it
/// as Stripe would. `None` when `known` is empty.
pub fn period_containing(known: Period, t: i64) -> Option<Period> {
    if known.end <= known.start {
        return None;
    }
    if known.contains(t) {
        return Some(known);
    }
    let months = [1, 3, 6, 12]
        .into_iter()
        .find(|&k| add_months(known.start, k) == known.end);
    let step = |n: i64| match months {
        Some(k) => add_months(known.start, n * k),
        None => known.start + n * (known.end - known.start),
    };
    // A first guess from the average length, then exact steps: at most a couple of each.
    let length = (known.end - known.start).max(1);
    let mut n = (t - known.start).div_euclid(length);
    while step(n) > t {
        n -= 1;
    }
    while step(n + 1) <= t {
        n += 1;
    }
    Some(Period {
        start: step(n),
        end: step(n + 1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const JAN_31_2026: i64 = 1_769_817_600; // 2026-01-31T00:00:00Z

    #[test]
    fn months_clamp_to_the_shorter_month() {
        assert_eq!(add_months(JAN_31_2026, 1), 1_772_236_800); // 2026-02-28
        assert_eq!(add_months(JAN_31_2026, 2), 1_774_915_200); // 2026-03-31
        assert_eq!(add_months(JAN_31_2026, -2), 1_764_460_800); // 2025-11-30
    }

    #[test]
    fn the_calendar_month_is_utc() {
        let p = calendar_month(JAN_31_2026 + 86_399);
        assert_eq!(
            p,
            Period {
                start: 1_767_225_600,
                end: 1_769_904_000
            }
        ); // Jan 2026
        assert_eq!(
            calendar_month(p.end),
            Period {
                start: p.end,
                end: 1_772_323_200
            }
        );
    }

    #[test]
    fn a_boundary_belongs_to_the_next_period() {
        let known = Period {
            start: JAN_31_2026,
            end: add_months(JAN_31_2026, 1),
        };
        assert_eq!(period_containing(known, known.end - 1), Some(known));
        let next = period_containing(known, known.end).unwrap();
        assert_eq!(
            next,
            Period {
                start: known.end,
                end: add_months(JAN_31_2026, 2)
            }
        );
        let before = period_containing(known, known.start - 1).unwrap();
        assert_eq!(before.end, known.start);
    }

    #[test]
    fn an_interval_that_is_not_months_repeats_its_length() {
        let known = Period {
            start: 1_000_000,
            end: 1_000_000 + 7 * DAY,
        };
        assert_eq!(
            period_containing(known, known.end + 8 * DAY),
            Some(Period {
                start: known.start + 14 * DAY,
                end: known.start + 21 * DAY
            })
        );
        assert_eq!(period_containing(Period { start: 5, end: 5 }, 5), None);
    }

    proptest! {
        #[test]
        fn every_moment_has_exactly_one_period(
            start in 0i64..4_000_000_000,
            kind in 0usize..5,
            offset in -40_000_000i64..400_000_000,
        ) {
            let end = match kind {
                0 => add_months(start, 1),
                1 => add_months(start, 12),
                2 => add_months(start, 3),
                3 => start + 7 * DAY,
                _ => start + 1 + offset.rem_euclid(90 * DAY),
            };
            let known = Period { start, end };
            let t = start + offset;
            let p = period_containing(known, t).unwrap();
            prop_assert!(p.contains(t));
            // Neighbours tile the line: the next period starts where this one ends.
            let next = period_containing(known, p.end).unwrap();
            prop_assert_eq!(next.start, p.end);
            let month = calendar_month(t);
            prop_assert!(month.contains(t));
            prop_assert_eq!(calendar_month(month.end).start, month.end);
        }
    }
}
