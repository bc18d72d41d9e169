//! One dunning run: every case in the index is advanced by the policy
//! (`shared::billing::dunning`) as of "now", the scheduled event's `time`.
//!
//! For each open case:
//! 1. the card trap: when the customer's default card is not the one the subscription is
//!    charged to, and this case has not tried it, the subscription is pointed at it and the
//!    invoice paid with it (once per card);
//! 2. each due step in order: its Stripe call first (under `dunning:{invoice}:{step}`), then
//!    one conditional write that records it with its effects and its notification.
//!
//! A closed case resumes the subscription's collection if a downgrade may have paused it, is
//! reactivated if the case restricted the account, and leaves the index.
//!
//! Runs may overlap, repeat or crash anywhere: a step's Stripe call made twice is one call to
//! Stripe (the key), and its write is conditional on the step not being recorded, so its
//! notification is written once. A case whose Stripe call fails is left for the next run.

use std::time::{Duration, Instant};

use shared::billing::dunning::{DunningPolicy, Step, card_to_try, due_steps, resumes_collection};
use shared::store::StoreError;
use shared::store::dunning::{CaseRecord, DunningStore, Recorded};
use shared::stripe::dunning::{DunningApi, DunningCallError, PayOutcome};
use tracing::{info, warn};

/// A run starts no case this close to its deadline; the rest waits for the next run.
const DEADLINE_MARGIN: Duration = Duration::from_secs(5);

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// Cases read from the index.
    pub cases: usize,
    /// Steps recorded by this run, as (invoice, step).
    pub taken: Vec<(String, Step)>,
    /// Steps another run (or this one before a crash) had recorded already.
    pub already_taken: usize,
    /// Payments this run collected (a retry or a new card).
    pub paid: usize,
    /// Closed cases taken out of the index.
    pub settled: usize,
    /// Cases left for the next run: Stripe or the table did not answer, or the deadline came.
    pub left: usize,
}

/// "Now" for a run: the scheduled event's `time`, or `None` for an invocation without one.
pub fn scheduled_time(event: &serde_json::Value) -> Option<i64> {
    event
        .get("time")
        .and_then(serde_json::Value::as_str)
        .and_then(shared::clock::parse_rfc3339)
}

/// The idempotency key of a case's Stripe call: one per invoice and action.
pub fn stripe_key(case: &CaseRecord, action: &str) -> String {
    format!("dunning:{}:{action}", case.invoice_id)
}

/// Why one case stopped for this run.
#[derive(Debug, thiserror::Error)]
enum CaseError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Stripe(#[from] DunningCallError),
}

pub struct Dunning<S, A> {
    store: S,
    stripe: A,
    policy: DunningPolicy,
}

impl<S: DunningStore, A: DunningApi> Dunning<S, A> {
    pub fn new(store: S, stripe: A, policy: DunningPolicy) -> Self {
        Self {
            store,
            stripe,
            policy,
        }
    }

    pub async fn run(&self, now: i64, deadline: Instant) -> Result<RunSummary, StoreError> {
        let cases = self.store.cases().await?;
        let mut summary = RunSummary {
            cases: cases.len(),
            ..RunSummary::default()
        };
        for case in &cases {
            if Instant::now() + DEADLINE_MARGIN >= deadline {
                summary.left += 1;
                continue;
            }
            let result = if case.case().open {
                self.advance(case, now, &mut summary).await
            } else {
                self.close(case, now, &mut summary).await
            };
            if let Err(e) = result {
                warn!(case_id = %case_id(case), invoice_id = %case.invoice_id,
                    account_id = %case.account, error = %e, "dunning case left for the next run");
                summary.left += 1;
            }
        }
        info!(
            cases = summary.cases,
            taken = summary.taken.len(),
            already_taken = summary.already_taken,
            paid = summary.paid,
            settled = summary.settled,
            left = summary.left,
            "dunning run"
        );
        Ok(summary)
    }

    async fn advance(
        &self,
        case: &CaseRecord,
        now: i64,
        summary: &mut RunSummary,
    ) -> Result<(), CaseError> {
        let policy_case = case.case();
        let Some(subscription) = case.subscription_id.as_deref() else {
            return Ok(());
        };
        let cards = self.store.cards(&case.account).await?;
        if let Some(card) = card_to_try(
            &policy_case,
            cards.customer.as_deref(),
            cards.subscription.as_deref(),
            |c| case.cards_tried.contains(c),
        ) {
            // Stripe's own retries and renewals charge the subscription's card first: point it
            // at the customer's new card, then pay the open invoice with it now.
            self.stripe
                .charge_card_first(
                    subscription,
                    card,
                    &stripe_key(case, &format!("card:{card}:first")),
                )
                .await?;
            let outcome = self
                .stripe
                .pay_invoice(
                    &case.invoice_id,
                    Some(card),
                    &stripe_key(case, &format!("card:{card}")),
                )
                .await?;
            let recorded = self.store.record_card(case, card).await?;
            info!(case_id = %case_id(case), invoice_id = %case.invoice_id, account_id = %case.account,
                ?outcome, ?recorded, "paid the open invoice with the customer's new card");
            if outcome == PayOutcome::Paid {
                summary.paid += 1;
                return Ok(());
            }
        }
        for step in due_steps(&policy_case, &self.policy, now) {
            let paid = match step {
                Step::RetryPayment => {
                    let outcome = self
                        .stripe
                        .pay_invoice(&case.invoice_id, None, &stripe_key(case, step.as_str()))
                        .await?;
                    if let PayOutcome::Refused(why) = &outcome {
                        info!(case_id = %case_id(case), invoice_id = %case.invoice_id,
                            account_id = %case.account, %why, "the retried payment was refused");
                    }
                    outcome == PayOutcome::Paid
                }
                Step::Downgrade => {
                    // A subscription Stripe will not pause (cancelled meanwhile) bills
                    // nothing anyway: the local downgrade still stands.
                    let paused = self
                        .stripe
                        .pause_collection(subscription, &stripe_key(case, step.as_str()))
                        .await;
                    tolerate_rejection(paused, case, "pause")?;
                    false
                }
                Step::NotifyPaymentFailed | Step::Suspend | Step::Reactivate => false,
            };
            if !self.record(case, step, now, summary).await? {
                break;
            }
            if paid {
                summary.paid += 1;
                break;
            }
        }
        Ok(())
    }

    async fn close(
        &self,
        case: &CaseRecord,
        now: i64,
        summary: &mut RunSummary,
    ) -> Result<(), CaseError> {
        let policy_case = case.case();
        if resumes_collection(&policy_case)
            && let Some(subscription) = case.subscription_id.as_deref()
        {
            let resumed = self
                .stripe
                .resume_collection(subscription, &stripe_key(case, "resume"))
                .await;
            tolerate_rejection(resumed, case, "resume")?;
        }
        if due_steps(&policy_case, &self.policy, now).contains(&Step::Reactivate) {
            // Recording the reactivation also takes the case out of the index.
            self.record(case, Step::Reactivate, now, summary).await?;
        } else if self.store.settle(case).await? {
            summary.settled += 1;
            info!(case_id = %case_id(case), invoice_id = %case.invoice_id,
                account_id = %case.account, status = %case.status, "dunning case closed");
        }
        Ok(())
    }

    /// Records a step; `false` when the case is no longer as the step requires.
    async fn record(
        &self,
        case: &CaseRecord,
        step: Step,
        now: i64,
        summary: &mut RunSummary,
    ) -> Result<bool, CaseError> {
        match self.store.record_step(case, step, now).await? {
            Recorded::Taken => {
                info!(case_id = %case_id(case), invoice_id = %case.invoice_id, account_id = %case.account,
                    step = step.as_str(), failures = case.failures, "dunning step taken");
                summary.taken.push((case.invoice_id.clone(), step));
                Ok(true)
            }
            Recorded::AlreadyTaken => {
                summary.already_taken += 1;
                Ok(true)
            }
            Recorded::CaseChanged => {
                info!(case_id = %case_id(case), invoice_id = %case.invoice_id, account_id = %case.account,
                    step = step.as_str(), "the case changed meanwhile (paid?); next run reads it again");
                Ok(false)
            }
        }
    }
}

/// A case's id in logs: the account and the invoice it is about.
/// A pause or resume that Stripe refuses (the subscription was cancelled meanwhile) changes
/// nothing it would bill, so the case moves on with a warning; anything else is retried.
fn tolerate_rejection(
    result: Result<(), DunningCallError>,
    case: &CaseRecord,
    action: &str,
) -> Result<(), CaseError> {
    match result {
        Ok(()) => Ok(()),
        Err(DunningCallError::Rejected(why)) => {
            warn!(case_id = %case_id(case), invoice_id = %case.invoice_id,
                account_id = %case.account, %why, action, "Stripe refused to change the subscription's collection");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

pub fn case_id(case: &CaseRecord) -> String {
    format!("{}/{}", case.account, case.invoice_id)
}
