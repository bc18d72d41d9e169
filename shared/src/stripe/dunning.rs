//! The dunning function's port to Stripe: pay an open invoice (optionally with a given card),
//! pause and resume a subscription's collection, and make a card the one a subscription is
//! charged to. Each call carries the caller's idempotency key, derived from the case and the
//! step (`dunning:{invoice}:{step}`), so a run that repeats a call after a crash, or overlaps
//! with another run, makes the call once as far as Stripe is concerned.
//!
//! The requests are plain form posts through async-stripe's client (its retries off: the key
//! is ours), and the answers are not parsed beyond success or failure: nothing here needs
//! Stripe's objects, and the function stays small.

use std::future::Future;
use std::sync::Mutex;

use serde_json::{Value, json};

use super::api::RealStripe;
use super::keyed::{KeyedError, RawRequest, send_keyed};

/// What an attempt to pay an invoice came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayOutcome {
    /// Stripe collected the payment.
    Paid,
    /// The card was declined (402) or Stripe refused the payment (the invoice is no longer
    /// open, say): an answer, not an error. The events that follow tell the rest.
    Refused(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DunningCallError {
    /// 429, 409, 5xx or no answer in time: the next run tries again under the same key.
    #[error("Stripe did not answer; the next run tries again: {0}")]
    Retryable(String),
    /// Stripe refused the request itself (400, 404): repeating it will not help.
    #[error("Stripe refused the request: {0}")]
    Rejected(String),
}

pub trait DunningApi {
    /// `POST /v1/invoices/{id}/pay`, with `card` as `payment_method` when given.
    fn pay_invoice(
        &self,
        invoice_id: &str,
        card: Option<&str>,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<PayOutcome, DunningCallError>> + Send;

    /// `POST /v1/subscriptions/{id}` with `pause_collection[behavior]=void`: while downgraded,
    /// the plan's new invoices are voided instead of charged.
    fn pause_collection(
        &self,
        subscription_id: &str,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<(), DunningCallError>> + Send;

    /// `POST /v1/subscriptions/{id}` with `pause_collection=`: the plan bills again.
    fn resume_collection(
        &self,
        subscription_id: &str,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<(), DunningCallError>> + Send;

    /// `POST /v1/subscriptions/{id}` with `default_payment_method`: Stripe's own retries and
    /// renewals charge this card first from now on.
    fn charge_card_first(
        &self,
        subscription_id: &str,
        card: &str,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<(), DunningCallError>> + Send;
}

/// How one post ended, before the caller reads it.
enum Posted {
    Ok,
    /// 402, or a 400 for a state the request no longer fits.
    Refused(String),
}

impl RealStripe {
    /// A form post under `key`. Safe to resend under a new key after a 5xx: paying twice is
    /// refused by the invoice itself (a paid invoice cannot be paid), and the subscription
    /// updates set a value.
    async fn post(&self, path: String, form: Value, key: &str) -> Result<Posted, DunningCallError> {
        let build = || RawRequest::post(&path, &form);
        match send_keyed(&self.client, self.budget, key, build).await {
            Ok(_) => Ok(Posted::Ok),
            Err(KeyedError::Retryable(why)) => Err(DunningCallError::Retryable(why)),
            Err(KeyedError::Refused {
                status: 402 | 400,
                reason,
                ..
            }) => Ok(Posted::Refused(reason)),
            Err(refused) => Err(DunningCallError::Rejected(refused.describe())),
        }
    }

    async fn update_subscription(
        &self,
        subscription_id: &str,
        form: Value,
        key: &str,
    ) -> Result<(), DunningCallError> {
        match self
            .post(format!("/subscriptions/{subscription_id}"), form, key)
            .await?
        {
            Posted::Ok => Ok(()),
            Posted::Refused(reason) => Err(DunningCallError::Rejected(reason)),
        }
    }
}

impl DunningApi for RealStripe {
    async fn pay_invoice(
        &self,
        invoice_id: &str,
        card: Option<&str>,
        idempotency_key: &str,
    ) -> Result<PayOutcome, DunningCallError> {
        let form = match card {
            Some(card) => json!({ "payment_method": card }),
            None => json!({}),
        };
        Ok(
            match self
                .post(format!("/invoices/{invoice_id}/pay"), form, idempotency_key)
                .await?
            {
                Posted::Ok => PayOutcome::Paid,
                Posted::Refused(reason) => PayOutcome::Refused(reason),
            },
        )
    }

    async fn pause_collection(
        &self,
        subscription_id: &str,
        idempotency_key: &str,
    ) -> Result<(), DunningCallError> {
        self.update_subscription(
            subscription_id,
            json!({ "pause_collection": { "behavior": "void" } }),
            idempotency_key,
        )
        .await
    }

    async fn resume_collection(
        &self,
        subscription_id: &str,
        idempotency_key: &str,
    ) -> Result<(), DunningCallError> {
        // An empty value unsets a field in Stripe's form encoding.
        self.update_subscription(
            subscription_id,
            json!({ "pause_collection": "" }),
            idempotency_key,
        )
        .await
    }

    async fn charge_card_first(
        &self,
        subscription_id: &str,
        card: &str,
        idempotency_key: &str,
    ) -> Result<(), DunningCallError> {
        self.update_subscription(
            subscription_id,
            json!({ "default_payment_method": card }),
            idempotency_key,
        )
        .await
    }
}

/// One call the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeCall {
    /// `pay`, `pause`, `resume` or `card_first`.
    pub what: &'static str,
    /// The invoice or subscription.
    pub target: String,
    pub card: Option<String>,
    pub key: String,
}

/// Stripe in memory for the dunning function's tests: records every call; a key seen before
/// is answered as the first time (as Stripe replays it) and counts once in `effects`.
#[derive(Debug, Default)]
pub struct FakeDunningStripe {
    calls: Mutex<Vec<FakeCall>>,
    /// Cards that are declined.
    declining: Mutex<Vec<String>>,
    /// Every call fails (Stripe unreachable) while set.
    failing: Mutex<bool>,
}

impl FakeDunningStripe {
    pub fn decline(&self, card: &str) {
        self.declining
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(card.to_owned());
    }

    pub fn set_failing(&self, failing: bool) {
        *self.failing.lock().unwrap_or_else(|e| e.into_inner()) = failing;
    }

    /// Every call, repeats included.
    pub fn calls(&self) -> Vec<FakeCall> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Calls with distinct keys: what Stripe acted on.
    pub fn effects(&self) -> Vec<FakeCall> {
        let mut seen = std::collections::HashSet::new();
        self.calls()
            .into_iter()
            .filter(|c| seen.insert(c.key.clone()))
            .collect()
    }

    fn call(
        &self,
        what: &'static str,
        target: &str,
        card: Option<&str>,
        key: &str,
    ) -> Result<(), DunningCallError> {
        if *self.failing.lock().unwrap_or_else(|e| e.into_inner()) {
            return Err(DunningCallError::Retryable("injected failure".into()));
        }
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(FakeCall {
                what,
                target: target.to_owned(),
                card: card.map(str::to_owned),
                key: key.to_owned(),
            });
        Ok(())
    }
}

impl DunningApi for FakeDunningStripe {
    async fn pay_invoice(
        &self,
        invoice_id: &str,
        card: Option<&str>,
        idempotency_key: &str,
    ) -> Result<PayOutcome, DunningCallError> {
        self.call("pay", invoice_id, card, idempotency_key)?;
        let declined = card.is_none_or(|c| {
            self.declining
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .any(|d| d == c)
        });
        Ok(if declined {
            PayOutcome::Refused("402 card_declined: Your card was declined.".into())
        } else {
            PayOutcome::Paid
        })
    }

    async fn pause_collection(
        &self,
        subscription_id: &str,
        key: &str,
    ) -> Result<(), DunningCallError> {
        self.call("pause", subscription_id, None, key)
    }

    async fn resume_collection(
        &self,
        subscription_id: &str,
        key: &str,
    ) -> Result<(), DunningCallError> {
        self.call("resume", subscription_id, None, key)
    }

    async fn charge_card_first(
        &self,
        subscription_id: &str,
        card: &str,
        key: &str,
    ) -> Result<(), DunningCallError> {
        self.call("card_first", subscription_id, Some(card), key)
    }
}

impl<T: DunningApi + Send + Sync> DunningApi for std::sync::Arc<T> {
    fn pay_invoice(
        &self,
        invoice_id: &str,
        card: Option<&str>,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<PayOutcome, DunningCallError>> + Send {
        (**self).pay_invoice(invoice_id, card, idempotency_key)
    }

    fn pause_collection(
        &self,
        subscription_id: &str,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<(), DunningCallError>> + Send {
        (**self).pause_collection(subscription_id, idempotency_key)
    }

    fn resume_collection(
        &self,
        subscription_id: &str,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<(), DunningCallError>> + Send {
        (**self).resume_collection(subscription_id, idempotency_key)
    }

    fn charge_card_first(
        &self,
        subscription_id: &str,
        card: &str,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<(), DunningCallError>> + Send {
        (**self).charge_card_first(subscription_id, card, idempotency_key)
    }
}
