//! Reporting overage to Stripe's meter exactly once: claim, then send (pure, no I/O).
//!
//! For each account and billing period the reporter keeps a [`ReportState`]: the units Stripe
//! has confirmed, and at most one claim in flight. A run decides with [`next_report`]:
//! - a claim in flight (a crash, a timeout, a refused call) is sent again, unchanged: the same
//!   `identifier`, value and timestamp, which Stripe deduplicates, before anything new;
//! - otherwise the unreported delta (local overage − confirmed) becomes a new claim with the next
//!   sequence number, written to the table before the call;
//! - [`ReportState::confirm`] moves a claim Stripe accepted into the confirmed total, once.
//!
//! So whatever the crashes and retries, every overage unit is in exactly one claim, and every
//! claim has one identifier with one value. Stripe deduplicates identifiers for at least 24
//! hours; a claim resent later than that could be counted twice by Stripe, which
//! reconciliation (Stripe's meter summaries against the confirmed totals) would report.

use sha2::{Digest, Sha256};

use crate::ids::AccountId;
use crate::usage::period::Period;

/// Stripe takes meter events up to 35 days old.
pub const MAX_AGE_SECS: i64 = 35 * 86_400;
/// The largest value sent in one event: far under the 15 significant digits Stripe's numbers
/// keep exactly. A larger delta goes out over several claims.
pub const MAX_VALUE: u64 = 1_000_000_000_000;

/// One meter event, as claimed before it is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub seq: u64,
    pub value: u64,
    /// Stripe's deduplication key: derived from the account, period and sequence only.
    pub identifier: String,
    /// Unix seconds: inside the period, and inside Stripe's window when claimed.
    pub timestamp: i64,
}

/// The reporter's record of one account's period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReportState {
    /// Units Stripe accepted.
    pub confirmed: u64,
    /// Sequence number of the next claim.
    pub next_seq: u64,
    /// The claim sent (or about to be sent) and not yet confirmed.
    pub in_flight: Option<Claim>,
}

/// What a run does for one account's period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// Send this claim again, unchanged.
    Resend(Claim),
    /// Write this claim (on the condition that the state is unchanged), then send it.
    Claim(Claim),
    /// Nothing unreported.
    UpToDate,
    /// The period is too old for Stripe to take its usage: the units can only be billed by
    /// hand (reconciliation reports them).
    TooLate { unreported: u64 },
}

/// `ovg_` and 32 hex digits of a hash of (account, period start, sequence): never reused for
/// another value, within Stripe's 100-character limit whatever the account id's length.
pub fn identifier(account: &AccountId, period_start: i64, seq: u64) -> String {
    let mut h = Sha256::new();
    h.update(account.as_str().as_bytes());
    h.update([0]);
    h.update(period_start.to_be_bytes());
    h.update(seq.to_be_bytes());
    format!("ovg_{}", hex::encode(&h.finalize()[..16]))
}

/// The whole minutes inside `period`: where its meter events are timestamped, and the window
/// reconciliation asks Stripe to sum (summaries take minute-aligned bounds). Neighbouring
/// periods' windows never overlap, even when a period starts mid-minute. A period too short to
/// hold a whole minute falls back to its own bounds.
pub fn summary_window(period: Period) -> (i64, i64) {
    let from = period.start + (60 - period.start.rem_euclid(60)) % 60;
    let to = period.end - period.end.rem_euclid(60);
    if to > from {
        (from, to)
    } else {
        (period.start, period.end)
    }
}

/// When a claim made at `now` says its units happened: now, kept inside the period's summary
/// window (so the first seconds of a period are stamped at its first whole minute, at most a
/// minute ahead, and units reported after the period ended at its window's last second; Stripe
/// bills an event into the period its timestamp falls in).
fn timestamp(period: Period, now: i64) -> i64 {
    let (from, to) = summary_window(period);
    now.clamp(from, to - 1)
}

/// Stripe finalises a subscription's renewal invoice about an hour after the period ends and
/// bills the meter's events of the period that reach it before then. A claim confirmed later than
/// this after its period ended is on the meter but, most likely, on no invoice.
pub const INVOICE_FINALIZE_SECS: i64 = 3_600;

/// Whether units confirmed at `now` for `period` arrived after its invoice was finalised.
pub fn after_invoice(period: Period, now: i64) -> bool {
    now >= period.end + INVOICE_FINALIZE_SECS
}

/// How long after a period ends its figures are compared: the reporter (every minute) has sent
/// the period's last overage well before.
pub const SETTLE_SECS: i64 = 3_600;

/// One account's closed period, as reconciliation sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodFigures {
    /// Overage recorded by the usage function (the period's per-model totals).
    pub recorded: u64,
    /// Units Stripe confirmed to the reporter.
    pub reported: u64,
    /// A claim still in flight.
    pub in_flight: bool,
    /// What Stripe's meter sums for the customer over the period's window.
    pub stripe: u64,
}

/// What reconciling a period found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciled {
    /// All three agree: the period is done.
    Agrees,
    /// A claim is still in flight: the reporter has not finished; look again next time.
    Unsettled,
    /// The figures differ: someone must look (unreported units are lost revenue, units Stripe
    /// counted twice a refund).
    Differs,
}

pub fn reconcile(f: PeriodFigures) -> Reconciled {
    if f.in_flight {
        Reconciled::Unsettled
    } else if f.recorded == f.reported && f.reported == f.stripe {
        Reconciled::Agrees
    } else {
        Reconciled::Differs
    }
}

/// The next step for an account's period whose local overage total is `local`.
pub fn next_report(
    account: &AccountId,
    period: Period,
    state: &ReportState,
    local: u64,
    now: i64,
) -> Report {
    if let Some(claim) = &state.in_flight {
        return Report::Resend(claim.clone());
    }
    let unreported = local.saturating_sub(state.confirmed);
    if unreported == 0 {
        return Report::UpToDate;
    }
    let at = timestamp(period, now);
    if at < now - MAX_AGE_SECS + 60 {
        return Report::TooLate { unreported };
    }
    Report::Claim(Claim {
        seq: state.next_seq,
        value: unreported.min(MAX_VALUE),
        identifier: identifier(account, period.start, state.next_seq),
        timestamp: at,
    })
}

impl ReportState {
    /// The state once `claim` is written (the reporter's conditional write).
    pub fn claimed(&self, claim: Claim) -> Self {
        Self {
            confirmed: self.confirmed,
            next_seq: claim.seq + 1,
            in_flight: Some(claim),
        }
    }

    /// The state once Stripe accepted the claim with `identifier`; any other identifier (a
    /// confirmation that arrives twice, or late) changes nothing.
    pub fn confirm(&self, identifier: &str) -> Self {
        match &self.in_flight {
            Some(c) if c.identifier == identifier => Self {
                confirmed: self.confirmed + c.value,
                next_seq: self.next_seq,
                in_flight: None,
            },
            _ => self.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    const START: i64 = 1_767_225_600;
    const PERIOD: Period = Period {
        start: START,
        end: START + 31 * 86_400,
    };

    fn acct() -> AccountId {
        AccountId::parse("acct_1").unwrap()
    }

    #[test]
    fn a_claim_in_flight_is_resent_unchanged_before_anything_new() {
        let s = ReportState::default();
        let Report::Claim(c) = next_report(&acct(), PERIOD, &s, 500, START + 60) else {
            panic!()
        };
        assert_eq!((c.seq, c.value, c.timestamp), (0, 500, START + 60));
        let s = s.claimed(c.clone());
        // More overage meanwhile, and time has passed: still the same claim.
        assert_eq!(
            next_report(&acct(), PERIOD, &s, 900, START + 600),
            Report::Resend(c.clone())
        );
        let s = s.confirm(&c.identifier);
        assert_eq!(
            s.confirm(&c.identifier),
            s,
            "a second confirmation changes nothing"
        );
        let Report::Claim(d) = next_report(&acct(), PERIOD, &s, 900, START + 600) else {
            panic!()
        };
        assert_eq!((d.seq, d.value), (1, 400));
        assert_ne!(d.identifier, c.identifier);
    }

    #[test]
    fn a_closed_period_reports_at_its_last_second_until_stripe_stops_taking_it() {
        let s = ReportState::default();
        let after = PERIOD.end + 120;
        let Report::Claim(c) = next_report(&acct(), PERIOD, &s, 7, after) else {
            panic!()
        };
        assert_eq!(c.timestamp, PERIOD.end - 1);
        let late = PERIOD.end + MAX_AGE_SECS;
        assert_eq!(
            next_report(&acct(), PERIOD, &s, 7, late),
            Report::TooLate { unreported: 7 }
        );
    }

    #[test]
    fn identifiers_fit_stripe_and_never_repeat_across_accounts_periods_or_sequences() {
        let long = AccountId::parse(&"a".repeat(128)).unwrap();
        let id = identifier(&long, START, 3);
        assert!(id.len() <= 100 && id.starts_with("ovg_"));
        assert_ne!(identifier(&acct(), START, 0), identifier(&acct(), START, 1));
        assert_ne!(
            identifier(&acct(), START, 0),
            identifier(&acct(), START + 1, 0)
        );
        assert_ne!(identifier(&acct(), START, 0), identifier(&long, START, 0));
    }

    #[test]
    fn huge_deltas_go_out_in_several_claims() {
        let s = ReportState::default();
        let Report::Claim(c) = next_report(&acct(), PERIOD, &s, MAX_VALUE + 5, START) else {
            panic!()
        };
        assert_eq!(c.value, MAX_VALUE);
        let s = s.claimed(c.clone()).confirm(&c.identifier);
        let Report::Claim(d) = next_report(&acct(), PERIOD, &s, MAX_VALUE + 5, START) else {
            panic!()
        };
        assert_eq!(d.value, 5);
    }

    #[test]
    fn a_period_starting_mid_minute_is_stamped_and_summed_on_its_whole_minutes_only() {
        let p = Period {
            start: START + 30,
            end: START + 31 * 86_400 + 30,
        };
        assert_eq!(summary_window(p), (START + 60, START + 31 * 86_400));
        let s = ReportState::default();
        let Report::Claim(early) = next_report(&acct(), p, &s, 1, START + 31) else {
            panic!()
        };
        assert_eq!(early.timestamp, START + 60, "at most a minute ahead");
        let Report::Claim(late) = next_report(&acct(), p, &s, 1, p.end + 600) else {
            panic!()
        };
        assert_eq!(late.timestamp, START + 31 * 86_400 - 1);
        assert_eq!(summary_window(PERIOD), (PERIOD.start, PERIOD.end));
    }

    #[test]
    fn reconciliation_agrees_only_when_all_three_figures_do() {
        let f = PeriodFigures {
            recorded: 10,
            reported: 10,
            in_flight: false,
            stripe: 10,
        };
        assert_eq!(reconcile(f), Reconciled::Agrees);
        assert_eq!(
            reconcile(PeriodFigures { stripe: 20, ..f }),
            Reconciled::Differs
        );
        assert_eq!(
            reconcile(PeriodFigures {
                reported: 7,
                stripe: 7,
                ..f
            }),
            Reconciled::Differs
        );
        assert_eq!(
            reconcile(PeriodFigures { recorded: 0, ..f }),
            Reconciled::Differs
        );
        assert_eq!(
            reconcile(PeriodFigures {
                in_flight: true,
                stripe: 0,
                ..f
            }),
            Reconciled::Unsettled
        );
    }

    /// Where a run of the reporter stops.
    #[derive(Debug, Clone, Copy)]
    enum Crash {
        None,
        /// After writing the claim, before calling Stripe.
        AfterClaim,
        /// After Stripe accepted, before recording the confirmation.
        AfterSend,
        /// Stripe answered 429/5xx (nothing recorded by Stripe).
        Refused,
    }

    fn crash() -> impl Strategy<Value = Crash> {
        prop_oneof![
            Just(Crash::None),
            Just(Crash::AfterClaim),
            Just(Crash::AfterSend),
            Just(Crash::Refused)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever second a period starts and ends at, its events are stamped inside it and
        /// inside its summary window, and adjacent periods' windows do not overlap.
        #[test]
        fn adjacent_periods_are_summed_apart(
            start in 1_600_000_000i64..1_900_000_000,
            first in 3_600i64..40 * 86_400,
            second in 3_600i64..40 * 86_400,
            now_a in 0i64..50 * 86_400,
            now_b in 0i64..50 * 86_400,
        ) {
            let a = Period { start, end: start + first };
            let b = Period { start: a.end, end: a.end + second };
            let (a_from, a_to) = summary_window(a);
            let (b_from, b_to) = summary_window(b);
            prop_assert!(a_from % 60 == 0 && a_to % 60 == 0 && b_from % 60 == 0 && b_to % 60 == 0);
            prop_assert!(a.start <= a_from && a_to <= a.end && a_to <= b_from);
            for (p, now, from, to) in [(a, start + now_a, a_from, a_to), (b, start + now_b, b_from, b_to)] {
                let at = timestamp(p, now);
                prop_assert!(from <= at && at < to && p.start <= at && at < p.end);
                prop_assert!(at <= now.max(p.start) + 60, "never more than a minute ahead");
            }
        }

        /// Usage grows while runs crash anywhere and Stripe refuses calls; Stripe (which keeps
        /// the first value of each identifier) ends with exactly the local total once a run
        /// completes, and an identifier never carries two values.
        #[test]
        fn every_unit_reaches_stripe_once_whatever_crashes(
            steps in proptest::collection::vec((0u64..1_000, crash(), 0i64..86_400), 1..40),
        ) {
            let mut local = 0u64;
            let mut state = ReportState::default();
            let mut stripe: HashMap<String, u64> = HashMap::new();
            let mut now = START;
            let run = |state: &mut ReportState, local: u64, now: i64, crash: Crash, stripe: &mut HashMap<String, u64>| -> Result<(), TestCaseError> {
                let claim = match next_report(&acct(), PERIOD, state, local, now) {
                    Report::UpToDate => return Ok(()),
                    Report::TooLate { .. } => return Err(TestCaseError::fail("in the window")),
                    Report::Resend(c) => c,
                    Report::Claim(c) => {
                        *state = state.claimed(c.clone());
                        c
                    }
                };
                if matches!(crash, Crash::AfterClaim) {
                    return Ok(());
                }
                if matches!(crash, Crash::Refused) {
                    return Ok(());
                }
                let first = *stripe.entry(claim.identifier.clone()).or_insert(claim.value);
                prop_assert_eq!(first, claim.value, "one identifier, one value");
                if matches!(crash, Crash::AfterSend) {
                    return Ok(());
                }
                *state = state.confirm(&claim.identifier);
                Ok(())
            };
            for (used, crash, wait) in steps {
                local += used;
                now = (now + wait).min(PERIOD.end + 3_600);
                run(&mut state, local, now, crash, &mut stripe)?;
                prop_assert!(state.confirmed <= local);
            }
            // Runs without crashes until nothing is left: Stripe has every unit, once.
            for _ in 0..3 {
                run(&mut state, local, now, Crash::None, &mut stripe)?;
            }
            prop_assert_eq!(state.in_flight.clone(), None);
            prop_assert_eq!(state.confirmed, local);
            prop_assert_eq!(stripe.values().sum::<u64>(), local);
            prop_assert_eq!(state.confirmed, stripe.values().sum::<u64>());
        }
    }
}
