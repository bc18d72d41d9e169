//! Auto top-up's port to the table: the settings the API writes, and how a claimed top-up's
//! payment ends (the usage function claims; the top-up function pays; the processor grants the
//! credits from Stripe's event, which also ends the claim).
//!
//! Every write here is conditional on the claim still being pending, so a stream record
//! delivered twice, or a payment whose answer arrives after a retry, ends the claim once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use super::StoreError;
use super::usage::Notification;
use crate::ids::AccountId;
use crate::usage::topup::TopupSettings;

/// How a claim stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimStatus {
    /// Claimed by a use; no payment answered yet.
    Pending,
    /// Stripe took the payment; the credits come with its event.
    Charged,
    /// The card declined; top-up disarmed until the card changes.
    Declined,
}

impl ClaimStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Charged => "charged",
            Self::Declined => "declined",
        }
    }
}

/// Whether a settling write found the claim still pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Now,
    /// Settled before (a repeated stream record): nothing written.
    Before,
}

pub trait TopupStore {
    /// Turns auto top-up on with `settings` (forgetting a declined card: the customer asked
    /// again), or off (`None`). A claim in flight goes on either way.
    fn configure(
        &self,
        account: &AccountId,
        settings: Option<&TopupSettings>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stripe took the payment of claim `seq`.
    fn charged(
        &self,
        account: &AccountId,
        seq: u64,
        payment_intent: &str,
    ) -> impl Future<Output = Result<Settled, StoreError>> + Send;

    /// `card` declined claim `seq`: the claim ends, top-up is disarmed while `card` is the
    /// card to charge, and `notification` goes to the outbox, all in one write.
    fn declined(
        &self,
        account: &AccountId,
        seq: u64,
        card: &str,
        reason: &str,
        notification: &Notification,
    ) -> impl Future<Output = Result<Settled, StoreError>> + Send;
}

impl<T: TopupStore + Send + Sync> TopupStore for std::sync::Arc<T> {
    fn configure(
        &self,
        account: &AccountId,
        settings: Option<&TopupSettings>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).configure(account, settings)
    }

    fn charged(
        &self,
        account: &AccountId,
        seq: u64,
        payment_intent: &str,
    ) -> impl Future<Output = Result<Settled, StoreError>> + Send {
        (**self).charged(account, seq, payment_intent)
    }

    fn declined(
        &self,
        account: &AccountId,
        seq: u64,
        card: &str,
        reason: &str,
        notification: &Notification,
    ) -> impl Future<Output = Result<Settled, StoreError>> + Send {
        (**self).declined(account, seq, card, reason, notification)
    }
}

/// One account's top-up state, as the memory store keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryTopup {
    pub settings: Option<TopupSettings>,
    pub in_flight: Option<u64>,
    pub declined_card: Option<String>,
    /// Claim → (status, payment intent or decline reason).
    pub claims: HashMap<u64, (ClaimStatus, String)>,
    pub outbox: Vec<Notification>,
}

/// The store in memory, for the top-up function's in-process tests.
#[derive(Debug, Default)]
pub struct InMemoryTopupStore {
    accounts: Mutex<HashMap<AccountId, MemoryTopup>>,
}

impl InMemoryTopupStore {
    fn with<R>(&self, account: &AccountId, f: impl FnOnce(&mut MemoryTopup) -> R) -> R {
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        f(accounts.entry(account.clone()).or_default())
    }

    /// A claim the usage function made (its write of the claim and the account).
    pub fn claim(&self, account: &AccountId, seq: u64) {
        self.with(account, |t| {
            t.in_flight = Some(seq);
            t.claims.insert(seq, (ClaimStatus::Pending, String::new()));
        });
    }

    pub fn state(&self, account: &AccountId) -> MemoryTopup {
        self.with(account, |t| t.clone())
    }

    fn settle(
        &self,
        account: &AccountId,
        seq: u64,
        to: ClaimStatus,
        note: &str,
        f: impl FnOnce(&mut MemoryTopup),
    ) -> Settled {
        self.with(account, |t| match t.claims.get(&seq) {
            Some((ClaimStatus::Pending, _)) => {
                t.claims.insert(seq, (to, note.to_owned()));
                f(t);
                Settled::Now
            }
            _ => Settled::Before,
        })
    }
}

impl TopupStore for InMemoryTopupStore {
    async fn configure(
        &self,
        account: &AccountId,
        settings: Option<&TopupSettings>,
    ) -> Result<(), StoreError> {
        self.with(account, |t| {
            t.settings = settings.cloned();
            if settings.is_some() {
                t.declined_card = None;
            }
        });
        Ok(())
    }

    async fn charged(
        &self,
        account: &AccountId,
        seq: u64,
        payment_intent: &str,
    ) -> Result<Settled, StoreError> {
        Ok(self.settle(account, seq, ClaimStatus::Charged, payment_intent, |_| {}))
    }

    async fn declined(
        &self,
        account: &AccountId,
        seq: u64,
        card: &str,
        reason: &str,
        notification: &Notification,
    ) -> Result<Settled, StoreError> {
        Ok(
            self.settle(account, seq, ClaimStatus::Declined, reason, |t| {
                if t.in_flight == Some(seq) {
                    t.in_flight = None;
                }
                t.declined_card = Some(card.to_owned());
                t.outbox.push(notification.clone());
            }),
        )
    }
}
