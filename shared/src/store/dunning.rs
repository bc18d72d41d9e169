//! The dunning function's port to the table: the cases the index holds, the cards on the
//! account, and the conditional writes that record each step once.
//!
//! A step is recorded in one transaction with what it does to the account (the invoice joins
//! `downgraded_for` / `suspended_for`) and its outbox entry, conditional on the case being as
//! the step requires (open, or closed by a payment for a reactivation) and on the step not
//! being recorded yet. Two runs that overlap therefore record each step once, and a run that
//! crashed after its Stripe call repeats the call under the same idempotency key, then records.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::Mutex;

use serde_json::json;

use super::StoreError;
use crate::billing::dunning::{Case, Step, Steps, lifts_restrictions};
use crate::ids::AccountId;
use crate::notifications::NotificationId;

/// A case as the index shows it: the invoice's figures and its dunning state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseRecord {
    pub account: AccountId,
    pub invoice_id: String,
    pub subscription_id: Option<String>,
    /// `open`, or how it ended: `paid`, `voided`, `uncollectible`.
    pub status: String,
    pub failures: u32,
    pub first_failed_at: i64,
    pub next_payment_attempt: Option<i64>,
    pub taken: Steps,
    /// Cards this case has already paid with (the card trap: one attempt per new card).
    pub cards_tried: BTreeSet<String>,
    pub amount_remaining: i64,
    pub currency: String,
    pub hosted_invoice_url: Option<String>,
}

impl CaseRecord {
    /// The case as the policy reads it.
    pub fn case(&self) -> Case {
        Case {
            open: self.status == "open",
            paid: lifts_restrictions(&self.status),
            failures: self.failures,
            first_failed_at: self.first_failed_at,
            next_payment_attempt: self.next_payment_attempt,
            taken: self.taken,
        }
    }

    /// The stable id of the notification `name` for this case: one per invoice and kind.
    pub fn notification_id(&self, name: &str) -> Result<NotificationId, StoreError> {
        NotificationId::parse(&format!("{name}:{}", self.invoice_id))
            .map_err(|e| StoreError::Other(anyhow::anyhow!("notification id: {e}")))
    }

    /// The notification's facts: what the email and the event say.
    pub fn notification_detail(&self) -> String {
        json!({
            "invoice_id": self.invoice_id,
            "subscription_id": self.subscription_id,
            "amount_due": self.amount_remaining,
            "currency": self.currency,
            "hosted_invoice_url": self.hosted_invoice_url,
            "failures": self.failures,
            "first_failed_at": self.first_failed_at,
        })
        .to_string()
    }
}

/// The cards on the account: the customer's default (what the portal sets) and the one the
/// subscription charges first (what Stripe's own retries use).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cards {
    pub customer: Option<String>,
    pub subscription: Option<String>,
}

/// What recording a step found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Recorded now, with its effects on the account and its notification.
    Taken,
    /// Recorded before (another run, or this one before a crash): nothing written.
    AlreadyTaken,
    /// The case is no longer as the step requires (paid meanwhile): nothing written.
    CaseChanged,
}

pub trait DunningStore {
    /// Every case in the index: open ones, and closed ones not yet settled.
    fn cases(&self) -> impl Future<Output = Result<Vec<CaseRecord>, StoreError>> + Send;

    fn cards(&self, account: &AccountId) -> impl Future<Output = Result<Cards, StoreError>> + Send;

    /// Records `step` on the case with its effects, once.
    fn record_step(
        &self,
        case: &CaseRecord,
        step: Step,
        now: i64,
    ) -> impl Future<Output = Result<Recorded, StoreError>> + Send;

    /// Records that the case paid with `card`, once, while it is open.
    fn record_card(
        &self,
        case: &CaseRecord,
        card: &str,
    ) -> impl Future<Output = Result<Recorded, StoreError>> + Send;

    /// Takes a closed case out of the index; `false` if it is open again or gone.
    fn settle(&self, case: &CaseRecord) -> impl Future<Output = Result<bool, StoreError>> + Send;
}

/// What a step does to the account's restriction sets.
pub fn restriction_of(step: Step) -> Option<Restriction> {
    match step {
        Step::Downgrade => Some(Restriction::Downgraded),
        Step::Suspend => Some(Restriction::Suspended),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restriction {
    Downgraded,
    Suspended,
}

/// The table in memory, for the dunning function's in-process tests: the same rules as the
/// DynamoDB adapter, behind one lock (its concurrency tests run against DynamoDB Local).
#[derive(Debug, Default)]
pub struct InMemoryDunningStore {
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    cases: BTreeMap<(String, String), (CaseRecord, bool)>,
    cards: HashMap<String, Cards>,
    downgraded_for: HashMap<String, BTreeSet<String>>,
    suspended_for: HashMap<String, BTreeSet<String>>,
    /// (id, name, account, detail) in the order written.
    outbox: Vec<(String, String, String, String)>,
    writes: usize,
    /// Step records still to fail (a crash between the Stripe call and the write).
    failing_records: usize,
}

impl InMemoryDunningStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A payment failed (what the processor records): opens the case or updates it.
    pub fn fail(&self, record: CaseRecord) {
        let mut s = self.lock();
        let key = (
            record.account.as_str().to_owned(),
            record.invoice_id.clone(),
        );
        match s.cases.get_mut(&key) {
            Some((c, indexed)) => {
                c.status = "open".into();
                c.failures = record.failures;
                c.next_payment_attempt = record.next_payment_attempt;
                *indexed = true;
            }
            None => {
                s.cases.insert(key, (record, true));
            }
        }
    }

    /// The invoice was paid, voided or written off (what the processor records), lifting the
    /// account's restrictions for it when nothing is owed any more.
    pub fn close(&self, account: &AccountId, invoice_id: &str, reason: &str) {
        let mut guard = self.lock();
        let s = &mut *guard;
        if let Some((c, _)) = s
            .cases
            .get_mut(&(account.as_str().to_owned(), invoice_id.to_owned()))
        {
            c.status = reason.to_owned();
            c.next_payment_attempt = None;
        }
        if lifts_restrictions(reason) {
            for set in [&mut s.downgraded_for, &mut s.suspended_for] {
                if let Some(invoices) = set.get_mut(account.as_str()) {
                    invoices.remove(invoice_id);
                }
            }
        }
    }

    pub fn set_cards(&self, account: &AccountId, cards: Cards) {
        self.lock().cards.insert(account.as_str().to_owned(), cards);
    }

    pub fn case(&self, account: &AccountId, invoice_id: &str) -> Option<(CaseRecord, bool)> {
        self.lock()
            .cases
            .get(&(account.as_str().to_owned(), invoice_id.to_owned()))
            .cloned()
    }

    pub fn restricted(&self, account: &AccountId, how: Restriction) -> bool {
        let s = self.lock();
        let set = match how {
            Restriction::Downgraded => &s.downgraded_for,
            Restriction::Suspended => &s.suspended_for,
        };
        set.get(account.as_str()).is_some_and(|i| !i.is_empty())
    }

    /// Outbox entries as (id, name), in the order written.
    pub fn outbox(&self) -> Vec<(String, String)> {
        self.lock()
            .outbox
            .iter()
            .map(|(id, name, _, _)| (id.clone(), name.clone()))
            .collect()
    }

    /// The next `n` step records fail, as a crash after the Stripe call would leave them.
    pub fn fail_records(&self, n: usize) {
        self.lock().failing_records = n;
    }

    /// Writes that changed something (the count a bench or a test compares).
    pub fn writes(&self) -> usize {
        self.lock().writes
    }
}

impl DunningStore for InMemoryDunningStore {
    async fn cases(&self) -> Result<Vec<CaseRecord>, StoreError> {
        Ok(self
            .lock()
            .cases
            .values()
            .filter(|(_, indexed)| *indexed)
            .map(|(c, _)| c.clone())
            .collect())
    }

    async fn cards(&self, account: &AccountId) -> Result<Cards, StoreError> {
        Ok(self
            .lock()
            .cards
            .get(account.as_str())
            .cloned()
            .unwrap_or_default())
    }

    async fn record_step(
        &self,
        case: &CaseRecord,
        step: Step,
        _now: i64,
    ) -> Result<Recorded, StoreError> {
        let mut s = self.lock();
        if s.failing_records > 0 {
            s.failing_records -= 1;
            return Err(StoreError::Retryable(anyhow::anyhow!(
                "injected: the write did not happen"
            )));
        }
        let key = (case.account.as_str().to_owned(), case.invoice_id.clone());
        let Some((stored, _)) = s.cases.get(&key).cloned() else {
            return Ok(Recorded::CaseChanged);
        };
        if stored.taken.contains(step) {
            return Ok(Recorded::AlreadyTaken);
        }
        let fits = if step == Step::Reactivate {
            lifts_restrictions(&stored.status)
        } else {
            stored.status == "open"
        };
        if !fits {
            return Ok(Recorded::CaseChanged);
        }
        let account = case.account.as_str().to_owned();
        if let Some(how) = restriction_of(step) {
            let set = match how {
                Restriction::Downgraded => &mut s.downgraded_for,
                Restriction::Suspended => &mut s.suspended_for,
            };
            set.entry(account.clone())
                .or_default()
                .insert(case.invoice_id.clone());
        }
        if let Some(name) = step.notification() {
            let id = case.notification_id(name)?;
            if !s.outbox.iter().any(|(i, ..)| i == id.as_str()) {
                s.outbox.push((
                    id.as_str().to_owned(),
                    name.to_owned(),
                    account,
                    stored.notification_detail(),
                ));
            }
        }
        if let Some((c, indexed)) = s.cases.get_mut(&key) {
            c.taken = c.taken.with(step);
            // A reactivation is the last thing a closed case does.
            if step == Step::Reactivate {
                *indexed = false;
            }
        }
        s.writes += 1;
        Ok(Recorded::Taken)
    }

    async fn record_card(&self, case: &CaseRecord, card: &str) -> Result<Recorded, StoreError> {
        let mut s = self.lock();
        let key = (case.account.as_str().to_owned(), case.invoice_id.clone());
        let Some((c, _)) = s.cases.get_mut(&key) else {
            return Ok(Recorded::CaseChanged);
        };
        if c.cards_tried.contains(card) {
            return Ok(Recorded::AlreadyTaken);
        }
        if c.status != "open" {
            return Ok(Recorded::CaseChanged);
        }
        c.cards_tried.insert(card.to_owned());
        s.writes += 1;
        Ok(Recorded::Taken)
    }

    async fn settle(&self, case: &CaseRecord) -> Result<bool, StoreError> {
        let mut s = self.lock();
        let key = (case.account.as_str().to_owned(), case.invoice_id.clone());
        match s.cases.get_mut(&key) {
            Some((c, indexed)) if c.status != "open" && *indexed => {
                *indexed = false;
                s.writes += 1;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

impl<T: DunningStore + Send + Sync> DunningStore for std::sync::Arc<T> {
    fn cases(&self) -> impl Future<Output = Result<Vec<CaseRecord>, StoreError>> + Send {
        (**self).cases()
    }

    fn cards(&self, account: &AccountId) -> impl Future<Output = Result<Cards, StoreError>> + Send {
        (**self).cards(account)
    }

    fn record_step(
        &self,
        case: &CaseRecord,
        step: Step,
        now: i64,
    ) -> impl Future<Output = Result<Recorded, StoreError>> + Send {
        (**self).record_step(case, step, now)
    }

    fn record_card(
        &self,
        case: &CaseRecord,
        card: &str,
    ) -> impl Future<Output = Result<Recorded, StoreError>> + Send {
        (**self).record_card(case, card)
    }

    fn settle(&self, case: &CaseRecord) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).settle(case)
    }
}
