//! One stream batch of claimed top-ups: each is charged once (see `shared::stripe::topup`)
//! and its outcome recorded on the claim. A payment Stripe took waits for its event, which
//! grants the credits and ends the claim; a decline ends the claim here, disarms auto top-up
//! until the card changes, and tells the customer through the outbox.
//!
//! Records are taken in order; at the first that Stripe or the table could not finish, the
//! rest of the batch is reported failed, and the stream delivers it again (the same keys, so
//! nothing is charged twice).

use serde_json::json;
use shared::ids::AccountId;
use shared::store::StoreError;
use shared::store::topup::{Settled, TopupStore};
use shared::store::usage::Notification;
use shared::stripe::topup::{ChargeOutcome, TopupApi, TopupCallError, TopupCharge};
use tracing::{error, info, warn};

use crate::stream::{BatchResponse, ClaimImage, StreamEvent};

pub const FAILED_NOTIFICATION: &str = "credits.topup_failed";

#[derive(Debug, thiserror::Error)]
enum ClaimError {
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Stripe(TopupCallError),
}

/// What a batch did, for the log and the tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub charged: u32,
    pub declined: u32,
    pub settled_before: u32,
    pub skipped: u32,
}

pub struct Topup<S, A> {
    store: S,
    stripe: A,
    currency: String,
}

impl<S: TopupStore, A: TopupApi> Topup<S, A> {
    pub fn new(store: S, stripe: A, currency: impl Into<String>) -> Self {
        Self {
            store,
            stripe,
            currency: currency.into(),
        }
    }

    pub async fn handle(&self, event: StreamEvent) -> (BatchResponse, Summary) {
        let mut summary = Summary::default();
        for record in event.records {
            let claim = record.dynamodb.claim();
            let sequence = record.dynamodb.sequence_number;
            let Some(charge) = claim.and_then(|image| self.charge_of(&image)) else {
                // Not a claim this function can read: holding the stream for it would stop
                // every later top-up, so it is logged for an operator and passed.
                error!(sequence_number = %sequence, "a top-up record without a readable claim");
                summary.skipped += 1;
                continue;
            };
            if let Err(e) = self.pay(&charge, &mut summary).await {
                warn!(account_id = %charge.account, seq = charge.seq, error = %e,
                    "top-up not finished; the stream delivers it again");
                return (BatchResponse::resume_from(sequence), summary);
            }
        }
        (BatchResponse::default(), summary)
    }

    fn charge_of(&self, image: &ClaimImage) -> Option<TopupCharge> {
        Some(TopupCharge {
            account: AccountId::parse(&image.account_id.s)
                .ok()?
                .as_str()
                .to_owned(),
            seq: image.seq.get()?,
            customer: image.customer.s.clone(),
            card: image.card.s.clone(),
            pack: image.pack.s.clone(),
            amount: image.amount.get()?,
            currency: self.currency.clone(),
        })
    }

    async fn pay(&self, charge: &TopupCharge, summary: &mut Summary) -> Result<(), ClaimError> {
        let account = AccountId::parse(&charge.account)
            .map_err(|e| ClaimError::Store(StoreError::Other(e.into())))?;
        let outcome = match self.stripe.charge(charge).await {
            Ok(outcome) => outcome,
            // Stripe refuses the request itself (the customer or card is gone): a retry will
            // not help, and the customer can fix it by changing the card, as after a decline.
            Err(TopupCallError::Rejected(reason)) => ChargeOutcome::Declined { reason },
            Err(e) => return Err(ClaimError::Stripe(e)),
        };
        let settled = match &outcome {
            ChargeOutcome::Paid { payment_intent } => {
                let s = self
                    .store
                    .charged(&account, charge.seq, payment_intent)
                    .await
                    .map_err(ClaimError::Store)?;
                if s == Settled::Now {
                    summary.charged += 1;
                    info!(account_id = %account, seq = charge.seq, pack = %charge.pack,
                        amount = charge.amount, payment_intent = %payment_intent, "top-up charged");
                }
                s
            }
            ChargeOutcome::Declined { reason } => {
                let note = Notification {
                    id: format!("{FAILED_NOTIFICATION}:{account}:{}", charge.seq),
                    name: FAILED_NOTIFICATION,
                    detail: json!({
                        "account_id": account.as_str(),
                        "pack": charge.pack,
                        "amount": charge.amount,
                        "currency": charge.currency,
                        "seq": charge.seq,
                    })
                    .to_string(),
                };
                let s = self
                    .store
                    .declined(&account, charge.seq, &charge.card, reason, &note)
                    .await
                    .map_err(ClaimError::Store)?;
                if s == Settled::Now {
                    summary.declined += 1;
                    warn!(account_id = %account, seq = charge.seq, pack = %charge.pack, %reason,
                        "top-up declined; auto top-up paused until the card changes");
                }
                s
            }
        };
        if settled == Settled::Before {
            summary.settled_before += 1;
        }
        Ok(())
    }
}
