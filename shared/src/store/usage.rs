//! The usage function's port to the table: load an account's ledger, and commit one change of
//! it together with the record that makes the change happen once.
//!
//! A commit is conditioned on the account being as it was loaded (`Version`): the decision was
//! made from that state, so if anything it read changed meanwhile (another usage call, a grant,
//! a renewal), nothing is written and the store hands back the account as it is now, so that the
//! caller decides again. That is optimistic concurrency with one round trip per attempt: a warm
//! instance that saw the account last decides from what it saw, and pays a second call only
//! when someone else wrote in between.

use std::future::Future;

use super::StoreError;
use crate::ids::{AccountId, RequestId, ReservationId};
use crate::usage::ledger::{Covered, Ledger};
use crate::usage::period::Period;
use crate::usage::request::Tokens;
use crate::usage::topup::TopupClaim;

/// What the processor stored about the account's plan (the catalog fills in the rest).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredTerms {
    /// The plan that applies now; `None` for an account without one (free).
    pub plan: Option<String>,
    pub included_units: Option<u64>,
    /// The subscription's period, while the subscription grants its plan.
    pub period: Option<Period>,
    pub suspended: bool,
}

/// An account as a usage decision needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageAccount<V> {
    pub version: V,
    pub terms: StoredTerms,
    pub ledger: Ledger,
}

/// One recorded use, kept long after Stripe's 35-day window so that a late duplicate still
/// finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    pub request: RequestId,
    pub model: String,
    pub tokens: Tokens,
    pub units: u64,
    pub covered: Covered,
    pub period: Period,
    /// When the usage happened, and when it was recorded.
    pub at: i64,
    pub recorded_at: i64,
    pub rate_card_version: String,
    /// The reservation it settled.
    pub settled: Option<ReservationId>,
    /// The answer given the first time, given again to every duplicate.
    pub answer: String,
    /// The automatic top-up the use claimed: written with it, paid by the top-up function.
    pub topup: Option<TopupClaim>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldStatus {
    Held,
    Settled,
    Released,
    Expired,
}

impl HoldStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Held => "held",
            Self::Settled => "settled",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "held" => Self::Held,
            "settled" => Self::Settled,
            "released" => Self::Released,
            "expired" => Self::Expired,
            _ => return None,
        })
    }
}

/// A reservation's own record: its first answer, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRecord {
    pub reservation: ReservationId,
    pub request: RequestId,
    pub units: u64,
    pub expires_at: i64,
    pub status: HoldStatus,
    pub answer: String,
}

/// A notification for the outbox, with its stable id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub id: String,
    pub name: &'static str,
    /// The notification's facts, as JSON.
    pub detail: String,
}

/// What a commit writes besides the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageChange {
    /// A use: its record (once per request id) and the period's per-model totals.
    Track(Box<UsageRecord>),
    /// A hold's record (once per request id).
    Reserve(HoldRecord),
    /// A hold's end: the record moves from `held` to `status` (released or expired).
    Release {
        reservation: ReservationId,
        status: HoldStatus,
    },
}

/// How a commit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed<V> {
    /// Written; the account's new version.
    Done(V),
    /// The account changed since it was loaded: nothing written; here it is now.
    Changed(Box<UsageAccount<V>>),
    /// The request was recorded before: nothing written; the first answer. Reported before
    /// a changed account, since deciding again could not change it.
    Duplicate(String),
    /// A release (or a settling use) found the reservation's record no longer held (or
    /// missing): nothing written.
    NotHeld(Option<HoldRecord>),
}

/// A period's usage of one model: units by the bucket that paid them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelTotals {
    pub period: Period,
    pub model: String,
    pub requests: u64,
    pub units: u64,
    pub covered: Covered,
    pub tokens: Tokens,
}

impl ModelTotals {
    /// Adds another count of the same period (and model, or a period's sum over models).
    pub fn add(&mut self, requests: u64, units: u64, covered: Covered, tokens: Tokens) {
        self.requests += requests;
        self.units += units;
        self.covered += covered;
        self.tokens += tokens;
    }
}

/// Newest period first; the model breaks ties so the order is stable.
pub(crate) fn sort_totals(totals: &mut [ModelTotals]) {
    totals.sort_by(|a, b| {
        b.period
            .start
            .cmp(&a.period.start)
            .then(a.model.cmp(&b.model))
    });
}

pub trait UsageStore {
    /// What a commit is conditioned on.
    type Version: Clone + Send + Sync + std::fmt::Debug;

    /// The account as it is before its first write: a guess that costs no read, and that a
    /// commit corrects (with the account as it is) if it was wrong.
    fn never_written(&self) -> UsageAccount<Self::Version>;

    /// The account, read consistently (an account never written is the free plan, empty).
    fn load(
        &self,
        account: &AccountId,
    ) -> impl Future<Output = Result<UsageAccount<Self::Version>, StoreError>> + Send;

    /// Writes `ledger` and `change` (and `notifications` to the outbox) together, if the
    /// account is still at `expected` and the change's record is new.
    fn commit(
        &self,
        account: &AccountId,
        expected: &Self::Version,
        ledger: &Ledger,
        change: &UsageChange,
        notifications: &[Notification],
    ) -> impl Future<Output = Result<Committed<Self::Version>, StoreError>> + Send;

    /// The account's per-model totals, newest period first.
    fn totals(
        &self,
        account: &AccountId,
    ) -> impl Future<Output = Result<Vec<ModelTotals>, StoreError>> + Send;
}

/// Several handlers over one store: each keeps its own memory of accounts, as separate Lambda
/// instances do.
impl<T: UsageStore + Send + Sync> UsageStore for std::sync::Arc<T> {
    type Version = T::Version;

    fn never_written(&self) -> UsageAccount<Self::Version> {
        (**self).never_written()
    }

    fn load(
        &self,
        account: &AccountId,
    ) -> impl Future<Output = Result<UsageAccount<Self::Version>, StoreError>> + Send {
        (**self).load(account)
    }

    fn commit(
        &self,
        account: &AccountId,
        expected: &Self::Version,
        ledger: &Ledger,
        change: &UsageChange,
        notifications: &[Notification],
    ) -> impl Future<Output = Result<Committed<Self::Version>, StoreError>> + Send {
        (**self).commit(account, expected, ledger, change, notifications)
    }

    fn totals(
        &self,
        account: &AccountId,
    ) -> impl Future<Output = Result<Vec<ModelTotals>, StoreError>> + Send {
        (**self).totals(account)
    }
}
