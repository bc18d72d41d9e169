//! The usage store in memory, for in-process tests: the same outcomes as DynamoDB's, with a
//! revision number standing for "the account as it was loaded". One mutex serialises every
//! call, so concurrency claims are tested against DynamoDB Local, never here.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use super::StoreError;
use super::usage::{
    Committed, HoldRecord, HoldStatus, ModelTotals, Notification, StoredTerms, UsageAccount,
    UsageChange, UsageRecord, UsageStore, sort_totals,
};
use crate::ids::{AccountId, RequestId, ReservationId};
use crate::usage::ledger::Ledger;
use crate::usage::topup::{AutoTopup, TopupClaim};

#[derive(Debug, Default)]
struct State {
    accounts: HashMap<AccountId, (u64, StoredTerms, Ledger)>,
    records: HashMap<(AccountId, RequestId), UsageRecord>,
    holds: HashMap<ReservationId, (AccountId, HoldRecord)>,
    totals: BTreeMap<(AccountId, i64, String), ModelTotals>,
    outbox: BTreeMap<String, Notification>,
}

#[derive(Debug, Default)]
pub struct InMemoryUsageStore {
    state: Mutex<State>,
}

impl InMemoryUsageStore {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn entry<'a>(state: &'a mut State, account: &AccountId) -> &'a mut (u64, StoredTerms, Ledger) {
        state.accounts.entry(account.clone()).or_default()
    }

    /// The processor's side, as tests need it: a plan (or none), and its period.
    pub fn set_terms(&self, account: &AccountId, terms: StoredTerms) {
        let mut s = self.lock();
        let e = Self::entry(&mut s, account);
        e.0 += 1;
        e.1 = terms;
    }

    /// A credit pack granted (the processor's grant).
    pub fn grant(&self, account: &AccountId, credits: u64) {
        let mut s = self.lock();
        let e = Self::entry(&mut s, account);
        e.0 += 1;
        e.2.grant(credits);
    }

    /// Credits taken back by a refund; how many were there to take.
    pub fn claw_back(&self, account: &AccountId, credits: u64) -> u64 {
        let mut s = self.lock();
        let e = Self::entry(&mut s, account);
        e.0 += 1;
        e.2.claw_back(credits)
    }

    pub fn record(&self, account: &AccountId, request: &RequestId) -> Option<UsageRecord> {
        self.lock()
            .records
            .get(&(account.clone(), request.clone()))
            .cloned()
    }

    pub fn records(&self, account: &AccountId) -> Vec<UsageRecord> {
        let s = self.lock();
        let mut out: Vec<_> = s
            .records
            .iter()
            .filter(|((a, _), _)| a == account)
            .map(|(_, r)| r.clone())
            .collect();
        out.sort_by(|a, b| a.request.cmp(&b.request));
        out
    }

    /// Auto top-up as the API and the processor would leave it (settings, customer, card).
    pub fn set_topup(&self, account: &AccountId, topup: AutoTopup) {
        let mut s = self.lock();
        let e = Self::entry(&mut s, account);
        e.0 += 1;
        e.2.topup = topup;
    }

    /// The top-ups the account's uses claimed, in claim order.
    pub fn topup_claims(&self, account: &AccountId) -> Vec<TopupClaim> {
        let mut claims: Vec<TopupClaim> = self
            .lock()
            .records
            .iter()
            .filter(|((a, _), _)| a == account)
            .filter_map(|(_, r)| r.topup.clone())
            .collect();
        claims.sort_by_key(|c| c.seq);
        claims
    }

    pub fn hold(&self, reservation: &ReservationId) -> Option<HoldRecord> {
        self.lock().holds.get(reservation).map(|(_, h)| h.clone())
    }

    pub fn outbox(&self) -> Vec<Notification> {
        self.lock().outbox.values().cloned().collect()
    }
}

fn current(s: &State, account: &AccountId) -> UsageAccount<u64> {
    let (version, terms, ledger) = s.accounts.get(account).cloned().unwrap_or_default();
    UsageAccount {
        version,
        terms,
        ledger,
    }
}

impl UsageStore for InMemoryUsageStore {
    type Version = u64;

    fn never_written(&self) -> UsageAccount<u64> {
        UsageAccount {
            version: 0,
            terms: StoredTerms::default(),
            ledger: Ledger::default(),
        }
    }

    async fn load(&self, account: &AccountId) -> Result<UsageAccount<u64>, StoreError> {
        Ok(current(&self.lock(), account))
    }

    async fn commit(
        &self,
        account: &AccountId,
        expected: &u64,
        ledger: &Ledger,
        change: &UsageChange,
        notifications: &[Notification],
    ) -> Result<Committed<u64>, StoreError> {
        let mut s = self.lock();
        let now = current(&s, account);
        // The conditions, checked before anything is written (all or nothing), in the order
        // the DynamoDB store reports them: the record, then the account, then a settled hold.
        match change {
            UsageChange::Track(r) => {
                if let Some(first) = s.records.get(&(account.clone(), r.request.clone())) {
                    return Ok(Committed::Duplicate(first.answer.clone()));
                }
                if now.version != *expected {
                    return Ok(Committed::Changed(Box::new(now)));
                }
                if let Some(settled) = &r.settled {
                    match s.holds.get(settled) {
                        Some((a, h)) if a == account && h.status == HoldStatus::Held => {}
                        other => return Ok(Committed::NotHeld(other.map(|(_, h)| h.clone()))),
                    }
                }
            }
            UsageChange::Reserve(h) => {
                if let Some((_, first)) = s.holds.get(&h.reservation) {
                    return Ok(Committed::Duplicate(first.answer.clone()));
                }
            }
            UsageChange::Release { reservation, .. } => match s.holds.get(reservation) {
                Some((a, h)) if a == account && h.status == HoldStatus::Held => {}
                Some((a, h)) if a == account => return Ok(Committed::NotHeld(Some(h.clone()))),
                _ => return Ok(Committed::NotHeld(None)),
            },
        }
        if now.version != *expected {
            return Ok(Committed::Changed(Box::new(now)));
        }
        match change {
            UsageChange::Track(r) => {
                if let Some(settled) = &r.settled
                    && let Some((_, h)) = s.holds.get_mut(settled)
                {
                    h.status = HoldStatus::Settled;
                }
                let t = s
                    .totals
                    .entry((account.clone(), r.period.start, r.model.clone()))
                    .or_insert_with(|| ModelTotals {
                        model: r.model.clone(),
                        ..ModelTotals::default()
                    });
                t.period = r.period;
                t.add(1, r.units, r.covered, r.tokens);
                s.records
                    .insert((account.clone(), r.request.clone()), (**r).clone());
            }
            UsageChange::Reserve(h) => {
                s.holds
                    .insert(h.reservation.clone(), (account.clone(), h.clone()));
            }
            UsageChange::Release {
                reservation,
                status,
            } => {
                if let Some((_, h)) = s.holds.get_mut(reservation) {
                    h.status = *status;
                }
            }
        }
        for n in notifications {
            s.outbox.insert(n.id.clone(), n.clone());
        }
        let e = Self::entry(&mut s, account);
        e.0 += 1;
        e.2 = ledger.clone();
        Ok(Committed::Done(e.0))
    }

    async fn totals(&self, account: &AccountId) -> Result<Vec<ModelTotals>, StoreError> {
        let s = self.lock();
        let mut out: Vec<ModelTotals> = s
            .totals
            .iter()
            .filter(|((a, _, _), _)| a == account)
            .map(|(_, t)| t.clone())
            .collect();
        sort_totals(&mut out);
        Ok(out)
    }
}
