//! The meter reporter's items: a period's report state, beside the period's usage totals.
//!
//! | item | pk | sk |
//! |---|---|---|
//! | what has been reported of a period: confirmed units, next sequence, the claim in flight | `ACCOUNT#{account}` | `REPORT#{period start, 12 digits}` |
//!
//! Accounts with overage to report carry `report_due` = `due` (set by the usage function's
//! commit), which keys the sparse `ReportDue` index; the reporter clears it once everything is
//! confirmed, on the condition that no usage arrived meanwhile (`u_rev`). A period's report item
//! carries `report_due` = `reconcile` from its first claim until reconciliation finds Stripe's
//! total, the confirmed total and the recorded overage in agreement.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::AttributeValue;

use super::DynamoDbBillingStore;
use super::item::{Item, account_key, account_pk, get_n, get_s, key, n, s};
use super::usage::REPORT_DUE;
use crate::ids::AccountId;
use crate::metering::{Claim, PeriodFigures, ReportState};
use crate::store::StoreError;
use crate::store::metering::{MeteringStore, PeriodReport, ReportInput};
use crate::usage::period::Period;

const INDEX: &str = "ReportDue";
/// `report_due` on a period's report item: reconciliation has yet to agree with it.
const RECONCILE_DUE: &str = "reconcile";

#[derive(Debug, Clone)]
pub struct DynamoDbMeteringStore {
    store: DynamoDbBillingStore,
}

impl DynamoDbMeteringStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self {
            store: DynamoDbBillingStore::new(client, table),
        }
    }
}

fn report_key(account: &AccountId, period_start: i64) -> Item {
    key(account_pk(account), &format!("REPORT#{period_start:012}"))
}

fn claim_from(v: Option<&AttributeValue>) -> Option<Claim> {
    let m = v?.as_m().ok()?;
    let num = |k: &str| m.get(k)?.as_n().ok()?.parse::<i64>().ok();
    Some(Claim {
        seq: u64::try_from(num("seq")?).ok()?,
        value: u64::try_from(num("value")?).ok()?,
        identifier: m.get("id")?.as_s().ok()?.clone(),
        timestamp: num("ts")?,
    })
}

fn claim_to(c: &Claim) -> AttributeValue {
    AttributeValue::M(HashMap::from([
        ("seq".to_owned(), n(c.seq)),
        ("value".to_owned(), n(c.value)),
        ("id".to_owned(), s(&c.identifier)),
        ("ts".to_owned(), n(c.timestamp)),
    ]))
}

/// A conditional write's outcome: `Ok(false)` when only its condition failed.
pub(super) fn written<E: std::error::Error + Send + Sync + 'static>(
    result: Result<impl Sized, SdkError<E>>,
    condition_failed: impl Fn(&E) -> bool,
    what: &'static str,
) -> Result<bool, StoreError> {
    match result {
        Ok(_) => Ok(true),
        Err(SdkError::ServiceError(e)) if condition_failed(e.err()) => Ok(false),
        Err(e) => Err(StoreError::Retryable(anyhow::Error::new(e).context(what))),
    }
}

impl DynamoDbMeteringStore {
    /// The keys the `ReportDue` index holds under `value`, every page.
    async fn due_index(&self, value: &str) -> Result<Vec<Item>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .store
                .client
                .query()
                .table_name(&self.store.table)
                .index_name(INDEX)
                .key_condition_expression("report_due = :due")
                .expression_attribute_values(":due", s(value))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| {
                    StoreError::Retryable(anyhow::Error::new(e).context("reading the due index"))
                })?;
            out.extend(page.items().iter().cloned());
            match page.last_evaluated_key {
                Some(k) => start = Some(k),
                None => return Ok(out),
            }
        }
    }
}

impl MeteringStore for DynamoDbMeteringStore {
    async fn due_accounts(&self) -> Result<Vec<AccountId>, StoreError> {
        Ok(self
            .due_index(REPORT_DUE)
            .await?
            .iter()
            .filter(|i| get_s(i, "sk").as_deref() == Some("ACCOUNT"))
            .filter_map(|i| AccountId::parse(get_s(i, "pk")?.strip_prefix("ACCOUNT#")?).ok())
            .collect())
    }

    async fn reconcile_due(&self) -> Result<Vec<(AccountId, i64)>, StoreError> {
        Ok(self
            .due_index(RECONCILE_DUE)
            .await?
            .iter()
            .filter_map(|i| {
                let account = AccountId::parse(get_s(i, "pk")?.strip_prefix("ACCOUNT#")?).ok()?;
                let start = get_s(i, "sk")?.strip_prefix("REPORT#")?.parse().ok()?;
                Some((account, start))
            })
            .collect())
    }

    async fn mark_reconciled(
        &self,
        account: &AccountId,
        period_start: i64,
        figures: &PeriodFigures,
        agrees: bool,
        now: i64,
    ) -> Result<bool, StoreError> {
        let update = self
            .store
            .client
            .update_item()
            .table_name(&self.store.table)
            .set_key(Some(report_key(account, period_start)))
            .expression_attribute_names("#confirmed", "confirmed")
            .expression_attribute_names("#claim", "claim")
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":stripe", n(figures.stripe))
            .expression_attribute_values(":recorded", n(figures.recorded))
            .expression_attribute_values(":reported", n(figures.reported))
            .expression_attribute_values(":verdict", s(if agrees { "agrees" } else { "differs" }))
            // Only as it was read: a claim since then means the figures are already stale.
            .condition_expression("attribute_not_exists(#claim) AND #confirmed = :reported");
        // In agreement the period leaves the index; a later claim (late overage) puts it back.
        let set = "SET reconciled_at = :now, stripe_total = :stripe, recorded_total = :recorded, reconciled = :verdict";
        let update = if agrees {
            update
                .update_expression(format!("{set} REMOVE #due"))
                .expression_attribute_names("#due", "report_due")
        } else {
            update.update_expression(set)
        };
        written(
            update.send().await,
            |e| e.is_conditional_check_failed_exception(),
            "recording a reconciliation",
        )
    }

    async fn report_input(
        &self,
        account: &AccountId,
        since: i64,
    ) -> Result<ReportInput, StoreError> {
        let item = self.store.get(account_key(account)).await?;
        let items = self
            .store
            .query_all(
                "pk = :pk AND sk BETWEEN :from AND :to",
                vec![
                    (":pk", s(account_pk(account))),
                    (":from", s(format!("PERIOD#{since:012}"))),
                    (":to", s("REPORT#~")),
                ],
                "reading overage and report states",
            )
            .await?;
        let mut periods: BTreeMap<i64, PeriodReport> = BTreeMap::new();
        for i in &items {
            let sk = get_s(i, "sk").unwrap_or_default();
            if sk.starts_with("PERIOD#") {
                let (Some(start), Some(end)) = (get_n(i, "period_start"), get_n(i, "period_end"))
                else {
                    continue;
                };
                let p = periods.entry(start).or_insert_with(|| PeriodReport {
                    period: Period { start, end },
                    overage: 0,
                    state: ReportState::default(),
                });
                p.period.end = p.period.end.max(end);
                p.overage += get_n::<u64>(i, "c_overage").unwrap_or(0);
            } else if let Some(start) = sk.strip_prefix("REPORT#").and_then(|x| x.parse().ok()) {
                if start < since {
                    continue;
                }
                let end = get_n(i, "period_end").unwrap_or(start);
                let p = periods.entry(start).or_insert_with(|| PeriodReport {
                    period: Period { start, end },
                    overage: 0,
                    state: ReportState::default(),
                });
                p.state = ReportState {
                    confirmed: get_n(i, "confirmed").unwrap_or(0),
                    next_seq: get_n(i, "next_seq").unwrap_or(0),
                    in_flight: claim_from(i.get("claim")),
                };
            }
        }
        Ok(ReportInput {
            customer_id: item.as_ref().and_then(|i| get_s(i, "customer_id")),
            usage_rev: item.as_ref().and_then(|i| get_n(i, "u_rev")).unwrap_or(0),
            periods: periods.into_values().collect(),
        })
    }

    async fn claim(
        &self,
        account: &AccountId,
        period: Period,
        expected: &ReportState,
        claim: &Claim,
    ) -> Result<bool, StoreError> {
        // The state as `expected` said: no claim in flight, the same sequence and total.
        let mut update = self
            .store
            .client
            .update_item()
            .table_name(&self.store.table)
            .set_key(Some(report_key(account, period.start)))
            .update_expression(
                "SET #claim = :claim, #next_seq = :next, #confirmed = :confirmed, #period_end = :end, #due = :reconcile",
            )
            .expression_attribute_names("#due", "report_due")
            .expression_attribute_values(":reconcile", s(RECONCILE_DUE))
            .expression_attribute_names("#claim", "claim")
            .expression_attribute_names("#next_seq", "next_seq")
            .expression_attribute_names("#confirmed", "confirmed")
            .expression_attribute_names("#period_end", "period_end")
            .expression_attribute_values(":claim", claim_to(claim))
            .expression_attribute_values(":next", n(claim.seq + 1))
            .expression_attribute_values(":confirmed", n(expected.confirmed))
            .expression_attribute_values(":end", n(period.end));
        update = if expected.next_seq == 0 && expected.confirmed == 0 {
            update.condition_expression(
                "attribute_not_exists(#claim) AND attribute_not_exists(#next_seq)",
            )
        } else {
            update
                .condition_expression(
                    "attribute_not_exists(#claim) AND #next_seq = :seq AND #confirmed = :confirmed",
                )
                .expression_attribute_values(":seq", n(expected.next_seq))
        };
        written(
            update.send().await,
            |e| e.is_conditional_check_failed_exception(),
            "claiming a meter report",
        )
    }

    async fn confirm(
        &self,
        account: &AccountId,
        period: Period,
        claim: &Claim,
    ) -> Result<(), StoreError> {
        let result = self
            .store
            .client
            .update_item()
            .table_name(&self.store.table)
            .set_key(Some(report_key(account, period.start)))
            .update_expression("SET #confirmed = #confirmed + :value REMOVE #claim")
            .condition_expression("#claim.#id = :id")
            .expression_attribute_names("#confirmed", "confirmed")
            .expression_attribute_names("#claim", "claim")
            .expression_attribute_names("#id", "id")
            .expression_attribute_values(":value", n(claim.value))
            .expression_attribute_values(":id", s(&claim.identifier))
            .send()
            .await;
        // A failed condition: confirmed before (or never claimed); either way nothing to add.
        written(
            result,
            |e| e.is_conditional_check_failed_exception(),
            "confirming a meter report",
        )
        .map(|_| ())
    }

    async fn clear_due(
        &self,
        account: &AccountId,
        input: &ReportInput,
    ) -> Result<bool, StoreError> {
        let mut update = self
            .store
            .client
            .update_item()
            .table_name(&self.store.table)
            .set_key(Some(account_key(account)))
            .update_expression("REMOVE #due")
            .expression_attribute_names("#due", "report_due")
            .expression_attribute_names("#rev", "u_rev");
        update = if input.usage_rev == 0 {
            update.condition_expression("attribute_not_exists(#rev)")
        } else {
            update
                .condition_expression("#rev = :rev")
                .expression_attribute_values(":rev", n(input.usage_rev))
        };
        written(
            update.send().await,
            |e| e.is_conditional_check_failed_exception(),
            "clearing the due mark",
        )
    }
}
