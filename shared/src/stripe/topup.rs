//! The top-up function's port to Stripe: one off-session payment for a claimed top-up.
//!
//! Two calls, so that no retry can charge twice. The payment intent is created unconfirmed
//! under `topup:{account}:{seq}:create` (a repeat returns the same intent; after a 5xx, a retry
//! under a key of its own can at worst leave an unconfirmed intent, which charges nothing).
//! It is then confirmed off-session under `...:confirm`: an intent is paid at most once
//! whatever the keys, and one that an earlier attempt already confirmed is read back instead.
//! The intent's metadata (`account_id`, `credit_pack`, `topup_seq`) lets the processor grant
//! the credits from Stripe's `payment_intent.succeeded`, as it grants a Checkout purchase.

use std::future::Future;
use std::sync::Mutex;

use serde_json::json;

use super::api::RealStripe;
use super::keyed::{KeyedError, RawRequest, field, send_keyed};
use crate::billing::effects::{
    ACCOUNT_METADATA_KEY, CREDIT_PACK_METADATA_KEY, TOPUP_SEQ_METADATA_KEY,
};

/// What one top-up charges, and to whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopupCharge {
    pub account: String,
    pub seq: u64,
    pub customer: String,
    pub card: String,
    pub pack: String,
    pub amount: u64,
    pub currency: String,
}

impl TopupCharge {
    pub fn idempotency_key(&self, step: &str) -> String {
        format!("topup:{}:{}:{step}", self.account, self.seq)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Stripe took the payment; its event brings the credits.
    Paid { payment_intent: String },
    /// The card declined, or needs the customer present (3-D Secure): nothing was taken.
    Declined { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopupCallError {
    /// 429, 409, 5xx or no answer in time: the stream delivers the claim again.
    #[error("Stripe did not answer; the top-up is tried again: {0}")]
    Retryable(String),
    /// Stripe refused the request itself (an unknown customer or card): needs an operator.
    #[error("Stripe refused the top-up: {0}")]
    Rejected(String),
}

pub trait TopupApi {
    fn charge(
        &self,
        charge: &TopupCharge,
    ) -> impl Future<Output = Result<ChargeOutcome, TopupCallError>> + Send;
}

fn outcome_of(payment_intent: &str, status: Option<&str>) -> Result<ChargeOutcome, TopupCallError> {
    match status {
        Some("succeeded") | Some("processing") => Ok(ChargeOutcome::Paid {
            payment_intent: payment_intent.to_owned(),
        }),
        Some("requires_action") => Ok(ChargeOutcome::Declined {
            reason: "the card needs the customer to authenticate the payment".into(),
        }),
        other => Err(TopupCallError::Retryable(format!(
            "payment {payment_intent} is {}",
            other.unwrap_or("in an unknown state")
        ))),
    }
}

impl TopupApi for RealStripe {
    async fn charge(&self, c: &TopupCharge) -> Result<ChargeOutcome, TopupCallError> {
        let create = json!({
            "amount": c.amount,
            "currency": c.currency,
            "customer": c.customer,
            "payment_method": c.card,
            "description": format!("Auto top-up {} ({})", c.seq, c.pack),
            "metadata": {
                ACCOUNT_METADATA_KEY: c.account,
                CREDIT_PACK_METADATA_KEY: c.pack,
                TOPUP_SEQ_METADATA_KEY: c.seq.to_string(),
            },
        });
        let created = send_keyed(
            &self.client,
            self.budget,
            &c.idempotency_key("create"),
            || RawRequest::post("/payment_intents", &create),
        )
        .await
        .map_err(|e| match e {
            KeyedError::Retryable(why) => TopupCallError::Retryable(why),
            refused => TopupCallError::Rejected(refused.describe()),
        })?;
        let id = field(&created, "id")
            .ok_or_else(|| TopupCallError::Retryable("a payment intent without an id".into()))?
            .to_owned();
        let path = format!("/payment_intents/{id}/confirm");
        let confirm = json!({ "payment_method": c.card, "off_session": true });
        match send_keyed(
            &self.client,
            self.budget,
            &c.idempotency_key("confirm"),
            || RawRequest::post(&path, &confirm),
        )
        .await
        {
            Ok(answer) => outcome_of(&id, field(&answer, "status")),
            Err(KeyedError::Refused {
                status: 402,
                reason,
                ..
            }) => Ok(ChargeOutcome::Declined { reason }),
            // Confirmed before, under another key (a retry after a 5xx): read how it ended.
            Err(KeyedError::Refused {
                status: 400,
                code: Some(code),
                ..
            }) if code == "payment_intent_unexpected_state" => {
                let path = format!("/payment_intents/{id}");
                let read = send_keyed(
                    &self.client,
                    self.budget,
                    &c.idempotency_key("read"),
                    || RawRequest::get(&path),
                )
                .await
                .map_err(|e| TopupCallError::Retryable(e.describe()))?;
                match field(&read, "status") {
                    Some("requires_payment_method") => Ok(ChargeOutcome::Declined {
                        reason: "the card was declined".into(),
                    }),
                    status => outcome_of(&id, status),
                }
            }
            Err(KeyedError::Retryable(why)) => Err(TopupCallError::Retryable(why)),
            Err(refused) => Err(TopupCallError::Rejected(refused.describe())),
        }
    }
}

impl<T: TopupApi + Send + Sync> TopupApi for std::sync::Arc<T> {
    fn charge(
        &self,
        charge: &TopupCharge,
    ) -> impl Future<Output = Result<ChargeOutcome, TopupCallError>> + Send {
        (**self).charge(charge)
    }
}

/// Charges in memory: each claim's first outcome is replayed for its key, as Stripe does;
/// cards listed in `declining` decline.
#[derive(Debug, Default)]
pub struct FakeTopupStripe {
    pub declining: Mutex<Vec<String>>,
    pub fail_next: Mutex<Option<TopupCallError>>,
    /// Every charge asked for, in order (repeats included).
    pub calls: Mutex<Vec<TopupCharge>>,
    /// Payments actually taken: one per claim, whatever the repeats.
    pub paid: Mutex<Vec<(String, u64)>>,
}

impl FakeTopupStripe {
    pub fn decline(&self, card: &str) {
        self.declining
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(card.to_owned());
    }

    pub fn paid(&self) -> Vec<(String, u64)> {
        self.paid.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn calls(&self) -> usize {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl TopupApi for FakeTopupStripe {
    async fn charge(&self, c: &TopupCharge) -> Result<ChargeOutcome, TopupCallError> {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(c.clone());
        if let Some(e) = self
            .fail_next
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            return Err(e);
        }
        let declined = self
            .declining
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&c.card);
        if declined {
            return Ok(ChargeOutcome::Declined {
                reason: "402 card_declined: Your card was declined.".into(),
            });
        }
        let mut paid = self.paid.lock().unwrap_or_else(|e| e.into_inner());
        let claim = (c.account.clone(), c.seq);
        if !paid.contains(&claim) {
            paid.push(claim);
        }
        Ok(ChargeOutcome::Paid {
            payment_intent: format!("pi_topup_{}_{}", c.account, c.seq),
        })
    }
}
