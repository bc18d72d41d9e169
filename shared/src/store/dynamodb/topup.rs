//! Auto top-up on the account item (`at_*` attributes, each change bumping `at_rev`, which the
//! usage function's commits watch) and its claims (`TOPUP#{account}#{seq}` / `TOPUP`, inserted
//! by the usage commit that claims; the table's stream brings them to the top-up function).

use aws_sdk_dynamodb::types::AttributeValue;

use super::item::{Expr, Item, Judge, Op, account_key, key, n, s};
use super::usage::outbox_op;
use super::{DynamoDbBillingStore, Guarded};
use crate::ids::AccountId;
use crate::store::StoreError;
use crate::store::topup::{ClaimStatus, Settled, TopupStore};
use crate::store::usage::Notification;
use crate::usage::topup::TopupSettings;

pub(super) const AT_ON: &str = "at_on";
pub(super) const AT_REV: &str = "at_rev";
/// A string set of the claim in flight: a set, so that ending a claim is a `DELETE` of its own
/// number, which cannot end a later claim and needs no condition inside a grant's transaction.
pub(super) const AT_FLIGHT: &str = "at_flight";
pub(super) const TOPUP_PENDING: &str = "pending";
const CONFLICT_ATTEMPTS: u32 = 4;

pub(super) fn topup_key(account: &AccountId, seq: u64) -> Item {
    key(format!("TOPUP#{account}#{seq}"), "TOPUP")
}

/// Ends claim `seq` on the account and bumps `at_rev`: part of the grant of its credits.
pub(super) fn end_claim(e: &mut Expr, seq: u64) {
    e.delete(AT_FLIGHT, AttributeValue::Ss(vec![seq.to_string()]))
        .add(AT_REV, n(1));
}

/// How a claim ends: its status and a note on it (the payment, or the decline's reason),
/// what changes on the account, and what the customer is told.
struct Ending<'a> {
    to: ClaimStatus,
    note: (&'a str, &'a str),
    account_change: Option<Expr>,
    notification: Option<&'a Notification>,
}

#[derive(Debug, Clone)]
pub struct DynamoDbTopupStore {
    store: DynamoDbBillingStore,
}

impl DynamoDbTopupStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            store: DynamoDbBillingStore::new(client, table),
        }
    }

    /// The claim's move from pending to its ending, with the account's change and the outbox
    /// entry, in one transaction; `Before` when the claim was not pending any more.
    async fn settle(
        &self,
        account: &AccountId,
        seq: u64,
        ending: Ending<'_>,
    ) -> Result<Settled, StoreError> {
        let Ending {
            to,
            note,
            account_change,
            notification,
        } = ending;
        let mut claim = Expr::default();
        claim
            .set("status", s(to.as_str()))
            .set(note.0, s(note.1))
            .value(":pending", s(TOPUP_PENDING));
        let mut ops = vec![(
            Some(0),
            Op::update(
                topup_key(account, seq),
                claim,
                Some("#status = :pending".into()),
                Judge::Retry,
            ),
        )];
        if let Some(change) = account_change {
            ops.push((
                Some(1),
                Op::update(account_key(account), change, None, Judge::Retry),
            ));
        }
        if let Some(note) = notification {
            ops.push((Some(2), outbox_op(account, note, crate::clock::unix_now())));
        }
        let written = self
            .store
            .transact_guarded(ops, CONFLICT_ATTEMPTS, "settling a top-up")
            .await?;
        Ok(match written {
            Guarded::Written => Settled::Now,
            Guarded::FirstRefused(_) => Settled::Before,
        })
    }
}

impl TopupStore for DynamoDbTopupStore {
    async fn configure(
        &self,
        account: &AccountId,
        settings: Option<&TopupSettings>,
    ) -> Result<(), StoreError> {
        let mut e = Expr::default();
        match settings {
            Some(t) => {
                e.set(AT_ON, AttributeValue::Bool(true))
                    .set("at_threshold", n(t.threshold))
                    .set("at_pack", s(&t.pack))
                    .set("at_amount", n(t.amount))
                    .set("at_credits", n(t.credits))
                    .set("at_cap", n(t.monthly_cap))
                    .remove("at_declined_card");
            }
            None => {
                e.set(AT_ON, AttributeValue::Bool(false));
            }
        }
        e.add(AT_REV, n(1)).set("account_id", s(account.as_str()));
        let items = self.store.transact_items(vec![(
            None,
            Op::update(account_key(account), e, None, Judge::Retry),
        )])?;
        self.store
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                StoreError::Retryable(anyhow::Error::new(e).context("writing auto top-up"))
            })
    }

    async fn charged(
        &self,
        account: &AccountId,
        seq: u64,
        payment_intent: &str,
    ) -> Result<Settled, StoreError> {
        let ending = Ending {
            to: ClaimStatus::Charged,
            note: ("payment_intent", payment_intent),
            account_change: None,
            notification: None,
        };
        self.settle(account, seq, ending).await
    }

    async fn declined(
        &self,
        account: &AccountId,
        seq: u64,
        card: &str,
        reason: &str,
        notification: &Notification,
    ) -> Result<Settled, StoreError> {
        let mut a = Expr::default();
        end_claim(&mut a, seq);
        a.set("at_declined_card", s(card));
        let ending = Ending {
            to: ClaimStatus::Declined,
            note: ("reason", reason),
            account_change: Some(a),
            notification: Some(notification),
        };
        self.settle(account, seq, ending).await
    }
}
