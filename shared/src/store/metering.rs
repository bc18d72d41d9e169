//! The meter reporter's port to the table: which accounts have overage to report, each
//! period's overage and report state, and the claim-then-confirm writes of
//! `crate::metering`.

use std::future::Future;

use super::StoreError;
use crate::ids::AccountId;
use crate::metering::{Claim, PeriodFigures, ReportState};
use crate::usage::period::Period;

/// One period of an account: its overage total (the per-model totals the usage function
/// writes) and what has been reported of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodReport {
    pub period: Period,
    pub overage: u64,
    pub state: ReportState,
}

/// What the reporter reads of one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportInput {
    pub customer_id: Option<String>,
    /// The usage function's revision of the account when read: clearing the account's due
    /// mark is conditioned on it, so usage recorded meanwhile keeps it due.
    pub usage_rev: u64,
    /// Oldest period first.
    pub periods: Vec<PeriodReport>,
}

pub trait MeteringStore {
    /// The accounts marked as having overage not yet all reported (a sparse index, no scan).
    fn due_accounts(&self) -> impl Future<Output = Result<Vec<AccountId>, StoreError>> + Send;

    /// The account's Stripe customer, its usage revision, and each period starting at or after
    /// `since` that has overage or a report state.
    fn report_input(
        &self,
        account: &AccountId,
        since: i64,
    ) -> impl Future<Output = Result<ReportInput, StoreError>> + Send;

    /// Records `claim` for the period if its state is still `expected`; `false` if another run
    /// moved it first (nothing written).
    fn claim(
        &self,
        account: &AccountId,
        period: Period,
        expected: &ReportState,
        claim: &Claim,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Records that Stripe accepted `claim`; a second confirmation changes nothing.
    fn confirm(
        &self,
        account: &AccountId,
        period: Period,
        claim: &Claim,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Takes the account off the due index if no usage was recorded since `input` was read;
    /// `false` if some was (it stays due).
    fn clear_due(
        &self,
        account: &AccountId,
        input: &ReportInput,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The (account, period start) of every period with a report that reconciliation has not
    /// yet found in agreement (the sparse index again, no scan).
    fn reconcile_due(
        &self,
    ) -> impl Future<Output = Result<Vec<(AccountId, i64)>, StoreError>> + Send;

    /// Records what reconciliation found, if the period's report is still as `figures` saw it
    /// (`false` otherwise: the reporter moved it meanwhile, and the figures are stale). In
    /// agreement, the period leaves the index; otherwise it stays there, to be checked (and
    /// alarmed on) again next run.
    fn mark_reconciled(
        &self,
        account: &AccountId,
        period_start: i64,
        figures: &PeriodFigures,
        agrees: bool,
        now: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}
