//! An account's spendable balance and what each use of it takes: the burn-down, holds, periods
//! and the notifications they cause. Pure: the store loads a [`Ledger`], one of these
//! operations changes it, and the store writes it back on the condition that nothing it was
//! computed from changed meanwhile.
//!
//! The rules:
//! - **Burn-down**: the period's included allowance, then prepaid credits, then overage (only
//!   where the plan has it), then uncovered. Each bucket pays whole units; the four add up to the
//!   units of the use.
//! - **Holds** reserve units of the pool (allowance left + credits) for a call in flight. Usage
//!   never takes what other live holds reserve, so the sum of live holds never exceeds the pool
//!   through usage or reservation. A hold counts until its `expires_at` and not after, whether
//!   or not anything has removed it yet (expired holds are dropped at the next write).
//! - **Balances never go below zero.** What nothing covers is recorded as uncovered (it is
//!   never dropped) and the account is not allowed until something covers it again.
//! - **Periods**: usage at `t` belongs to the period with `start ≤ t < end`. The first use in
//!   a new period starts its allowance; the previous period's counter is kept for late usage;
//!   usage older than that finds no allowance left.
//!
//! The overdraft bound: no bucket ever goes below zero, so "past zero" means uncovered units.
//! Those arise only from usage that exceeds the unreserved pool at the moment it is recorded:
//! an app that reserves before each call, settles within the hold's lifetime and uses no more
//! than it reserved never has uncovered units (property-tested below). An app that only checks
//! before calling can have at most the units of the calls in flight when the pool ran out
//! uncovered, since each of them was checked against the pool before any was recorded.

use std::collections::BTreeMap;

use super::period::{Period, calendar_month, period_containing};
use super::topup::{AutoTopup, TopupClaim};
use crate::ids::ReservationId;

/// At most this many live holds per account: they live on the account's item, whose size is
/// what every write of the account pays for.
pub const MAX_HOLDS: usize = 200;

/// What the account's plan entitles it to, as the processor last stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    pub plan: String,
    pub included_units: u64,
    pub overage: bool,
    /// The subscription's current period while it grants the plan; the calendar month without.
    pub period: Option<Period>,
    pub suspended: bool,
}

impl Terms {
    pub fn period_of(&self, t: i64) -> Period {
        self.period
            .and_then(|known| period_containing(known, t))
            .unwrap_or_else(|| calendar_month(t))
    }
}

/// One period's usage of the allowance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    pub start: i64,
    pub end: i64,
    pub included_used: u64,
    pub overage: u64,
    pub uncovered: u64,
    /// `usage.threshold` sent for this period: bit 0 at 80 %, bit 1 at 100 %.
    pub notified: u8,
}

impl Counter {
    fn new(p: Period) -> Self {
        Self {
            start: p.start,
            end: p.end,
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub units: u64,
    pub expires_at: i64,
}

impl Hold {
    pub fn is_live(&self, now: i64) -> bool {
        now < self.expires_at
    }
}

/// The account's spendable state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    pub credits: u64,
    /// The size of the last credit grant: `credits.low` fires below 20 % of it.
    pub last_topup: u64,
    pub low_notified: bool,
    pub blocked_notified: bool,
    pub current: Option<Counter>,
    pub previous: Option<Counter>,
    pub holds: BTreeMap<ReservationId, Hold>,
    pub topup: AutoTopup,
}

/// Units paid by each bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Covered {
    pub included: u64,
    pub credits: u64,
    pub overage: u64,
    pub uncovered: u64,
}

impl Covered {
    pub fn total(&self) -> u64 {
        self.included + self.credits + self.overage + self.uncovered
    }
}

impl std::ops::AddAssign for Covered {
    fn add_assign(&mut self, other: Self) {
        self.included += other.included;
        self.credits += other.credits;
        self.overage += other.overage;
        self.uncovered += other.uncovered;
    }
}

/// A notification the change causes; the store writes it to the outbox with the change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Credits fell below 20 % of the last top-up.
    CreditsLow { credits: u64, last_topup: u64 },
    /// The period's allowance reached `percent` (80 or 100).
    UsageThreshold {
        percent: u8,
        period_start: i64,
        included_units: u64,
    },
    /// The account stopped being allowed.
    UsageBlocked,
}

impl Notice {
    pub fn name(&self) -> &'static str {
        match self {
            Self::CreditsLow { .. } => "credits.low",
            Self::UsageThreshold { .. } => "usage.threshold",
            Self::UsageBlocked => "usage.blocked",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    pub covered: Covered,
    pub period: Period,
    /// The reservation it settled, if it named one that was still live.
    pub settled_hold: Option<Hold>,
    pub notices: Vec<Notice>,
    /// The automatic top-up this use claimed, if any.
    pub topup: Option<TopupClaim>,
}

/// Why a reservation is refused (an answer, not an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Suspended,
    InsufficientBalance,
    TooManyReservations,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Suspended => "account_suspended",
            Self::InsufficientBalance => "insufficient_balance",
            Self::TooManyReservations => "too_many_reservations",
        }
    }
}

/// What a `release` found on the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    Released,
    Expired,
    /// Not on the account: settled, released before, or expired and dropped.
    NotHeld,
}

/// The balance as the usage function reports it, at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    pub plan: String,
    pub status: &'static str,
    pub period: Period,
    pub included_units: u64,
    pub included_remaining: u64,
    pub credits: u64,
    pub reserved: u64,
    pub overage_units: u64,
    pub uncovered_units: u64,
    pub allowed: bool,
}

/// Units of one call, by the rate card's weights; `None` if the count overflows.
pub fn units(
    rate: &crate::catalog::ModelRate,
    input: u64,
    output: u64,
    cached_input: u64,
    reasoning: u64,
) -> Option<u64> {
    [
        (input, rate.input),
        (output, rate.output),
        (cached_input, rate.cached_input),
        (reasoning, rate.reasoning),
    ]
    .into_iter()
    .try_fold(0u64, |sum, (tokens, weight)| {
        sum.checked_add(tokens.checked_mul(weight)?)
    })
}

fn below_fifth(credits: u64, last_topup: u64) -> bool {
    u128::from(credits) * 5 < u128::from(last_topup)
}

impl Ledger {
    fn held(&self, now: i64) -> u64 {
        self.holds
            .values()
            .filter(|h| h.is_live(now))
            .fold(0u64, |sum, h| sum.saturating_add(h.units))
    }

    fn drop_expired(&mut self, now: i64) {
        self.holds.retain(|_, h| h.is_live(now));
    }

    /// The period's counter as it stands, without changing anything: a period not started yet
    /// has its whole allowance.
    fn counter_at(&self, p: Period) -> Counter {
        [self.current, self.previous]
            .into_iter()
            .flatten()
            .find(|c| c.start == p.start)
            .map(|c| Counter { end: p.end, ..c })
            .unwrap_or_else(|| Counter::new(p))
    }

    /// The counter that usage at period `p` charges, rolling the periods forward if `p` is new.
    /// `None` for a period older than both kept counters: its allowance is treated as spent.
    fn counter_mut(&mut self, p: Period) -> Option<&mut Counter> {
        match self.current {
            Some(c) if c.start == p.start => {}
            Some(c) if p.start < c.start => {
                return self.previous.as_mut().filter(|prev| prev.start == p.start);
            }
            _ => {
                self.previous = self.current.take();
                self.current = Some(Counter::new(p));
            }
        }
        let c = self.current.as_mut()?;
        c.end = p.end;
        Some(c)
    }

    /// The pool (allowance left + credits) beyond what live holds reserve, at `now`.
    fn unreserved(&self, terms: &Terms, now: i64) -> u64 {
        let counter = self.counter_at(terms.period_of(now));
        terms
            .included_units
            .saturating_sub(counter.included_used)
            .saturating_add(self.credits)
            .saturating_sub(self.held(now))
    }

    pub fn allowed(&self, terms: &Terms, now: i64) -> bool {
        !terms.suspended && (terms.overage || self.unreserved(terms, now) > 0)
    }

    pub fn low_balance(&self) -> bool {
        self.last_topup > 0 && below_fifth(self.credits, self.last_topup)
    }

    /// Whether a call of `units` may go ahead now, and why not.
    pub fn check(&self, terms: &Terms, now: i64, units: u64) -> Result<(), Refusal> {
        if terms.suspended {
            return Err(Refusal::Suspended);
        }
        if !terms.overage && units > self.unreserved(terms, now) {
            return Err(Refusal::InsufficientBalance);
        }
        Ok(())
    }

    /// Records `units` used at `at`, settling `reservation` if it is still live.
    pub fn track(
        &mut self,
        terms: &Terms,
        now: i64,
        at: i64,
        units: u64,
        reservation: Option<&ReservationId>,
    ) -> Tracked {
        let settled_hold = reservation
            .and_then(|r| self.holds.remove(r))
            .filter(|h| h.is_live(now));
        self.drop_expired(now);
        let held = self.held(now);
        let period = terms.period_of(at);
        let credits = self.credits;
        let mut scratch = Counter {
            included_used: terms.included_units,
            ..Counter::new(period)
        };
        let counter = match self.counter_mut(period) {
            Some(c) => c,
            None => &mut scratch,
        };
        let included_left = terms.included_units.saturating_sub(counter.included_used);
        let pool = included_left.saturating_add(credits).saturating_sub(held);
        let take = units.min(pool);
        let included = take.min(included_left);
        let from_credits = take - included;
        let rest = units - take;
        let overage = if terms.overage { rest } else { 0 };
        let covered = Covered {
            included,
            credits: from_credits,
            overage,
            uncovered: rest - overage,
        };
        counter.included_used += included;
        counter.overage = counter.overage.saturating_add(covered.overage);
        counter.uncovered = counter.uncovered.saturating_add(covered.uncovered);

        let mut notices = Vec::new();
        if included > 0 && terms.included_units > 0 {
            let used = u128::from(counter.included_used);
            let of = u128::from(terms.included_units);
            for (bit, percent, reached) in [(1u8, 80u8, used * 5 >= of * 4), (2, 100, used >= of)] {
                if reached && counter.notified & bit == 0 {
                    counter.notified |= bit;
                    notices.push(Notice::UsageThreshold {
                        percent,
                        period_start: period.start,
                        included_units: terms.included_units,
                    });
                }
            }
        }
        self.credits = credits - from_credits;
        if from_credits > 0 && !self.low_notified && self.low_balance() {
            self.low_notified = true;
            notices.push(Notice::CreditsLow {
                credits: self.credits,
                last_topup: self.last_topup,
            });
        }
        self.note_blocked(terms, now, &mut notices);
        // Credits paid for some of it, or it went beyond them: that is what a top-up refills.
        let took_credits = from_credits + rest > 0;
        let topup = self.topup.claim(self.credits, took_credits, now).ok();
        Tracked {
            covered,
            period,
            settled_hold,
            notices,
            topup,
        }
    }

    /// `usage.blocked` once each time the account runs out. Suspension has its own
    /// notification, so a suspended account re-arms instead.
    fn note_blocked(&mut self, terms: &Terms, now: i64, notices: &mut Vec<Notice>) {
        if self.allowed(terms, now) || terms.suspended {
            self.blocked_notified = false;
        } else if !self.blocked_notified {
            self.blocked_notified = true;
            notices.push(Notice::UsageBlocked);
        }
    }

    /// Holds `units` for a call in flight until `expires_at`, if the unreserved pool covers
    /// them (or the plan has overage).
    pub fn reserve(
        &mut self,
        terms: &Terms,
        now: i64,
        id: ReservationId,
        units: u64,
        expires_at: i64,
    ) -> Result<(), Refusal> {
        self.drop_expired(now);
        if self.holds.contains_key(&id) {
            return Ok(());
        }
        self.check(terms, now, units)?;
        if self.holds.len() >= MAX_HOLDS {
            return Err(Refusal::TooManyReservations);
        }
        self.holds.insert(id, Hold { units, expires_at });
        Ok(())
    }

    pub fn release(&mut self, now: i64, id: &ReservationId) -> Released {
        let found = self.holds.remove(id);
        self.drop_expired(now);
        match found {
            Some(h) if h.is_live(now) => Released::Released,
            Some(_) => Released::Expired,
            None => Released::NotHeld,
        }
    }

    /// Credits bought (the processor's grant): re-arms `credits.low`.
    pub fn grant(&mut self, credits: u64) {
        self.credits = self.credits.saturating_add(credits);
        self.last_topup = credits;
        self.low_notified = false;
    }

    /// Credits taken back by a refund (at most what is there).
    pub fn claw_back(&mut self, credits: u64) -> u64 {
        let taken = credits.min(self.credits);
        self.credits -= taken;
        taken
    }

    pub fn balance(&self, terms: &Terms, now: i64) -> Balance {
        let period = terms.period_of(now);
        let counter = self.counter_at(period);
        let allowed = self.allowed(terms, now);
        Balance {
            plan: terms.plan.clone(),
            status: if terms.suspended {
                "suspended"
            } else if allowed {
                "active"
            } else {
                "blocked"
            },
            period,
            included_units: terms.included_units,
            included_remaining: terms.included_units.saturating_sub(counter.included_used),
            credits: self.credits,
            reserved: self.held(now),
            overage_units: counter.overage,
            uncovered_units: counter.uncovered,
            allowed,
        }
    }
}

#[cfg(test)]
mod tests;
