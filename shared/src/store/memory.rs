//! The billing store in memory: the same rules as DynamoDB, for in-process tests.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use super::{
    AccountView, ApplyResult, BillingStore, DunningView, EventRecord, InvoiceView, StoreError,
    SubscriptionView, WriteMode,
};
use crate::billing::credits::clawback;
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

#[derive(Debug, Clone)]
struct Grant {
    credits: u64,
    amount_paid: u64,
    clawed_back: u64,
}

#[derive(Debug, Clone, Default)]
struct State {
    markers: HashMap<String, String>,
    links: HashMap<String, AccountId>,
    accounts: HashMap<AccountId, Account>,
    invoices: HashMap<(AccountId, String), Invoice>,
    grants: HashMap<(AccountId, String), Grant>,
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
}

/// Whether a write versioned `created` may replace state versioned `stored`.
fn version_check(stored: Option<i64>, created: i64, mode: WriteMode) -> Result<(), Verdict> {
    match (judge(stored, created), mode) {
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
    // Every write but a link names the account; the processor never sends one without it.
    let Some(account) = account else {
        return Err(Verdict::Stale);
    };
    match w {
        Write::LinkCustomer { customer_id } => {
            state.links.insert(customer_id.clone(), account.clone());
        }
        Write::CustomerProfile {
            customer_id,
            email,
            name,
            deleted: _,
        } => {
            let acc = state.accounts.entry(account.clone()).or_default();
            version_check(acc.customer_version, created, mode)?;
            acc.customer_id = Some(customer_id.clone());
            acc.email = email.clone();
            acc.name = name.clone();
            acc.customer_version = Some(created);
        }
        Write::Subscription(sub) => {
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
            match (judge_subscription(stored, incoming), mode) {
                (Verdict::Apply, _) | (Verdict::Tie, WriteMode::TieBreak) => {}
                (verdict, _) => return Err(verdict),
            }
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
        }
        Write::GrantCredits {
            grant_id,
            credits,
            amount_paid,
            ..
        } => {
            let key = (account.clone(), grant_id.clone());
            if state.grants.contains_key(&key) {
                return Err(Verdict::Stale);
            }
            state.grants.insert(
                key,
                Grant {
                    credits: *credits,
                    amount_paid: *amount_paid,
                    clawed_back: 0,
                },
            );
            state.accounts.entry(account.clone()).or_default().credits += credits;
        }
        Write::ClawBack {
            grant_id,
            amount_refunded,
        } => {
            let key = (account.clone(), grant_id.clone());
            let Some(grant) = state.grants.get(&key).cloned() else {
                return Ok(()); // not a credit pack: nothing to take back
            };
            let acc = state.accounts.entry(account.clone()).or_default();
            let (take, total) = clawback(
                grant.credits,
                grant.amount_paid,
                *amount_refunded,
                grant.clawed_back,
                acc.credits,
            );
            acc.credits -= take;
            if let Some(g) = state.grants.get_mut(&key) {
                g.clawed_back = total;
            }
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
        if state.markers.contains_key(event.event_id.as_str()) {
            return Ok(ApplyResult::Duplicate);
        }
        // All or nothing: work on a copy, keep it only if every write passes.
        let mut next = state.clone();
        for (index, w) in writes.iter().enumerate() {
            if let Err(verdict) =
                apply_write(&mut next, event.account.as_ref(), w, event.created, mode)
            {
                return Ok(ApplyResult::Conflict { index, verdict });
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
            }
        }))
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
