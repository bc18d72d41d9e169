//! One run of the meter reporter: for each account marked due, at most one meter event per
//! account, claim then send (`shared::metering`), then the mark comes off once everything is
//! confirmed and nothing new arrived.
//!
//! Accounts are reported one after another, so a run makes one meter call at a time (Stripe
//! takes one at a time per customer and meter), no faster than Stripe's test-mode limit of 25 a
//! second. The function runs with a reserved concurrency of one, so runs do not overlap; if they
//! did, a claim is still written once (conditional write) and sent under one identifier.

use std::time::{Duration, Instant};

use shared::ids::AccountId;
use shared::metering::{Claim, Report, after_invoice, next_report};
use shared::retry::full_jitter;
use shared::store::StoreError;
use shared::store::metering::MeteringStore;
use shared::stripe::meter::{MeterApi, MeterConfig, MeterError};
use shared::usage::period::Period;
use tracing::{error, info, warn};

/// Periods older than this are not read: Stripe takes nothing older than 35 days.
const LOOKBACK_SECS: i64 = 70 * 86_400;
/// Attempts per meter call when Stripe answers 429 or 5xx.
const ATTEMPTS: u32 = 6;
/// At most 25 meter calls a second (Stripe's test-mode limit; live mode allows more).
const CALL_SPACING: Duration = Duration::from_millis(40);
/// A run starts no account this close to its deadline.
const DEADLINE_MARGIN: Duration = Duration::from_secs(5);

/// What a run did, for its log line and its caller.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub accounts: usize,
    pub sent: usize,
    pub confirmed: usize,
    /// Claims left in flight for the next run (Stripe kept failing, or the deadline came).
    pub pending: usize,
    /// Events Stripe refused, and periods too old to report: each needs a person.
    pub refused: usize,
    pub too_late: usize,
    /// Claims confirmed after their period's invoice was finalised (on the meter, not billed).
    pub after_invoice: usize,
    /// Accounts with overage but no Stripe customer to bill.
    pub no_customer: usize,
    pub cleared: usize,
}

impl RunSummary {
    /// Whether someone must look: the invocation then fails, which raises the errors alarm.
    pub fn needs_attention(&self) -> bool {
        self.refused + self.too_late + self.no_customer + self.after_invoice > 0
    }
}

pub struct Reporter<S, M> {
    store: S,
    meter: M,
    config: MeterConfig,
    retry_base: Duration,
}

enum Sent {
    Confirmed,
    Pending,
    Refused,
}

impl<S: MeteringStore, M: MeterApi> Reporter<S, M> {
    pub fn new(store: S, meter: M, config: MeterConfig) -> Self {
        Self {
            store,
            meter,
            config,
            retry_base: Duration::from_millis(200),
        }
    }

    /// Backoff base between retries of one call (tests shorten it).
    pub fn with_retry_base(mut self, base: Duration) -> Self {
        self.retry_base = base;
        self
    }

    pub async fn run(&self, now: i64, deadline: Instant) -> Result<RunSummary, StoreError> {
        let mut summary = RunSummary::default();
        for account in self.store.due_accounts().await? {
            if Instant::now() + DEADLINE_MARGIN >= deadline {
                warn!(
                    left = "for the next run",
                    "the run's deadline came before every due account"
                );
                break;
            }
            summary.accounts += 1;
            self.report(&account, now, &mut summary).await?;
        }
        info!(?summary, "meter report run");
        Ok(summary)
    }

    async fn report(
        &self,
        account: &AccountId,
        now: i64,
        summary: &mut RunSummary,
    ) -> Result<(), StoreError> {
        let input = self
            .store
            .report_input(account, now - LOOKBACK_SECS)
            .await?;
        let Some(customer) = input.customer_id.as_deref() else {
            error!(account_id = %account, alarm = true, "overage to report but no Stripe customer on the account");
            summary.no_customer += 1;
            return Ok(());
        };
        let mut done = true;
        let mut sent = false;
        for p in &input.periods {
            let report = next_report(account, p.period, &p.state, p.overage, now);
            let claim = match report {
                Report::UpToDate => continue,
                Report::TooLate { unreported } => {
                    error!(account_id = %account, period_start = p.period.start, unreported, alarm = true,
                        "overage older than Stripe's window: bill it by hand");
                    summary.too_late += 1;
                    continue;
                }
                // One meter event per account per run; the rest waits for the next run.
                _ if sent => {
                    done = false;
                    continue;
                }
                Report::Resend(claim) => claim,
                Report::Claim(claim) => {
                    if !self
                        .store
                        .claim(account, p.period, &p.state, &claim)
                        .await?
                    {
                        // Another run claimed first; it sends its claim.
                        done = false;
                        continue;
                    }
                    claim
                }
            };
            sent = true;
            summary.sent += 1;
            match self.send(account, p.period, customer, &claim).await? {
                Sent::Confirmed => {
                    summary.confirmed += 1;
                    if after_invoice(p.period, now) {
                        error!(account_id = %account, period_start = p.period.start, period_end = p.period.end,
                            units = claim.value, identifier = %claim.identifier, alarm = true,
                            "overage reached the meter after its period's invoice was finalised: bill these units by hand");
                        summary.after_invoice += 1;
                    }
                    if p.state.confirmed + claim.value < p.overage {
                        done = false;
                    }
                }
                Sent::Pending => {
                    summary.pending += 1;
                    done = false;
                }
                Sent::Refused => {
                    summary.refused += 1;
                    done = false;
                }
            }
        }
        if done && self.store.clear_due(account, &input).await? {
            summary.cleared += 1;
        }
        Ok(())
    }

    /// Sends `claim`, retrying 429 and 5xx with backoff and jitter, and records Stripe's
    /// acceptance.
    async fn send(
        &self,
        account: &AccountId,
        period: Period,
        customer: &str,
        claim: &Claim,
    ) -> Result<Sent, StoreError> {
        for attempt in 0..ATTEMPTS {
            tokio::time::sleep(if attempt == 0 {
                CALL_SPACING
            } else {
                full_jitter(self.retry_base, attempt)
            })
            .await;
            match self.meter.send(&self.config, customer, claim).await {
                Ok(()) => {
                    self.store.confirm(account, period, claim).await?;
                    return Ok(Sent::Confirmed);
                }
                Err(MeterError::Retryable(why)) => {
                    warn!(account_id = %account, identifier = %claim.identifier, attempt, %why, "meter event not taken; retrying");
                }
                Err(MeterError::Rejected(why)) => {
                    error!(account_id = %account, identifier = %claim.identifier, %why, alarm = true,
                        "Stripe refused a meter event: it stays claimed until someone looks");
                    return Ok(Sent::Refused);
                }
            }
        }
        Ok(Sent::Pending)
    }
}
