//! One reconciliation run: for each period whose report is not yet known to agree, once the
//! period has closed (and settled), compare three figures:
//! - the overage the usage function recorded (the period's per-model totals),
//! - the units Stripe confirmed to the reporter,
//! - what Stripe's meter sums for the customer over the period's whole minutes
//!   (`shared::metering::summary_window`): one event-summaries call per account and period.
//!
//! In agreement, the period leaves the index and is never read again. A difference is logged
//! as an alarm with the account, the period and every figure, and the run fails (the errors
//! alarm); the period stays in the index and is compared again next run until someone resolves
//! it. Periods still open, or with a claim in flight, cost no Stripe call.

use std::time::{Duration, Instant};

use shared::catalog::{Catalog, CatalogMismatch};
use shared::ids::AccountId;
use shared::metering::{PeriodFigures, Reconciled, SETTLE_SECS, reconcile, summary_window};
use shared::retry::full_jitter;
use shared::store::StoreError;
use shared::store::metering::MeteringStore;
use shared::stripe::meter::{MeterConfig, MeterError, MeterReadApi};
use shared::usage::period::Period;
use tracing::{error, info, warn};

/// Attempts per Stripe read when it answers 429 or 5xx.
const ATTEMPTS: u32 = 5;
/// A run starts no period this close to its deadline; the rest waits for the next run.
const DEADLINE_MARGIN: Duration = Duration::from_secs(5);

/// A period whose figures differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub account: AccountId,
    pub period: Period,
    pub figures: PeriodFigures,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// Periods compared with Stripe (one summary call each).
    pub checked: usize,
    pub agreed: usize,
    /// Periods not closed long enough, or with a claim in flight: next run.
    pub not_yet: usize,
    pub differences: Vec<Difference>,
    /// Periods with reports but no Stripe customer on the account any more.
    pub no_customer: usize,
    /// Periods left for the next run (Stripe kept failing, or the deadline came).
    pub left: usize,
    /// Periods whose summary Stripe refused (a deleted customer, say): each needs a person.
    pub refused: usize,
}

impl RunSummary {
    pub fn needs_attention(&self) -> bool {
        !self.differences.is_empty() || self.no_customer > 0 || self.refused > 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no active Stripe meter has the event name {0:?}: check METER_EVENT_NAME")]
    NoMeter(String),
    #[error("Stripe: {0}")]
    Stripe(MeterError),
}

pub struct Reconciler<S, M> {
    store: S,
    meter: M,
    config: MeterConfig,
    retry_base: Duration,
}

/// "Now" for a run: the scheduled event's `time` (so a run can be replayed for a given moment),
/// or `None` for an invocation without one.
pub fn scheduled_time(event: &serde_json::Value) -> Option<i64> {
    event
        .get("time")
        .and_then(serde_json::Value::as_str)
        .and_then(shared::clock::parse_rfc3339)
}

impl<S: MeteringStore, M: MeterReadApi> Reconciler<S, M> {
    pub fn new(store: S, meter: M, config: MeterConfig) -> Self {
        Self {
            store,
            meter,
            config,
            retry_base: Duration::from_millis(500),
        }
    }

    pub fn with_retry_base(mut self, base: Duration) -> Self {
        self.retry_base = base;
        self
    }

    pub async fn run(&self, now: i64, deadline: Instant) -> Result<RunSummary, RunError> {
        let mut summary = RunSummary::default();
        // Looked up once, and only when a period is ready to compare.
        let mut meter_id: Option<String> = None;
        for (account, start) in self.store.reconcile_due().await? {
            if Instant::now() + DEADLINE_MARGIN >= deadline {
                summary.left += 1;
                continue;
            }
            let input = self.store.report_input(&account, start).await?;
            let Some(p) = input.periods.iter().find(|p| p.period.start == start) else {
                continue;
            };
            if now < p.period.end + SETTLE_SECS || p.state.in_flight.is_some() {
                summary.not_yet += 1;
                continue;
            }
            let Some(customer) = input.customer_id.as_deref() else {
                error!(account_id = %account, period_start = start, alarm = true,
                    "a period with reported overage, but the account has no Stripe customer to compare with");
                summary.no_customer += 1;
                continue;
            };
            let id = match &meter_id {
                Some(id) => id.clone(),
                None => {
                    let found = self
                        .read(deadline, || self.meter.find_meter(&self.config.event_name))
                        .await?
                        .ok_or_else(|| RunError::NoMeter(self.config.event_name.clone()))?;
                    meter_id = Some(found.clone());
                    found
                }
            };
            let (from, to) = summary_window(p.period);
            let stripe = match self
                .read(deadline, || self.meter.total(&id, customer, from, to))
                .await
            {
                Ok(total) => total,
                Err(RunError::Stripe(MeterError::Retryable(why))) => {
                    warn!(account_id = %account, period_start = start, %why, "Stripe's meter summary unavailable; next run");
                    summary.left += 1;
                    continue;
                }
                // Refused for this customer (deleted in Stripe, say): this period needs a
                // person, the others are still compared.
                Err(RunError::Stripe(MeterError::Rejected(why))) => {
                    error!(alarm = true, account_id = %account, period_start = start, customer_id = customer, %why,
                        "Stripe refused the meter summary of a closed period");
                    summary.refused += 1;
                    continue;
                }
                Err(e) => return Err(e),
            };
            summary.checked += 1;
            let figures = PeriodFigures {
                recorded: p.overage,
                reported: p.state.confirmed,
                in_flight: false,
                stripe,
            };
            let verdict = reconcile(figures);
            if verdict == Reconciled::Unsettled {
                summary.not_yet += 1;
                continue;
            }
            let agrees = verdict == Reconciled::Agrees;
            // Recorded only if the report is still as read: a claim the reporter made meanwhile
            // (late overage) makes these figures stale, and the next run compares afresh.
            if !self
                .store
                .mark_reconciled(&account, start, &figures, agrees, now)
                .await?
            {
                info!(account_id = %account, period_start = start, "the period's report moved while it was compared; next run");
                summary.checked -= 1;
                summary.not_yet += 1;
                continue;
            }
            if agrees {
                summary.agreed += 1;
            } else {
                error!(
                    alarm = true,
                    account_id = %account,
                    period_start = p.period.start,
                    period_end = p.period.end,
                    recorded = figures.recorded,
                    reported = figures.reported,
                    stripe = figures.stripe,
                    "metered overage does not reconcile with Stripe"
                );
                summary.differences.push(Difference {
                    account: account.clone(),
                    period: p.period,
                    figures,
                });
            }
        }
        info!(
            checked = summary.checked,
            agreed = summary.agreed,
            differences = summary.differences.len(),
            not_yet = summary.not_yet,
            left = summary.left,
            "reconciliation run"
        );
        Ok(summary)
    }

    /// The daily check that Stripe sells what the catalog says (`Catalog::check_stripe`): each
    /// sold price under its lookup key, active, at the catalog's amount, type, unit and tiers,
    /// metered ones on the overage meter. Each mismatch is an alarm line naming the price; the
    /// caller fails the run on any, so the metering alarm fires the day it appears, not weeks
    /// later as a dead letter per purchase or an invoice without its overage.
    pub async fn check_catalog(
        &self,
        catalog: &Catalog,
        deadline: Instant,
    ) -> Result<Vec<CatalogMismatch>, RunError> {
        let meter = self
            .read(deadline, || self.meter.find_meter(&self.config.event_name))
            .await?
            .ok_or_else(|| RunError::NoMeter(self.config.event_name.clone()))?;
        let keys = catalog.sold_lookup_keys();
        let prices = self.read(deadline, || self.meter.prices(&keys)).await?;
        let mismatches = catalog.check_stripe(&prices, &meter);
        for m in &mismatches {
            error!(alarm = true, check = "catalog", mismatch = %m, "Stripe and catalog.toml disagree");
        }
        info!(
            prices = keys.len(),
            mismatches = mismatches.len(),
            "catalog check"
        );
        Ok(mismatches)
    }

    /// One Stripe read, retried on 429 and 5xx with backoff and jitter while the run's deadline
    /// leaves room for another attempt.
    async fn read<T, F, Fut>(&self, deadline: Instant, call: F) -> Result<T, RunError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, MeterError>>,
    {
        let mut attempt = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let result = match tokio::time::timeout(
                left.saturating_sub(DEADLINE_MARGIN / 2),
                call(),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(MeterError::Retryable(
                    "the run's deadline came first".into(),
                )),
            };
            let room =
                Instant::now() + DEADLINE_MARGIN + self.retry_base * (1 << (attempt + 1).min(6))
                    < deadline;
            match result {
                Ok(v) => return Ok(v),
                Err(MeterError::Retryable(why)) if attempt + 1 < ATTEMPTS && room => {
                    attempt += 1;
                    warn!(attempt, %why, "Stripe read not answered; retrying");
                    tokio::time::sleep(full_jitter(self.retry_base, attempt)).await;
                }
                Err(e) => return Err(RunError::Stripe(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use lambda_runtime::{Context, LambdaEvent};

    use super::scheduled_time;

    #[test]
    fn the_sample_scheduled_event_gives_its_time_and_a_bare_invocation_none() {
        let event: LambdaEvent<serde_json::Value> = LambdaEvent::new(
            serde_json::from_str(include_str!("../../../events/reconciler.json")).unwrap(),
            Context::default(),
        );
        assert_eq!(scheduled_time(&event.payload), Some(1_795_608_000));
        assert_eq!(scheduled_time(&serde_json::json!({})), None);
        assert_eq!(
            scheduled_time(&serde_json::json!({"time": "yesterday"})),
            None
        );
    }
}
