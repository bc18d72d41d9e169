//! The billing store in memory, for in-process tests: the same rules as DynamoDB, applied by
//! calling `crate::billing` directly where the DynamoDB store restates them as conditions.
//! `shared/tests/store.rs` runs one suite (examples and random sequences) against both.
//!
//! One mutex serialises every call: concurrency here cannot race, so concurrency claims are
//! tested against DynamoDB Local, never against this store.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use super::{
    AccountView, ApplyResult, BillingStore, DunningView, EventRecord, InvoiceView, NO_ACCOUNT,
    ParkResult, ParkedEvent, StoreError, StripePrices, SubscriptionView, WriteMode,
};
use crate::billing::credits::{Grant, clawback, grant_after_refund, unspent_of};
use crate::billing::ordering::{SubscriptionVersion, judge, judge_subscription};
use crate::billing::{DunningChange, InvoiceRecord, SubscriptionState, Verdict, Write};
use crate::ids::{AccountId, StripeEventId};

#[derive(Debug, Clone, Default)]
struct Account {
    customer_id: Option<String>,
    email: Option<String>,
    name: Option<String>,
    customer_version: Option<i64>,
    subscription: Option<(SubscriptionState, i64)>,
    credits: u64,
    /// Auto top-up claims whose payments were granted.
    topups_ended: Vec<u64>,
}

#[derive(Debug, Clone)]
struct Invoice {
    record: InvoiceRecord,
    version: i64,
    dunning_status: Option<String>,
    failures: Option<u32>,
    first_failed_at: Option<i64>,
    next_payment_attempt: Option<i64>,
}

/// A ledger entry: a grant, or a refund that came before its grant, or both.
#[derive(Debug, Clone, Default)]
struct LedgerEntry {
    granted: Option<Granted>,
    refunded: Option<u64>,
}

#[derive(Debug, Clone)]
struct Granted {
    credits: u64,
    amount_paid: u64,
    clawed_back: u64,
    granted_at: i64,
}

#[derive(Debug, Clone, Default)]
struct State {
    markers: HashMap<String, String>,
    links: HashMap<String, AccountId>,
    accounts: HashMap<AccountId, Account>,
    ended: HashSet<(AccountId, String)>,
    invoices: HashMap<(AccountId, String), Invoice>,
    ledger: HashMap<(AccountId, String), LedgerEntry>,
    /// Events parked per customer, by event id: (created, raw).
    parked: HashMap<String, HashMap<String, (i64, Vec<u8>)>>,
    stripe_prices: Option<StripePrices>,
}

#[derive(Debug, Default)]
pub struct InMemoryBillingStore {
    state: Mutex<State>,
}

impl InMemoryBillingStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What `make stripe-setup` records: each lookup key's price id.
    pub fn set_stripe_prices(&self, prices: StripePrices) {
        self.lock().stripe_prices = Some(prices);
    }

    /// The auto top-up claims whose payments the processor granted, in order.
    pub fn topups_ended(&self, account: &AccountId) -> Vec<u64> {
        self.lock()
            .accounts
            .get(account)
            .map(|a| a.topups_ended.clone())
            .unwrap_or_default()
    }
}

/// Whether a write versioned `created` may replace state versioned `stored`.
fn version_check(stored: Option<i64>, created: i64, mode: WriteMode) -> Result<(), Verdict> {
    passes(judge(stored, created), mode)
}

fn passes(verdict: Verdict, mode: WriteMode) -> Result<(), Verdict> {
    match (verdict, mode) {
        (Verdict::Apply, _) | (Verdict::Tie, WriteMode::TieBreak) => Ok(()),
        (verdict, _) => Err(verdict),
    }
}

fn apply_write(
    state: &mut State,
    account: Option<&AccountId>,
    w: &Write,
    created: i64,
    mode: WriteMode,
) -> Result<(), Verdict> {
    // Every write names the account; the processor never sends one without it.
    let Some(account) = account else {
        return Err(Verdict::Stale);
    };
    match w {
        Write::LinkCustomer { customer_id } => {
            if state.parked.get(customer_id).is_some_and(|p| !p.is_empty()) {
                return Err(Verdict::ParkedEvents);
            }
            state.links.insert(customer_id.clone(), account.clone());
        }
        Write::AccountCustomer { customer_id, email } => {
            let acc = state.accounts.entry(account.clone()).or_default();
            acc.customer_id.get_or_insert_with(|| customer_id.clone());
            if acc.email.is_none() {
                acc.email = email.clone();
            }
        }
        Write::CustomerProfile {
            customer_id,
            email,
            name,
            deleted: _,
            card: _,
        } => {
            let acc = state.accounts.entry(account.clone()).or_default();
            version_check(acc.customer_version, created, mode)?;
            acc.customer_id = Some(customer_id.clone());
            acc.email = email.clone();
            acc.name = name.clone();
            acc.customer_version = Some(created);
        }
        Write::SubscriptionEnded { subscription_id } => {
            state
                .ended
                .insert((account.clone(), subscription_id.clone()));
        }
        Write::Subscription(sub) => {
            let ended_before = state
                .ended
                .contains(&(account.clone(), sub.subscription_id.clone()));
            let acc = state.accounts.entry(account.clone()).or_default();
            let stored = acc.subscription.as_ref().map(|(s, v)| SubscriptionVersion {
                id: &s.subscription_id,
                status: s.status,
                version: *v,
            });
            let incoming = SubscriptionVersion {
                id: &sub.subscription_id,
                status: sub.status,
                version: created,
            };
            passes(judge_subscription(stored, incoming, ended_before), mode)?;
            acc.subscription = Some((sub.clone(), created));
        }
        Write::Invoice(record, dunning) => {
            let key = (account.clone(), record.invoice_id.clone());
            let existing = state.invoices.get(&key);
            version_check(existing.map(|i| i.version), created, mode)?;
            let mut inv = existing.cloned().unwrap_or(Invoice {
                record: record.clone(),
                version: created,
                dunning_status: None,
                failures: None,
                first_failed_at: None,
                next_payment_attempt: None,
            });
            inv.record = record.clone();
            inv.version = created;
            match dunning {
                DunningChange::None => {}
                DunningChange::Failed {
                    attempt_count,
                    next_payment_attempt,
                } => {
                    inv.dunning_status = Some("open".into());
                    inv.failures = Some(*attempt_count);
                    inv.first_failed_at = Some(inv.first_failed_at.unwrap_or(created));
                    inv.next_payment_attempt = *next_payment_attempt;
                }
                DunningChange::Closed { reason } => {
                    inv.dunning_status = Some((*reason).into());
                    inv.next_payment_attempt = None;
                }
            }
            state.invoices.insert(key, inv);
            // DynamoDB's payment also lifts the case's restrictions on the account item (an
            // update, which creates the item if it was not there): the account exists after.
            if let DunningChange::Closed { reason } = dunning
                && crate::billing::dunning::lifts_restrictions(reason)
            {
                state.accounts.entry(account.clone()).or_default();
            }
        }
        Write::GrantCredits {
            grant_id,
            credits,
            amount_paid,
            refunded_before,
            ..
        } => {
            let entry = state
                .ledger
                .entry((account.clone(), grant_id.clone()))
                .or_default();
            if entry.granted.is_some() {
                return Err(Verdict::Stale);
            }
            if entry.refunded != *refunded_before {
                return Err(match entry.refunded {
                    Some(amount_refunded) => Verdict::RefundedBeforeGrant { amount_refunded },
                    // The processor saw a refund that is not there: read again.
                    None => return Err(Verdict::Apply),
                });
            }
            let (add, clawed_back) = match refunded_before {
                Some(r) => grant_after_refund(*credits, *amount_paid, *r),
                None => (*credits, 0),
            };
            entry.granted = Some(Granted {
                credits: *credits,
                amount_paid: *amount_paid,
                clawed_back,
                granted_at: created,
            });
            state.accounts.entry(account.clone()).or_default().credits += add;
        }
        Write::EndTopupClaim { seq } => {
            let ended = &mut state
                .accounts
                .entry(account.clone())
                .or_default()
                .topups_ended;
            if !ended.contains(seq) {
                ended.push(*seq);
            }
        }
        Write::ClawBack {
            grant_id,
            amount_refunded,
        } => {
            let key = (account.clone(), grant_id.clone());
            let entry = state.ledger.entry(key.clone()).or_default();
            let Some(granted) = entry.granted.clone() else {
                // No grant yet: remember the largest running total for it.
                if entry.refunded.is_some_and(|r| r >= *amount_refunded) {
                    return Err(Verdict::Stale);
                }
                entry.refunded = Some(*amount_refunded);
                return Ok(());
            };
            let balance = state.accounts.get(account).map_or(0, |a| a.credits);
            let grants: Vec<Grant<'_>> = state
                .ledger
                .iter()
                .filter(|((a, _), _)| a == account)
                .filter_map(|((_, id), e)| {
                    let g = e.granted.as_ref()?;
                    Some(Grant {
                        id: id.as_str(),
                        granted_at: g.granted_at,
                        credits: g.credits,
                        clawed_back: g.clawed_back,
                    })
                })
                .collect();
            let unspent = unspent_of(&grants, grant_id, balance);
            let c = clawback(
                granted.credits,
                granted.amount_paid,
                *amount_refunded,
                granted.clawed_back,
                unspent,
            );
            if let Some(g) = state.ledger.get_mut(&key).and_then(|e| e.granted.as_mut()) {
                g.clawed_back = c.clawed_back;
            }
            state.accounts.entry(account.clone()).or_default().credits -= c.take;
        }
    }
    Ok(())
}

impl BillingStore for InMemoryBillingStore {
    async fn apply(
        &self,
        event: &EventRecord,
        outcome: &'static str,
        writes: &[Write],
        mode: WriteMode,
    ) -> Result<ApplyResult, StoreError> {
        let mut state = self.lock();
        if state
            .markers
            .get(event.event_id.as_str())
            .is_some_and(|m| m != NO_ACCOUNT)
        {
            return Ok(ApplyResult::Duplicate);
        }
        // All or nothing: work on a copy, keep it only if every write passes.
        let mut next = state.clone();
        for (index, w) in writes.iter().enumerate() {
            match apply_write(&mut next, event.account.as_ref(), w, event.created, mode) {
                Ok(()) => {}
                Err(Verdict::Apply) => {
                    return Err(StoreError::Retryable(anyhow::anyhow!(
                        "write {index} met a concurrent change"
                    )));
                }
                Err(verdict) => return Ok(ApplyResult::Conflict { index, verdict }),
            }
        }
        next.markers
            .insert(event.event_id.as_str().to_owned(), outcome.to_owned());
        *state = next;
        Ok(ApplyResult::Applied)
    }

    async fn customer_account(&self, customer_id: &str) -> Result<Option<AccountId>, StoreError> {
        Ok(self.lock().links.get(customer_id).cloned())
    }

    async fn event_outcome(&self, event_id: &StripeEventId) -> Result<Option<String>, StoreError> {
        Ok(self.lock().markers.get(event_id.as_str()).cloned())
    }

    async fn account(&self, account: &AccountId) -> Result<Option<AccountView>, StoreError> {
        let state = self.lock();
        Ok(state.accounts.get(account).map(|a| {
            let (sub, plan, included) = match &a.subscription {
                Some((s, _)) => (
                    Some(SubscriptionView {
                        subscription_id: s.subscription_id.clone(),
                        status: s.status.as_str().to_owned(),
                        plan: s.plan.as_str().to_owned(),
                        period_start: s.period_start,
                        period_end: s.period_end,
                        cancel_at_period_end: s.cancel_at_period_end,
                    }),
                    s.effective_plan.as_str().to_owned(),
                    Some(s.included_units),
                ),
                None => (None, crate::catalog::FREE_PLAN.to_owned(), None),
            };
            AccountView {
                account_id: account.as_str().to_owned(),
                customer_id: a.customer_id.clone(),
                email: a.email.clone(),
                name: a.name.clone(),
                plan,
                included_units: included,
                subscription: sub,
                credits: a.credits,
                // Dunning's restrictions live beside the account in DynamoDB only: this store
                // serves the processor's tests, which never restrict an account.
                downgraded: false,
                suspended: false,
                // Auto top-up's settings are the API's and the usage function's to write.
                auto_topup: Default::default(),
            }
        }))
    }

    async fn park(
        &self,
        event: &EventRecord,
        customer_id: &str,
        raw: &[u8],
    ) -> Result<ParkResult, StoreError> {
        let mut state = self.lock();
        if state
            .markers
            .get(event.event_id.as_str())
            .is_some_and(|m| m != NO_ACCOUNT)
        {
            return Ok(ParkResult::Duplicate);
        }
        if state.links.contains_key(customer_id) {
            return Ok(ParkResult::Linked);
        }
        state
            .markers
            .insert(event.event_id.as_str().to_owned(), NO_ACCOUNT.to_owned());
        state
            .parked
            .entry(customer_id.to_owned())
            .or_default()
            .insert(
                event.event_id.as_str().to_owned(),
                (event.created, raw.to_vec()),
            );
        Ok(ParkResult::Parked)
    }

    async fn parked(&self, customer_id: &str) -> Result<Vec<ParkedEvent>, StoreError> {
        let state = self.lock();
        let mut out: Vec<ParkedEvent> = state
            .parked
            .get(customer_id)
            .into_iter()
            .flatten()
            .filter_map(|(id, (created, raw))| {
                Some(ParkedEvent {
                    event_id: StripeEventId::parse(id).ok()?,
                    created: *created,
                    raw: Some(raw.clone()),
                })
            })
            .collect();
        super::sort_parked(&mut out);
        Ok(out)
    }

    async fn unpark(&self, customer_id: &str, event_id: &StripeEventId) -> Result<(), StoreError> {
        if let Some(p) = self.lock().parked.get_mut(customer_id) {
            p.remove(event_id.as_str());
        }
        Ok(())
    }

    async fn link(&self, customer_id: &str, account: &AccountId) -> Result<(), StoreError> {
        self.lock()
            .links
            .insert(customer_id.to_owned(), account.clone());
        Ok(())
    }

    async fn stripe_prices(&self) -> Result<Option<StripePrices>, StoreError> {
        Ok(self.lock().stripe_prices.clone())
    }

    async fn invoices(&self, account: &AccountId) -> Result<Vec<InvoiceView>, StoreError> {
        let state = self.lock();
        let mut out: Vec<InvoiceView> = state
            .invoices
            .iter()
            .filter(|((a, _), _)| a == account)
            .map(|(_, i)| InvoiceView {
                record: i.record.clone(),
                dunning: i.failures.map(|failures| DunningView {
                    status: i.dunning_status.clone().unwrap_or_else(|| "open".into()),
                    failures,
                    first_failed_at: i.first_failed_at.unwrap_or_default(),
                    next_payment_attempt: i.next_payment_attempt,
                }),
            })
            .collect();
        super::sort_invoices(&mut out);
        Ok(out)
    }
}
