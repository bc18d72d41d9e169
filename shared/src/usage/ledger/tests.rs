use proptest::prelude::*;

use super::*;
use crate::ids::{AccountId, RequestId};
use crate::usage::period::add_months;

const T0: i64 = 1_767_225_600; // 2026-01-01T00:00:00Z

fn terms(included: u64, overage: bool) -> Terms {
    Terms {
        plan: "pro".into(),
        included_units: included,
        overage,
        period: Some(Period {
            start: T0,
            end: add_months(T0, 1),
        }),
        suspended: false,
    }
}

fn rsv(n: usize) -> ReservationId {
    ReservationId::for_request(
        &AccountId::parse("acct_1").unwrap(),
        &RequestId::parse(&format!("req_{n}")).unwrap(),
    )
}

#[test]
fn burns_allowance_then_credits_then_overage() {
    let t = terms(10, true);
    let mut l = Ledger::default();
    l.grant(5);
    let a = l.track(&t, T0, T0, 12, None);
    assert_eq!(
        a.covered,
        Covered {
            included: 10,
            credits: 2,
            overage: 0,
            uncovered: 0
        }
    );
    let b = l.track(&t, T0, T0, 7, None);
    assert_eq!(
        b.covered,
        Covered {
            included: 0,
            credits: 3,
            overage: 4,
            uncovered: 0
        }
    );
    assert_eq!(l.credits, 0);
    assert!(l.allowed(&t, T0), "a plan with overage stays allowed");
}

#[test]
fn without_overage_the_rest_is_uncovered_and_the_account_blocked_once() {
    let t = terms(3, false);
    let mut l = Ledger::default();
    let a = l.track(&t, T0, T0, 5, None);
    assert_eq!(
        a.covered,
        Covered {
            included: 3,
            credits: 0,
            overage: 0,
            uncovered: 2
        }
    );
    assert!(a.notices.contains(&Notice::UsageBlocked));
    assert!(!l.allowed(&t, T0));
    let b = l.track(&t, T0, T0, 1, None);
    assert!(
        !b.notices.contains(&Notice::UsageBlocked),
        "once until allowed again"
    );
    l.grant(10);
    assert!(l.allowed(&t, T0), "buying credits covers the account again");
    assert_eq!(l.balance(&t, T0).uncovered_units, 3);
}

#[test]
fn thresholds_once_per_period_and_again_in_the_next() {
    let t = terms(100, true);
    let mut l = Ledger::default();
    let names = |tr: &Tracked| {
        tr.notices
            .iter()
            .filter_map(|n| match n {
                Notice::UsageThreshold { percent, .. } => Some(*percent),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&l.track(&t, T0, T0, 79, None)), Vec::<u8>::new());
    assert_eq!(names(&l.track(&t, T0, T0, 1, None)), vec![80]);
    assert_eq!(names(&l.track(&t, T0, T0, 30, None)), vec![100]);
    assert_eq!(names(&l.track(&t, T0, T0, 30, None)), Vec::<u8>::new());
    let next = add_months(T0, 1);
    assert_eq!(names(&l.track(&t, next, next, 100, None)), vec![80, 100]);
}

#[test]
fn credits_low_fires_once_below_a_fifth_of_the_last_top_up_and_rearms_on_a_top_up() {
    let t = terms(0, false);
    let mut l = Ledger::default();
    l.grant(100);
    assert!(l.track(&t, T0, T0, 80, None).notices.is_empty());
    assert_eq!(
        l.track(&t, T0, T0, 1, None).notices,
        vec![Notice::CreditsLow {
            credits: 19,
            last_topup: 100
        }]
    );
    assert!(l.track(&t, T0, T0, 1, None).notices.is_empty());
    l.grant(50);
    assert!(
        l.track(&t, T0, T0, 60, None)
            .notices
            .contains(&Notice::CreditsLow {
                credits: 8,
                last_topup: 50
            })
    );
}

#[test]
fn a_boundary_moment_starts_the_next_period_whatever_the_renewal_order() {
    let end = add_months(T0, 1);
    let mut before_renewal = terms(10, false);
    let mut l = Ledger::default();
    assert_eq!(
        l.track(&before_renewal, end - 1, end - 1, 10, None)
            .covered
            .included,
        10
    );
    // Usage at `end` before the renewal event: the next period's allowance.
    let at_end = l.track(&before_renewal, end, end, 4, None);
    assert_eq!((at_end.period.start, at_end.covered.included), (end, 4));
    // The renewal then names the same period: the counter carries on.
    before_renewal.period = Some(Period {
        start: end,
        end: add_months(T0, 2),
    });
    assert_eq!(
        l.track(&before_renewal, end + 5, end + 5, 10, None)
            .covered
            .included,
        6
    );
    // Late usage from the previous period finds its (spent) allowance, not the new one.
    let late = l.track(&before_renewal, end + 6, end - 10, 1, None);
    assert_eq!((late.period.start, late.covered.uncovered), (T0, 1));
}

#[test]
fn holds_reserve_the_pool_and_stop_counting_when_they_expire() {
    let t = terms(10, false);
    let mut l = Ledger::default();
    l.reserve(&t, T0, rsv(1), 8, T0 + 30).unwrap();
    assert_eq!(
        l.reserve(&t, T0, rsv(2), 3, T0 + 30),
        Err(Refusal::InsufficientBalance)
    );
    let other = l.track(&t, T0, T0, 5, None);
    assert_eq!(
        other.covered,
        Covered {
            included: 2,
            credits: 0,
            overage: 0,
            uncovered: 3
        }
    );
    // Settled for less than held: the rest is free again.
    let settled = l.track(&t, T0 + 1, T0 + 1, 6, Some(&rsv(1)));
    assert_eq!(settled.covered.included, 6);
    assert_eq!(
        settled.settled_hold,
        Some(Hold {
            units: 8,
            expires_at: T0 + 30
        })
    );
    assert_eq!(l.balance(&t, T0 + 1).included_remaining, 2);
    l.reserve(&t, T0 + 2, rsv(3), 2, T0 + 10).unwrap();
    assert_eq!(l.balance(&t, T0 + 9).reserved, 2);
    assert_eq!(
        l.balance(&t, T0 + 10).reserved,
        0,
        "expired holds stop counting by themselves"
    );
    assert_eq!(l.release(T0 + 10, &rsv(3)), Released::Expired);
    assert_eq!(l.release(T0 + 10, &rsv(3)), Released::NotHeld);
}

#[test]
fn suspended_accounts_are_recorded_but_not_allowed() {
    let mut t = terms(10, true);
    t.suspended = true;
    let mut l = Ledger::default();
    assert_eq!(l.check(&t, T0, 1), Err(Refusal::Suspended));
    assert_eq!(
        l.reserve(&t, T0, rsv(1), 1, T0 + 5),
        Err(Refusal::Suspended)
    );
    assert_eq!(l.track(&t, T0, T0, 4, None).covered.included, 4);
    assert_eq!(l.balance(&t, T0).status, "suspended");
}

#[test]
fn units_are_weighted_and_overflow_is_none() {
    let rate = crate::catalog::ModelRate {
        input: 2,
        output: 8,
        cached_input: 1,
        reasoning: 8,
    };
    assert_eq!(
        units(&rate, 1000, 200, 500, 10),
        Some(2000 + 1600 + 500 + 80)
    );
    let huge = crate::catalog::ModelRate {
        input: u64::MAX,
        output: 1,
        cached_input: 1,
        reasoning: 1,
    };
    assert_eq!(units(&huge, 2, 0, 0, 0), None);
}

#[derive(Debug, Clone)]
enum Op {
    Track {
        units: u64,
        hold: Option<usize>,
        back: i64,
    },
    Reserve {
        hold: usize,
        units: u64,
        ttl: i64,
    },
    Release {
        hold: usize,
    },
    Grant {
        credits: u64,
    },
    ClawBack {
        credits: u64,
    },
    Wait {
        secs: i64,
    },
    Renew,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..40, proptest::option::of(0usize..6), 0i64..3).prop_map(|(units, hold, back)| Op::Track { units, hold, back }),
        3 => (0usize..6, 0u64..40, 1i64..60).prop_map(|(hold, units, ttl)| Op::Reserve { hold, units, ttl }),
        1 => (0usize..6).prop_map(|hold| Op::Release { hold }),
        1 => (0u64..100).prop_map(|credits| Op::Grant { credits }),
        1 => (0u64..50).prop_map(|credits| Op::ClawBack { credits }),
        2 => (0i64..400_000).prop_map(|secs| Op::Wait { secs }),
        1 => Just(Op::Renew),
    ]
}

fn pool(l: &Ledger, t: &Terms, now: i64) -> u64 {
    let c = l.counter_at(t.period_of(now));
    t.included_units.saturating_sub(c.included_used) + l.credits
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// For any interleaving: every use is paid in full by exactly the four buckets; credits are
    /// grants minus what usage and refunds took, never below zero; no period spends more than
    /// its allowance; usage and reservations never push live holds past the pool.
    #[test]
    fn the_burn_down_invariants_hold(
        included in 0u64..100,
        overage: bool,
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let mut t = terms(included, overage);
        let mut l = Ledger::default();
        let mut now = T0;
        let (mut granted, mut spent, mut clawed) = (0u64, 0u64, 0u64);
        for op in ops {
            let held_ok_before = l.held(now) <= pool(&l, &t, now);
            let changes_pool = matches!(op, Op::Track { .. } | Op::Reserve { .. } | Op::Release { .. });
            match op {
                Op::Track { units, hold, back } => {
                    let r = l.track(&t, now, now - back, units, hold.map(rsv).as_ref());
                    prop_assert_eq!(r.covered.total(), units);
                    if !overage { prop_assert_eq!(r.covered.overage, 0); }
                    spent += r.covered.credits;
                }
                Op::Reserve { hold, units, ttl } => {
                    let before = l.clone();
                    if l.reserve(&t, now, rsv(hold), units, now + ttl).is_err() {
                        let mut pruned = before;
                        pruned.drop_expired(now);
                        prop_assert_eq!(&l, &pruned, "a refusal changes nothing but expired holds");
                    }
                }
                Op::Release { hold } => { l.release(now, &rsv(hold)); }
                Op::Grant { credits } => { l.grant(credits); granted += credits; }
                Op::ClawBack { credits } => { clawed += l.claw_back(credits); }
                Op::Wait { secs } => now += secs,
                Op::Renew => t.period = Some(t.period_of(now)),
            }
            prop_assert_eq!(l.credits, granted - spent - clawed);
            for c in [l.current, l.previous].into_iter().flatten() {
                prop_assert!(c.included_used <= included);
            }
            if changes_pool && held_ok_before && !overage {
                prop_assert!(l.held(now) <= pool(&l, &t, now), "holds exceed the pool");
            }
        }
    }

    /// The overdraft bound: an app that reserves before each call, settles before the hold
    /// expires and uses no more than it reserved never has an uncovered unit, however its
    /// calls interleave; refused reservations are calls it does not make.
    #[test]
    fn reserve_then_settle_is_never_uncovered(
        included in 0u64..60,
        grants in proptest::collection::vec(0u64..50, 0..4),
        calls in proptest::collection::vec((0u64..30, 0u64..30, 0usize..4), 1..60),
    ) {
        let t = terms(included, false);
        let mut l = Ledger::default();
        for g in grants { l.grant(g); }
        let mut in_flight: Vec<(usize, u64)> = Vec::new();
        let mut uncovered = 0;
        for (n, (reserve, actual, settle_oldest)) in calls.into_iter().enumerate() {
            if l.reserve(&t, T0, rsv(n), reserve, T0 + 60).is_ok() {
                in_flight.push((n, reserve.min(actual)));
            }
            for _ in 0..settle_oldest.min(in_flight.len()) {
                let (id, used) = in_flight.remove(0);
                uncovered += l.track(&t, T0 + 1, T0 + 1, used, Some(&rsv(id))).covered.uncovered;
            }
        }
        for (id, used) in in_flight {
            uncovered += l.track(&t, T0 + 2, T0 + 2, used, Some(&rsv(id))).covered.uncovered;
        }
        prop_assert_eq!(uncovered, 0);
    }
}
