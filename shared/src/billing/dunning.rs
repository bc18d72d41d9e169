//! The dunning policy (pure, no I/O): which steps a failed subscription invoice's case is due
//! to take, given what Stripe reported and what has been taken already.
//!
//! The processor keeps the case on the invoice (failures as Stripe counts them, the first
//! failure's time, Stripe's next scheduled attempt, open or closed); the dunning function asks
//! [`due_steps`] at each scheduled run and takes each step at most once, recording it in the
//! case's [`Steps`] with a conditional write. The policy:
//!
//! 1. after the first failure, retry the payment once `retry_after` has passed, unless Stripe
//!    has its own attempt scheduled (then Stripe's is followed, not doubled);
//! 2. from the second failure, tell the customer (email and `payment.failed`);
//! 3. from the third failure, downgrade to the free tier (`account.downgraded`);
//! 4. `suspend_after` the first failure, still unpaid, suspend (`account.suspended`);
//!
//! and once the invoice is paid (the case closed), an account that was downgraded or suspended
//! is reactivated (`account.reactivated`), once. Each step is due exactly from its boundary: a
//! run at `boundary - 1` takes nothing, a run at `boundary` takes it.

/// Whether a case that ends this way (`paid`, `voided`, `uncollectible`) lifts what the case
/// did to the account: a payment, or a void (nothing is owed any more). A write-off leaves the
/// account as it is: the debt stands, and an operator decides.
pub fn lifts_restrictions(reason: &str) -> bool {
    matches!(reason, "paid" | "voided")
}

/// The delays, from configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DunningPolicy {
    /// Seconds after the first failure before our own retry (when Stripe schedules none).
    pub retry_after: i64,
    /// Seconds after the first failure before an unpaid account is suspended.
    pub suspend_after: i64,
}

impl Default for DunningPolicy {
    fn default() -> Self {
        Self {
            retry_after: 86_400,
            suspend_after: 14 * 86_400,
        }
    }
}

/// One step of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    RetryPayment,
    NotifyPaymentFailed,
    Downgrade,
    Suspend,
    Reactivate,
}

impl Step {
    pub const ALL: [Step; 5] = [
        Step::RetryPayment,
        Step::NotifyPaymentFailed,
        Step::Downgrade,
        Step::Suspend,
        Step::Reactivate,
    ];

    /// Its name in the case's record and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::RetryPayment => "retry",
            Step::NotifyPaymentFailed => "notify",
            Step::Downgrade => "downgrade",
            Step::Suspend => "suspend",
            Step::Reactivate => "reactivate",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// The notification the step writes to the outbox, if any.
    pub fn notification(self) -> Option<&'static str> {
        match self {
            Step::RetryPayment => None,
            Step::NotifyPaymentFailed => Some("payment.failed"),
            Step::Downgrade => Some("account.downgraded"),
            Step::Suspend => Some("account.suspended"),
            Step::Reactivate => Some("account.reactivated"),
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The steps a case has taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Steps(u8);

impl Steps {
    pub fn contains(self, step: Step) -> bool {
        self.0 & step.bit() != 0
    }

    pub fn with(self, step: Step) -> Self {
        Self(self.0 | step.bit())
    }

    pub fn iter(self) -> impl Iterator<Item = Step> {
        Step::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

/// A dunning case as the policy reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Case {
    /// Still unpaid (open), or over (paid, voided, written off).
    pub open: bool,
    /// Whether it ended with nothing owed (paid, or voided): only then is the account
    /// reactivated.
    pub paid: bool,
    /// Failed attempts, as Stripe counts them.
    pub failures: u32,
    pub first_failed_at: i64,
    /// Stripe's own next attempt, when its retries have one scheduled.
    pub next_payment_attempt: Option<i64>,
    pub taken: Steps,
}

/// The steps due at `now`, in the order they are to be taken. Steps already taken are never
/// due again; a closed case is due nothing but its reactivation.
pub fn due_steps(case: &Case, policy: &DunningPolicy, now: i64) -> Vec<Step> {
    let mut due = Vec::new();
    let mut want = |step: Step, when: bool| {
        if when && !case.taken.contains(step) {
            due.push(step);
        }
    };
    if !case.open {
        let restricted = case.taken.contains(Step::Downgrade) || case.taken.contains(Step::Suspend);
        want(Step::Reactivate, case.paid && restricted);
        return due;
    }
    if case.failures == 0 {
        return due;
    }
    // Our retry only stands in for Stripe's: after the first failure, when Stripe has none
    // scheduled; a second failure means a retry has happened either way.
    want(
        Step::RetryPayment,
        case.failures == 1
            && case.next_payment_attempt.is_none()
            && now >= case.first_failed_at + policy.retry_after,
    );
    want(Step::NotifyPaymentFailed, case.failures >= 2);
    want(Step::Downgrade, case.failures >= 3);
    want(
        Step::Suspend,
        now >= case.first_failed_at + policy.suspend_after,
    );
    due
}

/// Whether a closed case must make sure the subscription bills again (resume collection): it
/// ended with nothing owed, and a downgrade was taken or due (a run may have paused collection
/// in Stripe and then lost the race to record it against the payment). Resuming is idempotent.
pub fn resumes_collection(case: &Case) -> bool {
    !case.open && case.paid && (case.taken.contains(Step::Downgrade) || case.failures >= 3)
}

/// The card trap. Stripe retries a subscription's invoice with the subscription's own card
/// first, while the portal's "update payment method" changes the customer's default. The
/// customer's default is tried, once per case, whenever it is not the subscription's card.
pub fn card_to_try<'a>(
    case: &Case,
    customer_card: Option<&'a str>,
    subscription_card: Option<&str>,
    tried: impl Fn(&str) -> bool,
) -> Option<&'a str> {
    let card = customer_card?;
    (case.open && case.failures > 0 && Some(card) != subscription_card && !tried(card))
        .then_some(card)
}

#[cfg(test)]
mod tests;
