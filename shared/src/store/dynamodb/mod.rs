//! The billing store on DynamoDB: one table, `pk`/`sk` strings, one module per aggregate.
//!
//! | item | pk | sk | module |
//! |---|---|---|---|
//! | processed-event marker | `EVENT#{event id}` | `EVENT` | `events` |
//! | account (customer, contact, subscription, credits) | `ACCOUNT#{account id}` | `ACCOUNT` | `accounts` |
//! | a subscription that ended | `ACCOUNT#{account id}` | `ENDED#{subscription id}` | `accounts` |
//! | customer → account link | `CUSTOMER#{customer id}` | `CUSTOMER` | `accounts` |
//! | invoice and its dunning case | `ACCOUNT#{account id}` | `INVOICE#{invoice id}` | `invoices` |
//! | credit grant (ledger entry) or a refund awaiting it | `ACCOUNT#{account id}` | `CREDIT#{payment intent}` | `credits` |
//! | usage: records, per-period totals, holds, the outbox | see the module | | `usage` |
//! | (the invoice item) in the `DunningCases` index while its case needs the dunning function | | | `dunning` |
//! | a period's meter report state | `ACCOUNT#{account id}` | `REPORT#{period start}` | `metering` |
//!
//! `apply` is one `TransactWriteItems`: the marker (`attribute_not_exists`) and every write's
//! operations, merged per item, each with the condition that restates its rule from
//! `crate::billing`. A failed condition cancels all of it; the cancellation reason says which
//! item lost, and its old image (or, where DynamoDB did not return one, one read) says why.

mod accounts;
mod credits;
mod dunning;
mod events;
mod invoices;
mod item;
mod metering;
mod outbox;
mod topup;
mod usage;

pub use dunning::DynamoDbDunningStore;
pub use invoices::{DUNNING_INDEX, DUNNING_INDEX_KEY};
pub use metering::DynamoDbMeteringStore;
pub use outbox::{DynamoDbOutboxStore, notification_id_of_pk};
pub use topup::DynamoDbTopupStore;
pub use usage::{DynamoDbUsageStore, Snapshot};

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use anyhow::Context;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;

use aws_sdk_dynamodb::types::AttributeValue;

use self::item::{
    Expr, Item, Judge, Op, account_key, account_pk, get_n, get_s, link_key, marker_key, n,
    parked_key, s, stripe_setup_key,
};
use super::{
    AccountView, ApplyResult, BillingStore, EventRecord, InvoiceView, NO_ACCOUNT, PARKED_TTL_SECS,
    ParkResult, ParkedEvent, StoreError, StripePrices, WriteMode,
};
use crate::billing::ordering::{SubscriptionVersion, judge, judge_subscription};
use crate::billing::{Verdict, Write};
use crate::ids::{AccountId, StripeEventId};

/// Attempts for a call DynamoDB refuses for load or conflict, with jittered exponential backoff.
const MAX_ATTEMPTS: u32 = 5;

#[derive(Debug, Clone)]
pub struct DynamoDbBillingStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

/// How a guarded transaction ended (`transact_guarded`).
enum Guarded {
    Written,
    /// The first operation's condition failed: nothing was written.
    FirstRefused(Option<Item>),
}

fn backoff(attempt: u32) -> Duration {
    // 25 ms, 50 ms, 100 ms, ... with full jitter, so retries of concurrent invocations spread out.
    let ceiling = 25u64 << attempt.min(6);
    let random = RandomState::new().hash_one(attempt);
    Duration::from_millis(random % (ceiling + 1))
}

fn is_retryable_code(code: &str) -> bool {
    matches!(
        code,
        "TransactionConflict"
            | "ThrottlingError"
            | "ProvisionedThroughputExceeded"
            | "RequestLimitExceeded"
    )
}

/// What a failed condition means, from the item's old image.
fn verdict(rule: &Judge, old: Option<&Item>, created: i64) -> Verdict {
    match rule {
        Judge::Retry => Verdict::Apply,
        Judge::Stale => Verdict::Stale,
        Judge::Version(attr) => judge(old.and_then(|o| get_n(o, attr)), created),
        Judge::Subscription { id, status } => {
            let stored = old.and_then(accounts::stored_subscription);
            let stored = stored
                .as_ref()
                .map(|(id, status, version)| SubscriptionVersion {
                    id,
                    status: *status,
                    version: *version,
                });
            let incoming = SubscriptionVersion {
                id,
                status: *status,
                version: created,
            };
            // Whether it ended before is the `ENDED#` check's own verdict.
            judge_subscription(stored, incoming, false)
        }
        Judge::Grant => match old {
            Some(o) if o.contains_key("credits") => Verdict::Stale,
            Some(o) => match get_n::<u64>(o, "refunded") {
                Some(amount_refunded) => Verdict::RefundedBeforeGrant { amount_refunded },
                None => Verdict::Apply,
            },
            None => Verdict::Apply,
        },
        Judge::PendingRefund => match old {
            Some(o) if o.contains_key("credits") => Verdict::Apply,
            _ => Verdict::Stale,
        },
        Judge::Parked => match old {
            Some(o) if o.contains_key("pending") => Verdict::ParkedEvents,
            _ => Verdict::Apply,
        },
    }
}

impl DynamoDbBillingStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    fn retryable_read(e: &aws_sdk_dynamodb::error::SdkError<impl std::fmt::Debug>) -> bool {
        matches!(e, SdkError::TimeoutError(_) | SdkError::DispatchFailure(_))
    }

    async fn get(&self, key: Item) -> Result<Option<Item>, StoreError> {
        let mut attempt = 0;
        loop {
            match self
                .client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(key.clone()))
                .consistent_read(true)
                .send()
                .await
            {
                Ok(out) => return Ok(out.item),
                Err(e) => {
                    let retryable = Self::retryable_read(&e)
                        || e.as_service_error().is_some_and(|se| {
                            se.is_provisioned_throughput_exceeded_exception()
                                || se.is_request_limit_exceeded()
                                || se.is_internal_server_error()
                        });
                    attempt += 1;
                    if retryable && attempt < MAX_ATTEMPTS {
                        tokio::time::sleep(backoff(attempt)).await;
                        continue;
                    }
                    let err = anyhow::Error::new(e).context("reading from DynamoDB");
                    return Err(if retryable {
                        StoreError::Retryable(err)
                    } else {
                        StoreError::Other(err)
                    });
                }
            }
        }
    }

    /// The account item and its credit ledger, in one query (`ACCOUNT` sorts before `CREDIT#`).
    async fn ledger(&self, account: &AccountId) -> Result<credits::Ledger, StoreError> {
        let items = self
            .query_all(
                "pk = :pk AND sk BETWEEN :from AND :to",
                vec![
                    (":pk", s(account_pk(account))),
                    (":from", s("ACCOUNT")),
                    (":to", s("CREDIT$")),
                ],
                "reading the ledger",
            )
            .await?;
        let mut ledger = credits::Ledger {
            balance: 0,
            entries: Vec::new(),
        };
        for i in items {
            match get_s(&i, "sk").as_deref() {
                Some("ACCOUNT") => ledger.balance = get_n(&i, "credits").unwrap_or(0),
                Some(sk) if sk.starts_with("CREDIT#") => ledger.entries.push(i),
                _ => {}
            }
        }
        Ok(ledger)
    }

    /// Every item a query matches, page after page, read consistently.
    async fn query_all(
        &self,
        condition: &str,
        values: Vec<(&str, AttributeValue)>,
        what: &'static str,
    ) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression(condition)
                .set_exclusive_start_key(start.take());
            for (name, value) in &values {
                query = query.expression_attribute_values(*name, value.clone());
            }
            let page = query
                .send()
                .await
                .map_err(|e| StoreError::Retryable(anyhow::Error::new(e).context(what)))?;
            out.extend(page.items().iter().cloned());
            match page.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return Ok(out),
            }
        }
    }

    /// The operations for one write (a refund reads the ledger first, to compute what to take).
    async fn ops_for(
        &self,
        account: &AccountId,
        w: &Write,
        created: i64,
        mode: WriteMode,
    ) -> Result<Vec<Op>, StoreError> {
        Ok(match w {
            Write::LinkCustomer { customer_id } => vec![accounts::link(account, customer_id)],
            Write::AccountCustomer { customer_id, email } => {
                vec![accounts::account_customer(
                    account,
                    customer_id,
                    email.as_deref(),
                )]
            }
            Write::CustomerProfile {
                customer_id,
                email,
                name,
                deleted,
                card,
            } => vec![accounts::profile(
                account,
                &accounts::Profile {
                    customer_id,
                    email: email.as_deref(),
                    name: name.as_deref(),
                    deleted: *deleted,
                    card: card.as_deref(),
                },
                created,
                mode,
            )],
            Write::Subscription(sub) => accounts::subscription(account, sub, created, mode),
            Write::SubscriptionEnded { subscription_id } => {
                vec![accounts::subscription_ended(
                    account,
                    subscription_id,
                    created,
                )]
            }
            Write::Invoice(record, dunning) => {
                invoices::invoice(account, record, dunning, created, mode)
            }
            Write::GrantCredits {
                grant_id,
                pack_id,
                credits,
                amount_paid,
                refunded_before,
            } => credits::grant(
                account,
                &credits::GrantArgs {
                    grant_id,
                    pack_id,
                    credits: *credits,
                    amount_paid: *amount_paid,
                    refunded_before: *refunded_before,
                },
                created,
            ),
            Write::EndTopupClaim { seq } => {
                let mut e = Expr::default();
                topup::end_claim(&mut e, *seq);
                vec![Op::update(account_key(account), e, None, Judge::Retry)]
            }
            Write::ClawBack {
                grant_id,
                amount_refunded,
            } => {
                let ledger = self.ledger(account).await?;
                credits::refund(account, grant_id, *amount_refunded, &ledger, created)
            }
        })
    }

    /// Writes `ops` in one transaction whose first operation carries the deciding condition,
    /// retrying DynamoDB's transaction conflicts up to `attempts` times. That condition failing
    /// is an answer (with the item as it is, where the operation asks for it); anything else
    /// is an error to retry later.
    async fn transact_guarded(
        &self,
        ops: Vec<(Option<usize>, Op)>,
        attempts: u32,
        what: &'static str,
    ) -> Result<Guarded, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let items = self.transact_items(ops.clone())?;
            let result = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .send()
                .await;
            let err = match result {
                Ok(_) => return Ok(Guarded::Written),
                Err(err) => err,
            };
            if let SdkError::ServiceError(se) = &err
                && let TransactWriteItemsError::TransactionCanceledException(cancel) = se.err()
            {
                let reasons = cancel.cancellation_reasons();
                if let Some(first) = reasons.first()
                    && first.code() == Some("ConditionalCheckFailed")
                {
                    return Ok(Guarded::FirstRefused(first.item().cloned()));
                }
                let conflict = reasons
                    .iter()
                    .any(|r| r.code() == Some("TransactionConflict"));
                if conflict && attempt < attempts {
                    tokio::time::sleep(backoff(attempt)).await;
                    continue;
                }
            }
            return Err(StoreError::Retryable(anyhow::Error::new(err).context(what)));
        }
    }

    fn transact_items(
        &self,
        ops: Vec<(Option<usize>, Op)>,
    ) -> Result<Vec<aws_sdk_dynamodb::types::TransactWriteItem>, StoreError> {
        Ok(item::merge(ops)?
            .into_iter()
            .map(|m| m.into_transact_item(&self.table))
            .collect::<anyhow::Result<Vec<_>>>()?)
    }

    async fn try_apply(
        &self,
        event: &EventRecord,
        outcome: &'static str,
        writes: &[Write],
        mode: WriteMode,
    ) -> Result<ApplyResult, StoreError> {
        let mut ops = vec![(None, events::marker(event, outcome))];
        if !writes.is_empty() {
            let account = event.account.as_ref().context("writes need an account")?;
            for (i, w) in writes.iter().enumerate() {
                for op in self.ops_for(account, w, event.created, mode).await? {
                    ops.push((Some(i), op));
                }
            }
        }
        let merged = item::merge(ops)?;
        let mut items = Vec::with_capacity(merged.len());
        let mut parts = Vec::with_capacity(merged.len());
        for m in merged {
            parts.push((m.key.clone(), m.parts.clone()));
            items.push(m.into_transact_item(&self.table)?);
        }
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let err = match result {
            Ok(_) => return Ok(ApplyResult::Applied),
            Err(e) => e,
        };
        let SdkError::ServiceError(service) = &err else {
            return Err(StoreError::Retryable(
                anyhow::Error::new(err).context("TransactWriteItems"),
            ));
        };
        match service.err() {
            TransactWriteItemsError::TransactionCanceledException(cancel) => {
                let reasons = cancel.cancellation_reasons();
                for ((key, judges), reason) in parts.iter().zip(reasons) {
                    if reason.code() != Some("ConditionalCheckFailed") {
                        continue;
                    }
                    if judges.iter().any(|(index, _)| index.is_none()) {
                        return Ok(ApplyResult::Duplicate); // the marker exists
                    }
                    let old = match reason.item() {
                        Some(item) => Some(item.clone()),
                        None => self.get(key.clone()).await?,
                    };
                    for (index, rule) in judges {
                        // Only the marker has no write, and a failed marker returned above.
                        let Some(index) = *index else { continue };
                        match verdict(rule, old.as_ref(), event.created) {
                            Verdict::Apply => continue,
                            verdict => return Ok(ApplyResult::Conflict { index, verdict }),
                        }
                    }
                    // Every rule accepts the write, yet its condition failed: the item changed
                    // under us. Try again.
                    return Err(StoreError::Retryable(anyhow::anyhow!(
                        "event {} met a concurrent change",
                        event.event_id
                    )));
                }
                let codes: Vec<&str> = reasons.iter().map(|r| r.code().unwrap_or("None")).collect();
                let message = format!("transaction cancelled: {codes:?}");
                if codes.iter().any(|c| is_retryable_code(c)) {
                    Err(StoreError::Retryable(anyhow::anyhow!(message)))
                } else {
                    Err(StoreError::Other(anyhow::anyhow!(message)))
                }
            }
            TransactWriteItemsError::TransactionInProgressException(_)
            | TransactWriteItemsError::ProvisionedThroughputExceededException(_)
            | TransactWriteItemsError::RequestLimitExceeded(_)
            | TransactWriteItemsError::ThrottlingException(_)
            | TransactWriteItemsError::InternalServerError(_) => Err(StoreError::Retryable(
                anyhow::Error::new(err).context("TransactWriteItems"),
            )),
            _ => Err(StoreError::Other(
                anyhow::Error::new(err).context("TransactWriteItems"),
            )),
        }
    }
}

impl BillingStore for DynamoDbBillingStore {
    async fn apply(
        &self,
        event: &EventRecord,
        outcome: &'static str,
        writes: &[Write],
        mode: WriteMode,
    ) -> Result<ApplyResult, StoreError> {
        let mut attempt = 0;
        loop {
            match self.try_apply(event, outcome, writes, mode).await {
                Err(StoreError::Retryable(e)) => {
                    attempt += 1;
                    if attempt >= MAX_ATTEMPTS {
                        return Err(StoreError::Retryable(e));
                    }
                    tracing::debug!(attempt, error = %e, "retrying the transaction");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    async fn customer_account(&self, customer_id: &str) -> Result<Option<AccountId>, StoreError> {
        Ok(self
            .get(link_key(customer_id))
            .await?
            .and_then(|i| get_s(&i, "account_id"))
            .and_then(|a| AccountId::parse(&a).ok()))
    }

    async fn event_outcome(&self, event_id: &StripeEventId) -> Result<Option<String>, StoreError> {
        Ok(self
            .get(marker_key(event_id))
            .await?
            .and_then(|i| get_s(&i, "outcome")))
    }

    async fn account(&self, account: &AccountId) -> Result<Option<AccountView>, StoreError> {
        Ok(self
            .get(account_key(account))
            .await?
            .map(|item| accounts::view(account, &item)))
    }

    async fn park(
        &self,
        event: &EventRecord,
        customer_id: &str,
        raw: &[u8],
    ) -> Result<ParkResult, StoreError> {
        let mut attrs = Item::new();
        attrs.insert("raw".into(), AttributeValue::B(raw.to_vec().into()));
        attrs.insert("created".into(), n(event.created));
        attrs.insert("expires_at".into(), n(event.processed_at + PARKED_TTL_SECS));
        let parked = Op::put(
            parked_key(customer_id, event.event_id.as_str()),
            attrs,
            Expr::default(),
            None,
            Judge::Retry,
        );
        let mut e = Expr::default();
        e.add(
            "pending",
            AttributeValue::Ss(vec![event.event_id.to_string()]),
        )
        .name("account_id");
        let waiting = Op::update(
            link_key(customer_id),
            e,
            Some("attribute_not_exists(#account_id)".into()),
            Judge::Retry,
        );
        let ops = vec![
            (None, events::marker(event, NO_ACCOUNT)),
            (Some(0), parked),
            (Some(1), waiting),
        ];
        let items = self.transact_items(ops)?;
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(ParkResult::Parked),
            Err(err) => {
                if let Some(TransactWriteItemsError::TransactionCanceledException(cancel)) =
                    err.as_service_error()
                {
                    let failed: Vec<bool> = cancel
                        .cancellation_reasons()
                        .iter()
                        .map(|r| r.code() == Some("ConditionalCheckFailed"))
                        .collect();
                    if failed.first() == Some(&true) {
                        return Ok(ParkResult::Duplicate);
                    }
                    if failed.get(2) == Some(&true) {
                        return Ok(ParkResult::Linked);
                    }
                }
                Err(StoreError::Retryable(
                    anyhow::Error::new(err).context("parking an event"),
                ))
            }
        }
    }

    async fn parked(&self, customer_id: &str) -> Result<Vec<ParkedEvent>, StoreError> {
        // The customer item lists what is parked; each parked item holds one event. One that
        // expired is still listed, without its payload, so that it is cleared.
        let items = self
            .query_all(
                "pk = :pk",
                vec![(":pk", s(format!("CUSTOMER#{customer_id}")))],
                "reading parked events",
            )
            .await?;
        let mut ids: Vec<String> = Vec::new();
        let mut found: HashMap<String, (i64, Vec<u8>)> = HashMap::new();
        for i in &items {
            let sk = get_s(i, "sk").unwrap_or_default();
            if sk == "CUSTOMER" {
                if let Some(AttributeValue::Ss(p)) = i.get("pending") {
                    ids.extend(p.iter().cloned());
                }
            } else if let Some(id) = sk.strip_prefix("PENDING#") {
                let raw = i
                    .get("raw")
                    .and_then(|v| v.as_b().ok())
                    .map(|b| b.as_ref().to_vec())
                    .unwrap_or_default();
                found.insert(id.to_owned(), (get_n(i, "created").unwrap_or(0), raw));
            }
        }
        for id in found.keys() {
            if !ids.contains(id) {
                ids.push(id.clone());
            }
        }
        let mut out: Vec<ParkedEvent> = ids
            .into_iter()
            .filter_map(|id| {
                let event_id = StripeEventId::parse(&id).ok()?;
                let (created, raw) = match found.remove(&id) {
                    Some((created, raw)) => (created, Some(raw)),
                    None => (0, None),
                };
                Some(ParkedEvent {
                    event_id,
                    created,
                    raw,
                })
            })
            .collect();
        super::sort_parked(&mut out);
        Ok(out)
    }

    async fn unpark(&self, customer_id: &str, event_id: &StripeEventId) -> Result<(), StoreError> {
        let mut e = Expr::default();
        e.delete("pending", AttributeValue::Ss(vec![event_id.to_string()]));
        let items = self.transact_items(vec![
            (
                Some(0),
                Op::delete(parked_key(customer_id, event_id.as_str())),
            ),
            (
                Some(1),
                Op::update(link_key(customer_id), e, None, Judge::Retry),
            ),
        ])?;
        self.client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
            .map_err(|e| {
                StoreError::Retryable(anyhow::Error::new(e).context("unparking an event"))
            })?;
        Ok(())
    }

    async fn link(&self, customer_id: &str, account: &AccountId) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(link_key(customer_id)))
            .update_expression("SET account_id = :a")
            .expression_attribute_values(":a", s(account.as_str()))
            .send()
            .await
            .map_err(|e| {
                StoreError::Retryable(anyhow::Error::new(e).context("linking a customer"))
            })?;
        Ok(())
    }

    async fn stripe_prices(&self) -> Result<Option<StripePrices>, StoreError> {
        let Some(item) = self.get(stripe_setup_key()).await? else {
            return Ok(None);
        };
        let prices = match item.get("prices") {
            Some(AttributeValue::M(m)) => m
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_s().ok()?.clone())))
                .collect(),
            _ => StripePrices::new(),
        };
        Ok(Some(prices))
    }

    async fn invoices(&self, account: &AccountId) -> Result<Vec<InvoiceView>, StoreError> {
        let items = self
            .query_all(
                "pk = :pk AND begins_with(sk, :prefix)",
                vec![(":pk", s(account_pk(account))), (":prefix", s("INVOICE#"))],
                "listing invoices",
            )
            .await?;
        let mut out: Vec<InvoiceView> = items.iter().map(invoices::view).collect();
        super::sort_invoices(&mut out);
        Ok(out)
    }
}
