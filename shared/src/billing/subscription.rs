//! Subscription status and what it entitles an account to.

use crate::catalog::PlanId;

/// Stripe's subscription statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubscriptionStatus {
    Incomplete,
    IncompleteExpired,
    Trialing,
    Active,
    PastDue,
    Canceled,
    Unpaid,
    Paused,
}

impl SubscriptionStatus {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "incomplete" => Self::Incomplete,
            "incomplete_expired" => Self::IncompleteExpired,
            "trialing" => Self::Trialing,
            "active" => Self::Active,
            "past_due" => Self::PastDue,
            "canceled" => Self::Canceled,
            "unpaid" => Self::Unpaid,
            "paused" => Self::Paused,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Incomplete => "incomplete",
            Self::IncompleteExpired => "incomplete_expired",
            Self::Trialing => "trialing",
            Self::Active => "active",
            Self::PastDue => "past_due",
            Self::Canceled => "canceled",
            Self::Unpaid => "unpaid",
            Self::Paused => "paused",
        }
    }

    /// Ended for good: Stripe never moves a subscription out of these.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Canceled | Self::IncompleteExpired)
    }

    /// Whether the plan's allowance applies. A past-due subscription keeps it while dunning
    /// runs (the dunning steps decide on suspension); one that never started, or ended, does not.
    pub fn grants_plan(self) -> bool {
        matches!(self, Self::Trialing | Self::Active | Self::PastDue)
    }
}

/// What the account stores about its subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionState {
    pub subscription_id: String,
    pub status: SubscriptionStatus,
    /// The catalog plan its prices name.
    pub plan: PlanId,
    pub period_start: i64,
    pub period_end: i64,
    pub cancel_at_period_end: bool,
    /// The plan that applies now: the subscription's while it grants one, else free.
    pub effective_plan: PlanId,
    pub included_units: u64,
    /// The card Stripe charges the subscription's invoices to (its own default payment method).
    pub card: Option<String>,
}
