//! Billing rules, without I/O: what a Stripe event changes, in what order events win, how
//! credits are granted and clawed back, how a failed payment opens a dunning case.

pub mod credits;
pub mod dunning;
pub mod effects;
pub mod ordering;
pub mod subscription;

pub use effects::{
    AccountRef, DunningChange, Effects, InvoiceRecord, PlanError, Write, plan_effects,
};
pub use ordering::Verdict;
pub use subscription::{SubscriptionState, SubscriptionStatus};
