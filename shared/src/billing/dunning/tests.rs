use proptest::prelude::*;

use super::*;

const T0: i64 = 1_767_225_600;
const DAY: i64 = 86_400;

fn open(failures: u32) -> Case {
    Case {
        open: true,
        paid: false,
        failures,
        first_failed_at: T0,
        next_payment_attempt: None,
        taken: Steps::default(),
    }
}

fn policy() -> DunningPolicy {
    DunningPolicy::default()
}

#[test]
fn each_step_is_due_exactly_from_its_boundary() {
    let p = policy();
    assert_eq!(due_steps(&open(1), &p, T0 + p.retry_after - 1), vec![]);
    assert_eq!(
        due_steps(&open(1), &p, T0 + p.retry_after),
        vec![Step::RetryPayment]
    );
    assert_eq!(
        due_steps(&open(2), &p, T0 + 1),
        vec![Step::NotifyPaymentFailed]
    );
    assert_eq!(
        due_steps(&open(3), &p, T0 + 2),
        vec![Step::NotifyPaymentFailed, Step::Downgrade]
    );
    let taken = Steps::default()
        .with(Step::NotifyPaymentFailed)
        .with(Step::Downgrade);
    let case = Case { taken, ..open(3) };
    assert_eq!(due_steps(&case, &p, T0 + p.suspend_after - 1), vec![]);
    assert_eq!(
        due_steps(&case, &p, T0 + p.suspend_after),
        vec![Step::Suspend]
    );
}

#[test]
fn stripes_scheduled_retry_is_followed_not_doubled() {
    let case = Case {
        next_payment_attempt: Some(T0 + 3 * DAY),
        ..open(1)
    };
    assert_eq!(due_steps(&case, &policy(), T0 + 2 * DAY), vec![]);
    // Stripe's retries ended without one scheduled: ours stands in.
    assert_eq!(
        due_steps(&open(1), &policy(), T0 + 2 * DAY),
        vec![Step::RetryPayment]
    );
}

#[test]
fn a_payment_closes_the_case_and_reactivates_only_what_was_restricted() {
    let paid = |taken: Steps| Case {
        open: false,
        paid: true,
        taken,
        ..open(3)
    };
    let p = policy();
    let late = T0 + 30 * DAY;
    assert_eq!(due_steps(&paid(Steps::default()), &p, late), vec![]);
    assert_eq!(
        due_steps(
            &paid(Steps::default().with(Step::NotifyPaymentFailed)),
            &p,
            late
        ),
        vec![]
    );
    let downgraded = Steps::default().with(Step::Downgrade);
    assert_eq!(
        due_steps(&paid(downgraded), &p, late),
        vec![Step::Reactivate]
    );
    assert_eq!(
        due_steps(&paid(downgraded.with(Step::Reactivate)), &p, late),
        vec![],
        "once"
    );
    // Voided or written off: closed, but nothing was paid; the restrictions stay.
    let written_off = Case {
        paid: false,
        ..paid(downgraded)
    };
    assert_eq!(due_steps(&written_off, &p, late), vec![]);
}

#[test]
fn steps_have_stable_names_and_notifications() {
    for step in Step::ALL {
        assert_eq!(Step::parse(step.as_str()), Some(step));
    }
    assert_eq!(Step::parse("pay"), None);
    assert_eq!(Step::RetryPayment.notification(), None);
    assert_eq!(Step::Suspend.notification(), Some("account.suspended"));
    let s = Steps::default()
        .with(Step::Suspend)
        .with(Step::RetryPayment);
    assert_eq!(
        s.iter().collect::<Vec<_>>(),
        vec![Step::RetryPayment, Step::Suspend]
    );
}

/// What happens to a case, in the order the dunning function sees it.
#[derive(Debug, Clone)]
enum Input {
    /// Stripe reports a failed attempt (the count as Stripe has it; late reports carry an
    /// older, smaller count, which the processor's versioning keeps from lowering it).
    Failed {
        count: u32,
        scheduled: bool,
    },
    Paid,
    /// A scheduled run, `after` seconds after the previous input; `twice` overlapping.
    Run {
        after: i64,
        twice: bool,
    },
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        (1u32..6, any::<bool>()).prop_map(|(count, scheduled)| Input::Failed { count, scheduled }),
        Just(Input::Paid),
        (0i64..4 * DAY, any::<bool>()).prop_map(|(after, twice)| Input::Run { after, twice }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Whatever the order of failures, payments and (overlapping) runs: every step is taken at
    /// most once, none before its boundary, nothing but reactivation after payment, and a
    /// reactivation only after a restriction and a payment.
    #[test]
    fn every_step_is_taken_at_most_once_and_never_early(inputs in proptest::collection::vec(input(), 1..40)) {
        let p = policy();
        let mut case = open(0);
        let mut now = T0;
        let mut taken_log: Vec<(Step, i64, bool)> = Vec::new();
        for i in inputs {
            match i {
                Input::Failed { count, scheduled } => {
                    if case.open {
                        if case.failures == 0 {
                            case.first_failed_at = now;
                        }
                        case.failures = case.failures.max(count);
                        case.next_payment_attempt = scheduled.then_some(now + 3 * DAY);
                    }
                }
                Input::Paid => {
                    case.open = false;
                    case.paid = true;
                }
                Input::Run { after, twice } => {
                    now += after;
                    // Overlapping runs read the same case; the conditional write lets the
                    // first taker of each step win.
                    let seen = case;
                    for _ in 0..if twice { 2 } else { 1 } {
                        for step in due_steps(&seen, &p, now) {
                            if !case.taken.contains(step) {
                                case.taken = case.taken.with(step);
                                taken_log.push((step, now, seen.open));
                            }
                        }
                    }
                }
            }
        }
        for step in Step::ALL {
            prop_assert!(taken_log.iter().filter(|(s, _, _)| *s == step).count() <= 1, "{step:?} twice");
        }
        for (step, at, was_open) in &taken_log {
            prop_assert_eq!(*was_open, *step != Step::Reactivate, "{:?} on a case that was open: {}", step, was_open);
            match step {
                Step::Suspend => prop_assert!(*at >= case.first_failed_at + p.suspend_after),
                Step::RetryPayment => prop_assert!(*at >= case.first_failed_at + p.retry_after),
                _ => {}
            }
        }
        if taken_log.iter().any(|(s, _, _)| *s == Step::Reactivate) {
            prop_assert!(case.paid);
            prop_assert!(case.taken.contains(Step::Downgrade) || case.taken.contains(Step::Suspend));
        }
    }
}

#[test]
fn a_new_default_card_is_tried_once_and_the_failing_one_never() {
    let case = open(1);
    let none = |_: &str| false;
    // The portal set a new default; the subscription still charges the old card.
    assert_eq!(
        card_to_try(&case, Some("pm_new"), Some("pm_old"), none),
        Some("pm_new")
    );
    // No subscription card: Stripe charges the customer's default, the card that failed.
    assert_eq!(
        card_to_try(&case, Some("pm_new"), None, none),
        Some("pm_new")
    );
    assert_eq!(
        card_to_try(&case, Some("pm_old"), Some("pm_old"), none),
        None
    );
    assert_eq!(
        card_to_try(&case, Some("pm_new"), Some("pm_old"), |c| c == "pm_new"),
        None
    );
    assert_eq!(card_to_try(&case, None, Some("pm_old"), none), None);
    let paid = Case {
        open: false,
        paid: true,
        ..open(1)
    };
    assert_eq!(
        card_to_try(&paid, Some("pm_new"), Some("pm_old"), none),
        None
    );
}

#[test]
fn collection_resumes_after_a_payment_once_a_downgrade_may_have_paused_it() {
    let closed = |failures, taken: Steps, paid| Case {
        open: false,
        paid,
        taken,
        ..open(failures)
    };
    let downgraded = Steps::default().with(Step::Downgrade);
    assert!(resumes_collection(&closed(3, downgraded, true)));
    // Due but not recorded: a run may have paused collection and lost the race.
    assert!(resumes_collection(&closed(3, Steps::default(), true)));
    assert!(!resumes_collection(&closed(2, Steps::default(), true)));
    // Written off: the debt stands and the account stays as it is.
    assert!(!resumes_collection(&closed(3, downgraded, false)));
    assert!(!resumes_collection(&Case {
        taken: downgraded,
        ..open(3)
    }));
}

#[test]
fn only_a_payment_or_a_void_lifts_what_a_case_did() {
    assert!(lifts_restrictions("paid"));
    assert!(lifts_restrictions("voided"));
    assert!(!lifts_restrictions("uncollectible"));
    assert!(!lifts_restrictions("open"));
}
