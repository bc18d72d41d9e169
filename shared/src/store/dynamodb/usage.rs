//! Usage on DynamoDB: the ledger on the account item, and what a usage commit writes with it.
//!
//! | item | pk | sk |
//! |---|---|---|
//! | account: the ledger beside the processor's plan and credits | `ACCOUNT#{account}` | `ACCOUNT` |
//! | one use, once per request id (its first answer) | `USAGE#{account}#{request id}` | `USAGE` |
//! | a period's usage of one model | `ACCOUNT#{account}` | `PERIOD#{start, 12 digits}#MODEL#{model}` |
//! | a reservation, once per request id | `HOLD#{reservation id}` | `HOLD` |
//! | a notification to deliver | `OUTBOX#{notification id}` | `OUTBOX` |
//!
//! A commit is one `TransactWriteItems`: the record (`attribute_not_exists`), the account
//! (conditioned on every attribute the decision read being as loaded), the totals (`ADD`), and
//! any notifications. Records live under their own keys so that the account's partition carries
//! only the account and its totals. On a failed account condition DynamoDB returns the account
//! as it is now (`ALL_OLD`), so deciding again costs no extra read.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnConsumedCapacity};

use super::DynamoDbBillingStore;
use super::invoices::{DOWNGRADED_FOR, SUSPENDED_FOR};
use super::item::{
    Expr, Item, Judge, Op, account_key, account_pk, get_bool, get_n, get_s, key, n, s,
};
use super::topup::{AT_FLIGHT, AT_ON, AT_REV, TOPUP_PENDING, topup_key};
use crate::billing::SubscriptionStatus;
use crate::catalog::FREE_PLAN;
use crate::ids::{AccountId, RequestId, ReservationId};
use crate::store::StoreError;
use crate::store::usage::{
    Committed, HoldRecord, HoldStatus, ModelTotals, Notification, StoredTerms, UsageAccount,
    UsageChange, UsageRecord, UsageStore, sort_totals,
};
use crate::usage::ledger::{Counter, Covered, Hold, Ledger};
use crate::usage::period::Period;
use crate::usage::request::Tokens;
use crate::usage::topup::{AutoTopup, TopupClaim, TopupSettings};

/// Records outlive Stripe's 35-day window by far: a duplicate a year later still finds its first answer.
const RECORD_TTL_SECS: i64 = 400 * 86_400;
const OUTBOX_TTL_SECS: i64 = 90 * 86_400;
/// Attempts of one commit that DynamoDB cancels for a conflicting transaction in flight.
const CONFLICT_ATTEMPTS: u32 = 5;

/// The account attributes a usage decision reads; a commit requires each to be as loaded.
/// Auto top-up's settings and claims change `at_rev`; the customer and its cards are what a
/// top-up would charge.
const WATCHED: [&str; 14] = [
    "effective_plan",
    "included_units",
    "sub_status",
    "period_start",
    "period_end",
    SUSPENDED_FOR,
    "credits",
    "last_topup",
    "u_rev",
    DOWNGRADED_FOR,
    AT_REV,
    "customer_id",
    "customer_card",
    "sub_card",
];

/// Where `credits`, `u_rev` and `at_rev` sit in `WATCHED` (checked by a test).
const CREDITS_AT: usize = 6;
const U_REV_AT: usize = 8;
const AT_REV_AT: usize = 10;

/// The account as loaded: the watched attributes, or `None` when there was no item.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot(Option<Vec<Option<AttributeValue>>>);

#[derive(Debug, Clone)]
pub struct DynamoDbUsageStore {
    store: DynamoDbBillingStore,
}

impl DynamoDbUsageStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            store: DynamoDbBillingStore::new(client, table),
        }
    }
}

fn record_key(account: &AccountId, request: &RequestId) -> Item {
    key(format!("USAGE#{account}#{request}"), "USAGE")
}

fn hold_key(reservation: &ReservationId) -> Item {
    key(format!("HOLD#{reservation}"), "HOLD")
}

fn totals_sk(period_start: i64, model: &str) -> String {
    format!("PERIOD#{period_start:012}#MODEL#{model}")
}

fn map_n(m: &HashMap<String, AttributeValue>, k: &str) -> u64 {
    m.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn map_i(m: &HashMap<String, AttributeValue>, k: &str) -> i64 {
    m.get(k)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn counter_from(v: Option<&AttributeValue>) -> Option<Counter> {
    let m = v?.as_m().ok()?;
    Some(Counter {
        start: map_i(m, "s"),
        end: map_i(m, "e"),
        included_used: map_n(m, "inc"),
        overage: map_n(m, "over"),
        uncovered: map_n(m, "unc"),
        notified: map_n(m, "ntf").min(u64::from(u8::MAX)) as u8,
    })
}

fn counter_to(c: &Counter) -> AttributeValue {
    AttributeValue::M(HashMap::from([
        ("s".to_owned(), n(c.start)),
        ("e".to_owned(), n(c.end)),
        ("inc".to_owned(), n(c.included_used)),
        ("over".to_owned(), n(c.overage)),
        ("unc".to_owned(), n(c.uncovered)),
        ("ntf".to_owned(), n(c.notified)),
    ]))
}

fn holds_to(holds: &BTreeMap<ReservationId, Hold>) -> AttributeValue {
    AttributeValue::M(
        holds
            .iter()
            .map(|(id, h)| {
                (
                    id.as_str().to_owned(),
                    AttributeValue::M(HashMap::from([
                        ("u".to_owned(), n(h.units)),
                        ("x".to_owned(), n(h.expires_at)),
                    ])),
                )
            })
            .collect(),
    )
}

/// Whether a dunning case restricts the account this way (its set names an unsettled invoice).
pub(super) fn restricted(item: &Item, set: &str) -> bool {
    item.get(set)
        .and_then(|v| v.as_ss().ok())
        .is_some_and(|invoices| !invoices.is_empty())
}

/// The account item as a usage decision needs it.
fn account_from(item: Option<&Item>) -> UsageAccount<Snapshot> {
    let Some(item) = item else {
        return UsageAccount {
            version: Snapshot(None),
            terms: StoredTerms::default(),
            ledger: Ledger::default(),
        };
    };
    let granting = get_s(item, "sub_status")
        .and_then(|st| SubscriptionStatus::parse(&st))
        .is_some_and(SubscriptionStatus::grants_plan);
    let period = match (get_n(item, "period_start"), get_n(item, "period_end")) {
        (Some(start), Some(end)) if granting => Some(Period { start, end }),
        _ => None,
    };
    let downgraded = restricted(item, DOWNGRADED_FOR);
    let holds = item
        .get("holds")
        .and_then(|v| v.as_m().ok())
        .map(|m| {
            m.iter()
                .filter_map(|(id, h)| {
                    let h = h.as_m().ok()?;
                    Some((
                        ReservationId::parse(id).ok()?,
                        Hold {
                            units: map_n(h, "u"),
                            expires_at: map_i(h, "x"),
                        },
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    UsageAccount {
        version: Snapshot(Some(
            WATCHED.iter().map(|a| item.get(*a).cloned()).collect(),
        )),
        terms: StoredTerms {
            // Dunning's downgrade: the free tier's terms until the invoice is settled.
            plan: if downgraded {
                Some(FREE_PLAN.to_owned())
            } else {
                get_s(item, "effective_plan")
            },
            included_units: if downgraded {
                None
            } else {
                get_n(item, "included_units")
            },
            period,
            suspended: restricted(item, SUSPENDED_FOR),
        },
        ledger: Ledger {
            credits: get_n(item, "credits").unwrap_or(0),
            last_topup: get_n(item, "last_topup").unwrap_or(0),
            low_notified: get_bool(item, "low_sent").unwrap_or(false),
            blocked_notified: get_bool(item, "blocked_sent").unwrap_or(false),
            current: counter_from(item.get("u_cur")),
            previous: counter_from(item.get("u_prev")),
            holds,
            topup: auto_topup_from(item),
        },
    }
}

/// Auto top-up as the account item holds it (`topup.rs` in this folder writes the settings
/// and settles claims).
pub(super) fn auto_topup_from(item: &Item) -> AutoTopup {
    let settings = get_bool(item, AT_ON)
        .unwrap_or(false)
        .then(|| TopupSettings {
            threshold: get_n(item, "at_threshold").unwrap_or(0),
            pack: get_s(item, "at_pack").unwrap_or_default(),
            amount: get_n(item, "at_amount").unwrap_or(0),
            credits: get_n(item, "at_credits").unwrap_or(0),
            monthly_cap: get_n(item, "at_cap").unwrap_or(0),
        });
    AutoTopup {
        settings,
        seq: get_n(item, "at_seq").unwrap_or(0),
        in_flight: item
            .get(AT_FLIGHT)
            .and_then(|v| v.as_ss().ok())
            .and_then(|seqs| seqs.iter().filter_map(|q| q.parse().ok()).max()),
        month: get_n(item, "at_month").unwrap_or(0),
        spent: get_n(item, "at_spent").unwrap_or(0),
        declined_card: get_s(item, "at_declined_card"),
        customer: get_s(item, "customer_id"),
        card: get_s(item, "customer_card").or_else(|| get_s(item, "sub_card")),
    }
}

/// The claimed top-up, for the top-up function (the table's stream brings it the insert).
fn topup_op(account: &AccountId, claim: &TopupClaim) -> Op {
    let mut attrs = Item::new();
    attrs.insert("account_id".into(), s(account.as_str()));
    attrs.insert("seq".into(), n(claim.seq));
    attrs.insert("pack".into(), s(&claim.pack));
    attrs.insert("amount".into(), n(claim.amount));
    attrs.insert("credits".into(), n(claim.credits));
    attrs.insert("customer".into(), s(&claim.customer));
    attrs.insert("card".into(), s(&claim.card));
    attrs.insert("claimed_at".into(), n(claim.claimed_at));
    attrs.insert("status".into(), s(TOPUP_PENDING));
    attrs.insert("expires_at".into(), n(claim.claimed_at + RECORD_TTL_SECS));
    let mut e = Expr::default();
    e.name("pk");
    Op::put(
        topup_key(account, claim.seq),
        attrs,
        e,
        Some("attribute_not_exists(#pk)".into()),
        Judge::Retry,
    )
}

/// `report_due`'s value while an account has overage not yet reported: the key of the sparse
/// `ReportDue` index the meter reporter reads.
pub(super) const REPORT_DUE: &str = "due";

/// The account's new ledger, if it is still as loaded; `overage` marks it due for reporting.
fn account_op(
    account: &AccountId,
    expected: &Snapshot,
    ledger: &Ledger,
    overage: bool,
    claimed: bool,
) -> Op {
    let mut e = Expr::default();
    let condition = match &expected.0 {
        None => {
            e.name("pk");
            "attribute_not_exists(#pk)".to_owned()
        }
        Some(values) => WATCHED
            .iter()
            .zip(values)
            .map(|(attr, value)| {
                e.name(attr);
                match value {
                    None => format!("attribute_not_exists(#{attr})"),
                    Some(v) => {
                        e.value(&format!(":was_{attr}"), v.clone());
                        format!("#{attr} = :was_{attr}")
                    }
                }
            })
            .collect::<Vec<_>>()
            .join(" AND "),
    };
    e.set("credits", n(ledger.credits))
        .set("u_rev", n(revision(expected) + 1))
        .set("holds", holds_to(&ledger.holds))
        .set("low_sent", AttributeValue::Bool(ledger.low_notified))
        .set(
            "blocked_sent",
            AttributeValue::Bool(ledger.blocked_notified),
        )
        .set("account_id", s(account.as_str()));
    if overage {
        e.set("report_due", s(REPORT_DUE));
    }
    if claimed && let Some(seq) = ledger.topup.in_flight {
        e.set("at_seq", n(ledger.topup.seq))
            .set("at_month", n(ledger.topup.month))
            .set("at_spent", n(ledger.topup.spent))
            .add(AT_FLIGHT, AttributeValue::Ss(vec![seq.to_string()]))
            .set(AT_REV, n(at_revision(expected) + 1));
    }
    match &ledger.current {
        Some(c) => e.set("u_cur", counter_to(c)),
        None => e.remove("u_cur"),
    };
    match &ledger.previous {
        Some(c) => e.set("u_prev", counter_to(c)),
        None => e.remove("u_prev"),
    };
    Op::update(account_key(account), e, Some(condition), Judge::Retry)
}

fn watched_n(expected: &Snapshot, at: usize) -> u64 {
    expected
        .0
        .as_ref()
        .and_then(|values| values[at].as_ref())
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn revision(expected: &Snapshot) -> u64 {
    watched_n(expected, U_REV_AT)
}

fn at_revision(expected: &Snapshot) -> u64 {
    watched_n(expected, AT_REV_AT)
}

/// The account's watched attributes once `ledger` is written over `expected`.
fn version_after(expected: &Snapshot, ledger: &Ledger, claimed: bool) -> Snapshot {
    let mut values = expected
        .0
        .clone()
        .unwrap_or_else(|| vec![None; WATCHED.len()]);
    values[CREDITS_AT] = Some(n(ledger.credits));
    values[U_REV_AT] = Some(n(revision(expected) + 1));
    if claimed {
        values[AT_REV_AT] = Some(n(at_revision(expected) + 1));
    }
    Snapshot(Some(values))
}

fn covered_attrs(attrs: &mut Item, c: &Covered) {
    attrs.insert("c_included".into(), n(c.included));
    attrs.insert("c_credits".into(), n(c.credits));
    attrs.insert("c_overage".into(), n(c.overage));
    attrs.insert("c_uncovered".into(), n(c.uncovered));
}

fn record_op(account: &AccountId, r: &UsageRecord) -> Op {
    let mut attrs = Item::new();
    attrs.insert("account_id".into(), s(account.as_str()));
    attrs.insert("request_id".into(), s(r.request.as_str()));
    attrs.insert("model".into(), s(&r.model));
    attrs.insert("input_tokens".into(), n(r.tokens.input));
    attrs.insert("output_tokens".into(), n(r.tokens.output));
    attrs.insert("cached_input_tokens".into(), n(r.tokens.cached_input));
    attrs.insert("reasoning_tokens".into(), n(r.tokens.reasoning));
    attrs.insert("units".into(), n(r.units));
    covered_attrs(&mut attrs, &r.covered);
    attrs.insert("period_start".into(), n(r.period.start));
    attrs.insert("period_end".into(), n(r.period.end));
    attrs.insert("at".into(), n(r.at));
    attrs.insert("recorded_at".into(), n(r.recorded_at));
    attrs.insert("rate_card".into(), s(&r.rate_card_version));
    if let Some(settled) = &r.settled {
        attrs.insert("reservation_id".into(), s(settled.as_str()));
    }
    attrs.insert("answer".into(), s(&r.answer));
    attrs.insert("expires_at".into(), n(r.recorded_at + RECORD_TTL_SECS));
    let mut e = Expr::default();
    e.name("pk");
    Op::put(
        record_key(account, &r.request),
        attrs,
        e,
        Some("attribute_not_exists(#pk)".into()),
        Judge::Stale,
    )
}

fn totals_op(account: &AccountId, r: &UsageRecord) -> Op {
    let mut e = Expr::default();
    e.set("model", s(&r.model))
        .set("period_start", n(r.period.start))
        .set("period_end", n(r.period.end))
        .add("requests", n(1))
        .add("units", n(r.units))
        .add("c_included", n(r.covered.included))
        .add("c_credits", n(r.covered.credits))
        .add("c_overage", n(r.covered.overage))
        .add("c_uncovered", n(r.covered.uncovered))
        .add("input_tokens", n(r.tokens.input))
        .add("output_tokens", n(r.tokens.output))
        .add("cached_input_tokens", n(r.tokens.cached_input))
        .add("reasoning_tokens", n(r.tokens.reasoning));
    Op::update(
        key(account_pk(account), &totals_sk(r.period.start, &r.model)),
        e,
        None,
        Judge::Retry,
    )
}

fn hold_status_op(account: &AccountId, reservation: &ReservationId, status: HoldStatus) -> Op {
    let mut e = Expr::default();
    e.set("status", s(status.as_str()))
        .value(":held", s(HoldStatus::Held.as_str()))
        .value(":account", s(account.as_str()))
        .name("account_id");
    Op::update(
        hold_key(reservation),
        e,
        Some("#status = :held AND #account_id = :account".into()),
        Judge::Stale,
    )
}

fn hold_put_op(account: &AccountId, h: &HoldRecord) -> Op {
    let mut attrs = Item::new();
    attrs.insert("account_id".into(), s(account.as_str()));
    attrs.insert("request_id".into(), s(h.request.as_str()));
    attrs.insert("units".into(), n(h.units));
    attrs.insert("hold_expires_at".into(), n(h.expires_at));
    attrs.insert("status".into(), s(h.status.as_str()));
    attrs.insert("answer".into(), s(&h.answer));
    attrs.insert("expires_at".into(), n(h.expires_at + RECORD_TTL_SECS));
    let mut e = Expr::default();
    e.name("pk");
    Op::put(
        hold_key(&h.reservation),
        attrs,
        e,
        Some("attribute_not_exists(#pk)".into()),
        Judge::Stale,
    )
}

fn hold_from(item: &Item) -> Option<HoldRecord> {
    let pk = get_s(item, "pk")?;
    Some(HoldRecord {
        reservation: ReservationId::parse(pk.strip_prefix("HOLD#")?).ok()?,
        request: RequestId::parse(&get_s(item, "request_id")?).ok()?,
        units: get_n(item, "units")?,
        expires_at: get_n(item, "hold_expires_at")?,
        status: HoldStatus::parse(&get_s(item, "status")?)?,
        answer: get_s(item, "answer").unwrap_or_default(),
    })
}

pub(super) fn outbox_op(account: &AccountId, note: &Notification, now: i64) -> Op {
    let mut attrs = Item::new();
    attrs.insert("id".into(), s(&note.id));
    attrs.insert("name".into(), s(note.name));
    attrs.insert("account_id".into(), s(account.as_str()));
    attrs.insert("detail".into(), s(&note.detail));
    attrs.insert("status".into(), s("pending"));
    attrs.insert("created_at".into(), n(now));
    attrs.insert("expires_at".into(), n(now + OUTBOX_TTL_SECS));
    // Written once: the flags on the account decide when a notification is due, and its id is
    // stable, so a second write could only repeat the same content.
    Op::put(
        key(format!("OUTBOX#{}", note.id), "OUTBOX"),
        attrs,
        Expr::default(),
        None,
        Judge::Retry,
    )
}

impl UsageStore for DynamoDbUsageStore {
    type Version = Snapshot;

    fn never_written(&self) -> UsageAccount<Snapshot> {
        account_from(None)
    }

    async fn load(&self, account: &AccountId) -> Result<UsageAccount<Snapshot>, StoreError> {
        Ok(account_from(
            self.store.get(account_key(account)).await?.as_ref(),
        ))
    }

    async fn commit(
        &self,
        account: &AccountId,
        expected: &Snapshot,
        ledger: &Ledger,
        change: &UsageChange,
        notifications: &[Notification],
    ) -> Result<Committed<Snapshot>, StoreError> {
        // The change's record first, the account second: their positions name them in a
        // cancellation.
        let mut ops = Vec::with_capacity(5 + notifications.len());
        let claim = match change {
            UsageChange::Track(r) => r.topup.as_ref(),
            _ => None,
        };
        let recorded_at = match change {
            UsageChange::Track(r) => {
                ops.push(record_op(account, r));
                ops.push(account_op(
                    account,
                    expected,
                    ledger,
                    r.covered.overage > 0,
                    claim.is_some(),
                ));
                ops.push(totals_op(account, r));
                if let Some(settled) = &r.settled {
                    ops.push(hold_status_op(account, settled, HoldStatus::Settled));
                }
                r.recorded_at
            }
            UsageChange::Reserve(h) => {
                ops.push(hold_put_op(account, h));
                ops.push(account_op(account, expected, ledger, false, false));
                h.expires_at
            }
            UsageChange::Release {
                reservation,
                status,
            } => {
                ops.push(hold_status_op(account, reservation, *status));
                ops.push(account_op(account, expected, ledger, false, false));
                0
            }
        };
        for note in notifications {
            ops.push(outbox_op(account, note, recorded_at));
        }
        if let Some(claim) = claim {
            ops.push(topup_op(account, claim));
        }
        let table = &self.store.table;
        let items = ops
            .into_iter()
            .map(|op| {
                super::item::merge(vec![(None, op)])
                    .and_then(|mut m| m.remove(0).into_transact_item(table))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut attempt = 0;
        loop {
            let err = match self
                .store
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                // What a use costs in write units, in the debug log (`make bench` reads it).
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
            {
                Ok(out) => {
                    let units: f64 = out
                        .consumed_capacity()
                        .iter()
                        .filter_map(|c| c.capacity_units())
                        .sum();
                    tracing::debug!(account_id = %account, write_units = units, "usage committed");
                    return Ok(Committed::Done(version_after(
                        expected,
                        ledger,
                        claim.is_some(),
                    )));
                }
                Err(e) => e,
            };
            let SdkError::ServiceError(service) = &err else {
                return Err(StoreError::Retryable(
                    anyhow::Error::new(err).context("TransactWriteItems"),
                ));
            };
            let TransactWriteItemsError::TransactionCanceledException(cancel) = service.err()
            else {
                let retryable = matches!(
                    service.err(),
                    TransactWriteItemsError::TransactionInProgressException(_)
                        | TransactWriteItemsError::ProvisionedThroughputExceededException(_)
                        | TransactWriteItemsError::RequestLimitExceeded(_)
                        | TransactWriteItemsError::ThrottlingException(_)
                        | TransactWriteItemsError::InternalServerError(_)
                );
                let e = anyhow::Error::new(err).context("TransactWriteItems");
                return Err(if retryable {
                    StoreError::Retryable(e)
                } else {
                    StoreError::Other(e)
                });
            };
            let reasons = cancel.cancellation_reasons();
            let failed = |i: usize| {
                reasons
                    .get(i)
                    .filter(|r| r.code() == Some("ConditionalCheckFailed"))
            };
            // A recorded request is a duplicate whatever else changed.
            if let Some(reason) = failed(0) {
                let old = reason.item();
                return Ok(match change {
                    UsageChange::Track(_) | UsageChange::Reserve(_) => Committed::Duplicate(
                        old.and_then(|o| get_s(o, "answer")).unwrap_or_default(),
                    ),
                    // Another account's reservation is no reservation of this one.
                    UsageChange::Release { .. } => Committed::NotHeld(
                        old.filter(|o| get_s(o, "account_id").as_deref() == Some(account.as_str()))
                            .and_then(hold_from),
                    ),
                });
            }
            // The account moved on: decide again from where it is now.
            if let Some(reason) = failed(1) {
                let fresh = match reason.item() {
                    Some(item) => account_from(Some(item)),
                    None => self.load(account).await?,
                };
                return Ok(Committed::Changed(Box::new(fresh)));
            }
            if let Some(reason) = failed(3).filter(|_| matches!(change, UsageChange::Track(_))) {
                return Ok(Committed::NotHeld(reason.item().and_then(hold_from)));
            }
            let codes: Vec<&str> = reasons.iter().map(|r| r.code().unwrap_or("None")).collect();
            attempt += 1;
            if codes.iter().any(|c| super::is_retryable_code(c)) {
                if attempt < CONFLICT_ATTEMPTS {
                    tokio::time::sleep(super::backoff(attempt)).await;
                    continue;
                }
                return Err(StoreError::Retryable(anyhow::anyhow!(
                    "usage commit cancelled: {codes:?}"
                )));
            }
            return Err(StoreError::Other(anyhow::anyhow!(
                "usage commit cancelled: {codes:?}"
            )));
        }
    }

    async fn totals(&self, account: &AccountId) -> Result<Vec<ModelTotals>, StoreError> {
        let items = self
            .store
            .query_all(
                "pk = :pk AND begins_with(sk, :period)",
                vec![(":pk", s(account_pk(account))), (":period", s("PERIOD#"))],
                "reading usage totals",
            )
            .await?;
        let mut out: Vec<ModelTotals> = items
            .iter()
            .map(|i| ModelTotals {
                period: Period {
                    start: get_n(i, "period_start").unwrap_or(0),
                    end: get_n(i, "period_end").unwrap_or(0),
                },
                model: get_s(i, "model").unwrap_or_default(),
                requests: get_n(i, "requests").unwrap_or(0),
                units: get_n(i, "units").unwrap_or(0),
                covered: Covered {
                    included: get_n(i, "c_included").unwrap_or(0),
                    credits: get_n(i, "c_credits").unwrap_or(0),
                    overage: get_n(i, "c_overage").unwrap_or(0),
                    uncovered: get_n(i, "c_uncovered").unwrap_or(0),
                },
                tokens: Tokens {
                    input: get_n(i, "input_tokens").unwrap_or(0),
                    output: get_n(i, "output_tokens").unwrap_or(0),
                    cached_input: get_n(i, "cached_input_tokens").unwrap_or(0),
                    reasoning: get_n(i, "reasoning_tokens").unwrap_or(0),
                },
            })
            .collect();
        sort_totals(&mut out);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::{AT_REV, AT_REV_AT, CREDITS_AT, U_REV_AT, WATCHED};

    #[test]
    fn the_positions_written_after_a_commit_name_the_right_attributes() {
        assert_eq!(WATCHED[CREDITS_AT], "credits");
        assert_eq!(WATCHED[U_REV_AT], "u_rev");
        assert_eq!(WATCHED[AT_REV_AT], AT_REV);
    }
}
