//! The billing store: where applied Stripe events and the account state they produce live.
//!
//! `apply` is the one write path of the processor: the processed-event marker and every write
//! of the event commit together or not at all, each write guarded by the ordering rules. The
//! DynamoDB adapter does it in one `TransactWriteItems`; the in-memory adapter keeps the same
//! rules for in-process tests, and a shared test suite holds the two to the same answers.

use std::future::Future;

use crate::billing::{InvoiceRecord, Verdict, Write};
use crate::ids::{AccountId, StripeEventId};

pub mod dunning;
pub mod dynamodb;
pub mod memory;
pub mod metering;
pub mod outbox;
pub mod topup;
pub mod usage;
pub mod usage_memory;

pub use dynamodb::DynamoDbBillingStore;

pub use dunning::InMemoryDunningStore;
pub use dynamodb::{
    DynamoDbDunningStore, DynamoDbMeteringStore, DynamoDbOutboxStore, DynamoDbTopupStore,
    DynamoDbUsageStore,
};
pub use memory::InMemoryBillingStore;
pub use outbox::InMemoryOutboxStore;
pub use topup::InMemoryTopupStore;
pub use usage_memory::InMemoryUsageStore;

/// Processed-event markers outlive Stripe's 30-day resend window with margin. Nothing relies on
/// TTL having deleted a marker: an expired-but-present marker still blocks a duplicate.
pub const MARKER_TTL_SECS: i64 = 35 * 24 * 3600;

/// Events parked for a customer without an account wait this long for the link (Stripe keeps
/// events for 30 days; after that an operator replays from Stripe).
pub const PARKED_TTL_SECS: i64 = 35 * 24 * 3600;

/// The marker outcome of an event parked for want of an account. Unlike every other outcome it
/// does not block a later delivery: once the customer is linked, a resend, redrive or replay
/// applies the event (and the link applies what is parked by itself).
pub const NO_ACCOUNT: &str = "no_account";

/// What parking an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkResult {
    /// Marker (`no_account`) and the parked event committed.
    Parked,
    /// The event was handled before (applied, not parked): nothing changed.
    Duplicate,
    /// The customer was linked meanwhile: look its account up again.
    Linked,
}

/// An event parked under a customer: its raw JSON, when it is still there (it expires).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedEvent {
    pub event_id: StripeEventId,
    pub created: i64,
    pub raw: Option<Vec<u8>>,
}

/// The event being applied, as its marker records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub event_id: StripeEventId,
    pub event_type: String,
    pub created: i64,
    pub account: Option<AccountId>,
    /// When the processor handled it (Unix seconds); the marker expires 35 days later.
    pub processed_at: i64,
}

/// How version conditions compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Only strictly newer state overwrites (`stored < created`).
    Newer,
    /// Resolving a same-second tie with the object fetched from Stripe (`stored <= created`).
    TieBreak,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyResult {
    /// Marker and writes committed.
    Applied,
    /// The marker already exists: this event was handled before; nothing changed.
    Duplicate,
    /// Write `index` lost to the stored state: nothing was committed.
    Conflict { index: usize, verdict: Verdict },
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Throttling, a transaction conflict, a concurrent change: the same call may succeed later.
    #[error("the store is busy: {0:#}")]
    Retryable(anyhow::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// The account as the app sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountView {
    pub account_id: String,
    pub customer_id: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    /// The plan that applies now (`free` without a live subscription).
    pub plan: String,
    /// Units included per period, when the account has a plan record.
    pub included_units: Option<u64>,
    pub subscription: Option<SubscriptionView>,
    pub credits: u64,
    /// Dunning downgraded it to the free tier until an unpaid invoice is settled.
    pub downgraded: bool,
    /// Dunning suspended it: usage is recorded but not allowed.
    pub suspended: bool,
    /// Auto top-up: its settings and where it stands.
    pub auto_topup: crate::usage::topup::AutoTopup,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionView {
    pub subscription_id: String,
    pub status: String,
    pub plan: String,
    pub period_start: i64,
    pub period_end: i64,
    pub cancel_at_period_end: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceView {
    pub record: InvoiceRecord,
    pub dunning: Option<DunningView>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DunningView {
    /// `open`, or why it ended (`paid`, `voided`, `uncollectible`).
    pub status: String,
    pub failures: u32,
    pub first_failed_at: i64,
    pub next_payment_attempt: Option<i64>,
}

pub trait BillingStore {
    /// Commits the marker (with `outcome`) and `writes` together, or reports why not.
    fn apply(
        &self,
        event: &EventRecord,
        outcome: &'static str,
        writes: &[Write],
        mode: WriteMode,
    ) -> impl Future<Output = Result<ApplyResult, StoreError>> + Send;

    /// The account a Stripe customer was linked to.
    fn customer_account(
        &self,
        customer_id: &str,
    ) -> impl Future<Output = Result<Option<AccountId>, StoreError>> + Send;

    /// The outcome recorded for an event, if it was handled.
    fn event_outcome(
        &self,
        event_id: &StripeEventId,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    fn account(
        &self,
        account: &AccountId,
    ) -> impl Future<Output = Result<Option<AccountView>, StoreError>> + Send;

    /// The account's invoices, newest period first.
    fn invoices(
        &self,
        account: &AccountId,
    ) -> impl Future<Output = Result<Vec<InvoiceView>, StoreError>> + Send;

    /// Parks an event whose customer has no account yet, with its `no_account` marker, unless
    /// the customer was linked meanwhile.
    fn park(
        &self,
        event: &EventRecord,
        customer_id: &str,
        raw: &[u8],
    ) -> impl Future<Output = Result<ParkResult, StoreError>> + Send;

    /// The events parked under a customer, oldest first.
    fn parked(
        &self,
        customer_id: &str,
    ) -> impl Future<Output = Result<Vec<ParkedEvent>, StoreError>> + Send;

    /// Removes a parked event once it has been applied (idempotent).
    fn unpark(
        &self,
        customer_id: &str,
        event_id: &StripeEventId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Links a customer to an account whatever is parked under it (the step before replaying).
    fn link(
        &self,
        customer_id: &str,
        account: &AccountId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The Stripe price ids `make stripe-setup` recorded for this account's lookup keys, or
    /// None before it has run.
    fn stripe_prices(
        &self,
    ) -> impl Future<Output = Result<Option<StripePrices>, StoreError>> + Send;
}

/// Stripe price ids by the catalog's lookup keys, as `make stripe-setup` resolved them in this
/// stack's Stripe account (test or live mode: the catalog is the same, the ids are not).
pub type StripePrices = std::collections::BTreeMap<String, String>;

/// Newest billing period first; the invoice id breaks ties so the order is stable.
pub(crate) fn sort_invoices(invoices: &mut [InvoiceView]) {
    invoices.sort_by(|a, b| {
        b.record
            .period_start
            .cmp(&a.record.period_start)
            .then(b.record.invoice_id.cmp(&a.record.invoice_id))
    });
}

/// Oldest first, as they were sent; the event id breaks ties so the order is stable.
pub(crate) fn sort_parked(parked: &mut [ParkedEvent]) {
    parked.sort_by(|a, b| (a.created, a.event_id.as_str()).cmp(&(b.created, b.event_id.as_str())));
}
