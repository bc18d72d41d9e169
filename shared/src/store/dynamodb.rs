//! The billing store on DynamoDB (one table, `pk`/`sk` strings).
//!
//! | item | pk | sk |
//! |---|---|---|
//! | processed-event marker | `EVENT#{event id}` | `EVENT` |
//! | account (profile, subscription, credits) | `ACCOUNT#{account id}` | `ACCOUNT` |
//! | invoice and its dunning case | `ACCOUNT#{account id}` | `INVOICE#{invoice id}` |
//! | credit grant (ledger entry) | `ACCOUNT#{account id}` | `CREDIT#{payment intent}` |
//! | customer → account link | `CUSTOMER#{customer id}` | `CUSTOMER` |
//!
//! `apply` is one `TransactWriteItems`: the marker (`attribute_not_exists`) and every write,
//! each with its ordering condition. A failed condition cancels all of it; the cancellation
//! reason says which item lost, and its old image (or, where DynamoDB did not return one, one
//! read) says whether it lost to newer state or tied.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use anyhow::Context;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};

use super::{
    AccountView, ApplyResult, BillingStore, DunningView, EventRecord, InvoiceView, MARKER_TTL_SECS,
    StoreError, SubscriptionView, WriteMode,
};
use crate::billing::credits::clawback;
use crate::billing::ordering::{SubscriptionVersion, judge, judge_subscription};
use crate::billing::{DunningChange, InvoiceRecord, SubscriptionStatus, Verdict, Write};
use crate::catalog::FREE_PLAN;
use crate::ids::{AccountId, StripeEventId};

type Item = HashMap<String, AttributeValue>;

/// Attempts for a call DynamoDB refuses for load or conflict, with jittered exponential backoff.
const MAX_ATTEMPTS: u32 = 5;

#[derive(Debug, Clone)]
pub struct DynamoDbBillingStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn get_s(item: &Item, k: &str) -> Option<String> {
    item.get(k).and_then(|v| v.as_s().ok()).cloned()
}

fn get_n<T: std::str::FromStr>(item: &Item, k: &str) -> Option<T> {
    item.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

fn get_bool(item: &Item, k: &str) -> Option<bool> {
    item.get(k).and_then(|v| v.as_bool().ok()).copied()
}

fn key(pk: String, sk: &str) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

fn account_key(a: &AccountId) -> Item {
    key(format!("ACCOUNT#{a}"), "ACCOUNT")
}

fn marker_key(e: &StripeEventId) -> Item {
    key(format!("EVENT#{e}"), "EVENT")
}

fn link_key(customer_id: &str) -> Item {
    key(format!("CUSTOMER#{customer_id}"), "CUSTOMER")
}

fn invoice_key(a: &AccountId, invoice_id: &str) -> Item {
    key(format!("ACCOUNT#{a}"), &format!("INVOICE#{invoice_id}"))
}

fn grant_key(a: &AccountId, grant_id: &str) -> Item {
    key(format!("ACCOUNT#{a}"), &format!("CREDIT#{grant_id}"))
}

/// An update expression built clause by clause, with its names and values.
#[derive(Default)]
struct Expr {
    set: Vec<String>,
    remove: Vec<String>,
    add: Vec<String>,
    names: HashMap<String, String>,
    values: Item,
}

impl Expr {
    fn set(&mut self, attr: &str, value: AttributeValue) -> &mut Self {
        self.names.insert(format!("#{attr}"), attr.to_owned());
        self.values.insert(format!(":{attr}"), value);
        self.set.push(format!("#{attr} = :{attr}"));
        self
    }

    fn set_opt(&mut self, attr: &str, value: Option<AttributeValue>) -> &mut Self {
        match value {
            Some(v) => self.set(attr, v),
            None => {
                self.names.insert(format!("#{attr}"), attr.to_owned());
                self.remove.push(format!("#{attr}"));
                self
            }
        }
    }

    fn value(&mut self, name: &str, value: AttributeValue) -> &mut Self {
        self.values.insert(name.to_owned(), value);
        self
    }

    fn update_expression(&self) -> String {
        let mut parts = Vec::new();
        if !self.set.is_empty() {
            parts.push(format!("SET {}", self.set.join(", ")));
        }
        if !self.remove.is_empty() {
            parts.push(format!("REMOVE {}", self.remove.join(", ")));
        }
        if !self.add.is_empty() {
            parts.push(format!("ADD {}", self.add.join(", ")));
        }
        parts.join(" ")
    }

    fn into_update(
        self,
        table: &str,
        key: Item,
        condition: Option<String>,
    ) -> anyhow::Result<TransactWriteItem> {
        let mut u = Update::builder()
            .table_name(table)
            .set_key(Some(key))
            .update_expression(self.update_expression())
            .set_condition_expression(condition)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if !self.names.is_empty() {
            u = u.set_expression_attribute_names(Some(self.names));
        }
        if !self.values.is_empty() {
            u = u.set_expression_attribute_values(Some(self.values));
        }
        Ok(TransactWriteItem::builder()
            .update(u.build().context("building an update")?)
            .build())
    }
}

/// `<` for newer-only writes, `<=` when breaking a tie with Stripe's current object.
fn cmp(mode: WriteMode) -> &'static str {
    match mode {
        WriteMode::Newer => "<",
        WriteMode::TieBreak => "<=",
    }
}

/// What a transaction item stands for, to read its cancellation reason.
#[derive(Clone)]
enum Slot {
    Marker,
    Write(usize),
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

impl DynamoDbBillingStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
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
                    let retryable = e
                        .as_service_error()
                        .map(|se| {
                            se.is_provisioned_throughput_exceeded_exception()
                                || se.is_request_limit_exceeded()
                                || se.is_internal_server_error()
                        })
                        .unwrap_or(false);
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

    fn marker(&self, event: &EventRecord, outcome: &str) -> anyhow::Result<TransactWriteItem> {
        let mut item = marker_key(&event.event_id);
        item.insert("event_type".into(), s(&event.event_type));
        item.insert("created".into(), n(event.created));
        item.insert("outcome".into(), s(outcome));
        item.insert("processed_at".into(), n(event.processed_at));
        item.insert("expires_at".into(), n(event.processed_at + MARKER_TTL_SECS));
        if let Some(a) = &event.account {
            item.insert("account_id".into(), s(a.as_str()));
        }
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .context("building the marker")?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// The transaction items for one write (a clawback reads first, to compute what to take).
    async fn items_for(
        &self,
        account: &AccountId,
        w: &Write,
        created: i64,
        mode: WriteMode,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let op = cmp(mode);
        let mut out = Vec::new();
        match w {
            Write::LinkCustomer { customer_id } => {
                let mut item = link_key(customer_id);
                item.insert("account_id".into(), s(account.as_str()));
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .build()
                    .context("building a link")?;
                out.push(TransactWriteItem::builder().put(put).build());
            }
            Write::CustomerProfile {
                customer_id,
                email,
                name,
                deleted,
            } => {
                let mut e = Expr::default();
                e.set("customer_id", s(customer_id))
                    .set_opt("email", email.clone().map(s))
                    .set_opt("customer_name", name.clone().map(s))
                    .set("customer_deleted", AttributeValue::Bool(*deleted))
                    .set("customer_version", n(created));
                let cond = format!(
                    "attribute_not_exists(#customer_version) OR #customer_version {op} :customer_version"
                );
                out.push(e.into_update(&self.table, account_key(account), Some(cond))?);
            }
            Write::Subscription(sub) => {
                let mut e = Expr::default();
                e.set("sub_id", s(&sub.subscription_id))
                    .set("sub_status", s(sub.status.as_str()))
                    .set("plan", s(sub.plan.as_str()))
                    .set("effective_plan", s(sub.effective_plan.as_str()))
                    .set("included_units", n(sub.included_units))
                    .set("period_start", n(sub.period_start))
                    .set("period_end", n(sub.period_end))
                    .set(
                        "cancel_at_period_end",
                        AttributeValue::Bool(sub.cancel_at_period_end),
                    )
                    .set("sub_version", n(created))
                    .value(":canceled", s(SubscriptionStatus::Canceled.as_str()))
                    .value(
                        ":expired",
                        s(SubscriptionStatus::IncompleteExpired.as_str()),
                    );
                // The same rules as `judge_subscription`, as a condition (see its documentation).
                let ended = "#sub_status IN (:canceled, :expired)";
                let cond = if sub.status.is_terminal() {
                    format!(
                        "attribute_not_exists(#sub_id) \
                         OR (#sub_id = :sub_id AND #sub_version {op} :sub_version) \
                         OR (#sub_id <> :sub_id AND {ended} AND #sub_version < :sub_version)"
                    )
                } else {
                    format!(
                        "attribute_not_exists(#sub_id) \
                         OR (#sub_id = :sub_id AND #sub_version {op} :sub_version AND NOT {ended}) \
                         OR (#sub_id <> :sub_id AND ({ended} OR #sub_version < :sub_version))"
                    )
                };
                out.push(e.into_update(&self.table, account_key(account), Some(cond))?);
            }
            Write::Invoice(record, dunning) => {
                let mut e = Expr::default();
                e.set("invoice_id", s(&record.invoice_id))
                    .set_opt("number", record.number.clone().map(s))
                    .set("invoice_status", s(&record.status))
                    .set("amount_due", n(record.amount_due))
                    .set("amount_paid", n(record.amount_paid))
                    .set("amount_remaining", n(record.amount_remaining))
                    .set("currency", s(&record.currency))
                    .set_opt(
                        "hosted_invoice_url",
                        record.hosted_invoice_url.clone().map(s),
                    )
                    .set_opt("invoice_pdf", record.invoice_pdf.clone().map(s))
                    .set("period_start", n(record.period_start))
                    .set("period_end", n(record.period_end))
                    .set_opt("subscription_id", record.subscription_id.clone().map(s))
                    .set("version", n(created));
                match dunning {
                    DunningChange::None => {}
                    DunningChange::Failed {
                        attempt_count,
                        next_payment_attempt,
                    } => {
                        e.set("dunning_status", s("open"))
                            .set("failures", n(attempt_count))
                            .set_opt("next_payment_attempt", next_payment_attempt.map(n));
                        e.names
                            .insert("#first_failed_at".into(), "first_failed_at".into());
                        e.values.insert(":first_failed_at".into(), n(created));
                        e.set.push(
                            "#first_failed_at = if_not_exists(#first_failed_at, :first_failed_at)"
                                .into(),
                        );
                    }
                    DunningChange::Closed { reason } => {
                        e.set("dunning_status", s(*reason))
                            .set_opt("next_payment_attempt", None);
                    }
                }
                let cond = format!("attribute_not_exists(#version) OR #version {op} :version");
                out.push(e.into_update(
                    &self.table,
                    invoice_key(account, &record.invoice_id),
                    Some(cond),
                )?);
            }
            Write::GrantCredits {
                grant_id,
                pack_id,
                credits,
                amount_paid,
            } => {
                let mut item = grant_key(account, grant_id);
                item.insert("pack_id".into(), s(pack_id));
                item.insert("credits".into(), n(credits));
                item.insert("amount_paid".into(), n(amount_paid));
                item.insert("clawed_back".into(), n(0));
                item.insert("granted_at".into(), n(created));
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item))
                    .condition_expression("attribute_not_exists(pk)")
                    .return_values_on_condition_check_failure(
                        ReturnValuesOnConditionCheckFailure::AllOld,
                    )
                    .build()
                    .context("building a grant")?;
                out.push(TransactWriteItem::builder().put(put).build());
                let mut e = Expr::default();
                e.names.insert("#credits".into(), "credits".into());
                e.values.insert(":credits".into(), n(credits));
                e.add.push("#credits :credits".into());
                out.push(e.into_update(&self.table, account_key(account), None)?);
            }
            Write::ClawBack {
                grant_id,
                amount_refunded,
            } => {
                let Some(grant) = self.get(grant_key(account, grant_id)).await? else {
                    return Ok(out); // not a credit pack: nothing to take back
                };
                let balance = self
                    .get(account_key(account))
                    .await?
                    .and_then(|a| get_n::<u64>(&a, "credits"))
                    .unwrap_or(0);
                let before: u64 = get_n(&grant, "clawed_back").unwrap_or(0);
                let (take, after) = clawback(
                    get_n(&grant, "credits").unwrap_or(0),
                    get_n(&grant, "amount_paid").unwrap_or(0),
                    *amount_refunded,
                    before,
                    balance,
                );
                if after == before {
                    return Ok(out);
                }
                // Both conditions hold the read values steady: a concurrent change makes this a retry.
                let mut g = Expr::default();
                g.set("clawed_back", n(after)).value(":before", n(before));
                out.push(g.into_update(
                    &self.table,
                    grant_key(account, grant_id),
                    Some("#clawed_back = :before".into()),
                )?);
                let mut a = Expr::default();
                a.names.insert("#credits".into(), "credits".into());
                a.values.insert(":take".into(), n(take));
                a.set.push("#credits = #credits - :take".into());
                out.push(a.into_update(
                    &self.table,
                    account_key(account),
                    Some("#credits >= :take".into()),
                )?);
            }
        }
        Ok(out)
    }

    /// Why write `index` lost: newer state (stale), a same-second tie, or a concurrent change.
    async fn verdict(
        &self,
        account: &AccountId,
        w: &Write,
        created: i64,
        old: Option<Item>,
    ) -> Result<Option<Verdict>, StoreError> {
        let read = |key: Item| async move { self.get(key).await };
        Ok(match w {
            Write::Subscription(sub) => {
                let old = match old {
                    Some(o) => Some(o),
                    None => read(account_key(account)).await?,
                };
                let stored = old.as_ref().and_then(|o| {
                    Some((
                        get_s(o, "sub_id")?,
                        SubscriptionStatus::parse(&get_s(o, "sub_status")?)?,
                        get_n::<i64>(o, "sub_version")?,
                    ))
                });
                let stored_ref = stored
                    .as_ref()
                    .map(|(id, status, version)| SubscriptionVersion {
                        id,
                        status: *status,
                        version: *version,
                    });
                let incoming = SubscriptionVersion {
                    id: &sub.subscription_id,
                    status: sub.status,
                    version: created,
                };
                Some(judge_subscription(stored_ref, incoming))
            }
            Write::CustomerProfile { .. } => {
                let old = match old {
                    Some(o) => Some(o),
                    None => read(account_key(account)).await?,
                };
                Some(judge(
                    old.and_then(|o| get_n(&o, "customer_version")),
                    created,
                ))
            }
            Write::Invoice(record, _) => {
                let old = match old {
                    Some(o) => Some(o),
                    None => read(invoice_key(account, &record.invoice_id)).await?,
                };
                Some(judge(old.and_then(|o| get_n(&o, "version")), created))
            }
            Write::GrantCredits { .. } => Some(Verdict::Stale),
            // A link has no condition; a clawback's only fail on a concurrent change: retry.
            Write::LinkCustomer { .. } | Write::ClawBack { .. } => None,
        })
    }

    async fn try_apply(
        &self,
        event: &EventRecord,
        outcome: &'static str,
        writes: &[Write],
        mode: WriteMode,
    ) -> Result<ApplyResult, StoreError> {
        let mut items = vec![self.marker(event, outcome)?];
        let mut slots = vec![Slot::Marker];
        if !writes.is_empty() {
            let account = event.account.as_ref().context("writes need an account")?;
            for (i, w) in writes.iter().enumerate() {
                for item in self.items_for(account, w, event.created, mode).await? {
                    items.push(item);
                    slots.push(Slot::Write(i));
                }
            }
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
            return Err(StoreError::Other(
                anyhow::Error::new(err).context("TransactWriteItems"),
            ));
        };
        match service.err() {
            TransactWriteItemsError::TransactionCanceledException(cancel) => {
                let reasons = cancel.cancellation_reasons();
                for (slot, reason) in slots.iter().zip(reasons) {
                    let code = reason.code().unwrap_or("None");
                    if code == "ConditionalCheckFailed" {
                        match slot {
                            Slot::Marker => return Ok(ApplyResult::Duplicate),
                            Slot::Write(index) => {
                                let account =
                                    event.account.as_ref().context("writes need an account")?;
                                return match self
                                    .verdict(
                                        account,
                                        &writes[*index],
                                        event.created,
                                        reason.item().cloned(),
                                    )
                                    .await?
                                {
                                    // The condition failed, yet the rules say it should pass:
                                    // the item changed under us. Try again.
                                    Some(Verdict::Apply) | None => {
                                        Err(StoreError::Retryable(anyhow::anyhow!(
                                            "write {index} of event {} met a concurrent change",
                                            event.event_id
                                        )))
                                    }
                                    Some(verdict) => Ok(ApplyResult::Conflict {
                                        index: *index,
                                        verdict,
                                    }),
                                };
                            }
                        }
                    }
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
        let Some(item) = self.get(account_key(account)).await? else {
            return Ok(None);
        };
        let subscription = get_s(&item, "sub_id").map(|id| SubscriptionView {
            subscription_id: id,
            status: get_s(&item, "sub_status").unwrap_or_default(),
            plan: get_s(&item, "plan").unwrap_or_default(),
            period_start: get_n(&item, "period_start").unwrap_or_default(),
            period_end: get_n(&item, "period_end").unwrap_or_default(),
            cancel_at_period_end: get_bool(&item, "cancel_at_period_end").unwrap_or(false),
        });
        Ok(Some(AccountView {
            account_id: account.as_str().to_owned(),
            customer_id: get_s(&item, "customer_id"),
            email: get_s(&item, "email"),
            name: get_s(&item, "customer_name"),
            plan: get_s(&item, "effective_plan").unwrap_or_else(|| FREE_PLAN.to_owned()),
            included_units: get_n(&item, "included_units"),
            subscription,
            credits: get_n(&item, "credits").unwrap_or(0),
        }))
    }

    async fn invoices(&self, account: &AccountId) -> Result<Vec<InvoiceView>, StoreError> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", s(format!("ACCOUNT#{account}")))
                .expression_attribute_values(":prefix", s("INVOICE#"))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .context("listing invoices")?;
            for i in page.items() {
                out.push(InvoiceView {
                    record: InvoiceRecord {
                        invoice_id: get_s(i, "invoice_id").unwrap_or_default(),
                        number: get_s(i, "number"),
                        status: get_s(i, "invoice_status").unwrap_or_default(),
                        amount_due: get_n(i, "amount_due").unwrap_or_default(),
                        amount_paid: get_n(i, "amount_paid").unwrap_or_default(),
                        amount_remaining: get_n(i, "amount_remaining").unwrap_or_default(),
                        currency: get_s(i, "currency").unwrap_or_default(),
                        hosted_invoice_url: get_s(i, "hosted_invoice_url"),
                        invoice_pdf: get_s(i, "invoice_pdf"),
                        period_start: get_n(i, "period_start").unwrap_or_default(),
                        period_end: get_n(i, "period_end").unwrap_or_default(),
                        subscription_id: get_s(i, "subscription_id"),
                    },
                    dunning: get_n::<u32>(i, "failures").map(|failures| DunningView {
                        status: get_s(i, "dunning_status").unwrap_or_else(|| "open".into()),
                        failures,
                        first_failed_at: get_n(i, "first_failed_at").unwrap_or_default(),
                        next_payment_attempt: get_n(i, "next_payment_attempt"),
                    }),
                });
            }
            match page.last_evaluated_key {
                Some(k) => start = Some(k),
                None => break,
            }
        }
        super::sort_invoices(&mut out);
        Ok(out)
    }
}
