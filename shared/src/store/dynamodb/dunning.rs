//! The dunning function's reads and writes: cases from the sparse `DunningCases` index (the
//! invoice items the processor put there on a failure, projected whole), the account's cards,
//! and each step recorded in one transaction on the invoice (`dunning_taken`), the account
//! (`downgraded_for` / `suspended_for`) and the outbox.

use std::collections::BTreeSet;

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::AttributeValue;

use super::invoices::{
    DOWNGRADED_FOR, DUNNING_INDEX, DUNNING_INDEX_KEY, DUNNING_INDEX_VALUE, SUSPENDED_FOR,
};
use super::item::{Expr, Item, Judge, Op, account_key, get_n, get_s, invoice_key, s};
use super::metering::written;
use super::usage::outbox_op;
use super::{DynamoDbBillingStore, Guarded};
use crate::billing::dunning::{Step, Steps};
use crate::ids::AccountId;
use crate::store::StoreError;
use crate::store::dunning::{
    Cards, CaseRecord, DunningStore, Recorded, Restriction, restriction_of,
};
use crate::store::usage::Notification;

const TAKEN: &str = "dunning_taken";
const CARDS_TRIED: &str = "cards_tried";
/// Attempts of one step's transaction that DynamoDB cancels for a conflicting one in flight.
const CONFLICT_ATTEMPTS: u32 = 4;

#[derive(Debug, Clone)]
pub struct DynamoDbDunningStore {
    store: DynamoDbBillingStore,
}

impl DynamoDbDunningStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            store: DynamoDbBillingStore::new(client, table),
        }
    }
}

fn set_of(item: &Item, attr: &str) -> BTreeSet<String> {
    item.get(attr)
        .and_then(|v| v.as_ss().ok())
        .map(|v| v.iter().cloned().collect())
        .unwrap_or_default()
}

/// A case from its invoice item; `None` for an item that is not one.
fn case_from(item: &Item) -> Option<CaseRecord> {
    let account = AccountId::parse(get_s(item, "pk")?.strip_prefix("ACCOUNT#")?).ok()?;
    let invoice_id = get_s(item, "sk")?.strip_prefix("INVOICE#")?.to_owned();
    let taken = set_of(item, TAKEN)
        .iter()
        .filter_map(|name| Step::parse(name))
        .fold(Steps::default(), Steps::with);
    Some(CaseRecord {
        account,
        invoice_id,
        subscription_id: get_s(item, "subscription_id"),
        status: get_s(item, "dunning_status").unwrap_or_else(|| "open".into()),
        failures: get_n(item, "failures").unwrap_or(0),
        first_failed_at: get_n(item, "first_failed_at").unwrap_or(0),
        next_payment_attempt: get_n(item, "next_payment_attempt"),
        taken,
        cards_tried: set_of(item, CARDS_TRIED),
        amount_remaining: get_n(item, "amount_remaining").unwrap_or(0),
        currency: get_s(item, "currency").unwrap_or_default(),
        hosted_invoice_url: get_s(item, "hosted_invoice_url"),
    })
}

/// What a failed condition on the invoice item means for `step` (or a card, when `set` is
/// the cards tried): recorded before, or the case is not as required any more.
fn judged(old: Option<&Item>, set: &str, member: &str) -> Recorded {
    match old {
        Some(o) if set_of(o, set).contains(member) => Recorded::AlreadyTaken,
        _ => Recorded::CaseChanged,
    }
}

impl DunningStore for DynamoDbDunningStore {
    async fn cases(&self) -> Result<Vec<CaseRecord>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .store
                .client
                .query()
                .table_name(&self.store.table)
                .index_name(DUNNING_INDEX)
                .key_condition_expression("#case = :case")
                .expression_attribute_names("#case", DUNNING_INDEX_KEY)
                .expression_attribute_values(":case", s(DUNNING_INDEX_VALUE))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| {
                    StoreError::Retryable(anyhow::Error::new(e).context("reading dunning cases"))
                })?;
            out.extend(page.items().iter().filter_map(case_from));
            match page.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return Ok(out),
            }
        }
    }

    async fn cards(&self, account: &AccountId) -> Result<Cards, StoreError> {
        let item = self.store.get(account_key(account)).await?;
        Ok(item
            .map(|i| Cards {
                customer: get_s(&i, "customer_card"),
                subscription: get_s(&i, "sub_card"),
            })
            .unwrap_or_default())
    }

    async fn record_step(
        &self,
        case: &CaseRecord,
        step: Step,
        now: i64,
    ) -> Result<Recorded, StoreError> {
        let mut e = Expr::default();
        e.add(TAKEN, AttributeValue::Ss(vec![step.as_str().to_owned()]))
            .name("dunning_status")
            .value(":step", s(step.as_str()));
        let required = if step == Step::Reactivate {
            // The last thing a closed case does: it leaves the index with it.
            e.remove(DUNNING_INDEX_KEY)
                .value(":paid", s("paid"))
                .value(":voided", s("voided"));
            "#dunning_status IN (:paid, :voided)"
        } else {
            e.value(":open", s("open"));
            "#dunning_status = :open"
        };
        let condition = format!(
            "attribute_exists(pk) AND {required} \
             AND (attribute_not_exists(#{TAKEN}) OR NOT contains(#{TAKEN}, :step))"
        );
        let mut ops = vec![(
            Some(0),
            Op::update(
                invoice_key(&case.account, &case.invoice_id),
                e,
                Some(condition),
                Judge::Retry,
            ),
        )];
        if let Some(how) = restriction_of(step) {
            let set = match how {
                Restriction::Downgraded => DOWNGRADED_FOR,
                Restriction::Suspended => SUSPENDED_FOR,
            };
            let mut a = Expr::default();
            a.add(set, AttributeValue::Ss(vec![case.invoice_id.clone()]));
            ops.push((
                Some(1),
                Op::update(account_key(&case.account), a, None, Judge::Retry),
            ));
        }
        if let Some(name) = step.notification() {
            let note = Notification {
                id: case.notification_id(name)?.as_str().to_owned(),
                name,
                detail: case.notification_detail(),
            };
            ops.push((Some(2), outbox_op(&case.account, &note, now)));
        }
        let written = self
            .store
            .transact_guarded(ops, CONFLICT_ATTEMPTS, "recording a dunning step")
            .await?;
        Ok(match written {
            Guarded::Written => Recorded::Taken,
            Guarded::FirstRefused(old) => judged(old.as_ref(), TAKEN, step.as_str()),
        })
    }

    async fn record_card(&self, case: &CaseRecord, card: &str) -> Result<Recorded, StoreError> {
        let result = self
            .store
            .client
            .update_item()
            .table_name(&self.store.table)
            .set_key(Some(invoice_key(&case.account, &case.invoice_id)))
            .update_expression("ADD #tried :cards")
            .condition_expression(
                "attribute_exists(pk) AND #status = :open \
                 AND (attribute_not_exists(#tried) OR NOT contains(#tried, :card))",
            )
            .expression_attribute_names("#tried", CARDS_TRIED)
            .expression_attribute_names("#status", "dunning_status")
            .expression_attribute_values(":cards", AttributeValue::Ss(vec![card.to_owned()]))
            .expression_attribute_values(":card", s(card))
            .expression_attribute_values(":open", s("open"))
            .return_values_on_condition_check_failure(
                aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
            )
            .send()
            .await;
        match result {
            Ok(_) => Ok(Recorded::Taken),
            Err(SdkError::ServiceError(se)) if se.err().is_conditional_check_failed_exception() => {
                let old = match se.err() {
                    aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException(c) => c.item().cloned(),
                    _ => None,
                };
                Ok(judged(old.as_ref(), CARDS_TRIED, card))
            }
            Err(e) => Err(StoreError::Retryable(
                anyhow::Error::new(e).context("recording a card tried"),
            )),
        }
    }

    async fn settle(&self, case: &CaseRecord) -> Result<bool, StoreError> {
        let update = self
            .store
            .client
            .update_item()
            .table_name(&self.store.table)
            .set_key(Some(invoice_key(&case.account, &case.invoice_id)))
            .update_expression("REMOVE #case")
            .condition_expression("attribute_exists(pk) AND #status <> :open")
            .expression_attribute_names("#case", DUNNING_INDEX_KEY)
            .expression_attribute_names("#status", "dunning_status")
            .expression_attribute_values(":open", s("open"))
            .send()
            .await;
        written(
            update,
            |e| e.is_conditional_check_failed_exception(),
            "settling a dunning case",
        )
    }
}
