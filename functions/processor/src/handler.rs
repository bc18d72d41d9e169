//! Applies queued Stripe events to the billing store, exactly once, in any order.
//!
//! Per message: read the event (inline, or fetched from Stripe for a large event queued by
//! reference), parse it into lean types, decide its writes (pure), find the account, then one
//! transaction commits the processed-event marker and every write. A duplicate finds the marker
//! and changes nothing; a stale event is recorded and changes nothing; a same-second tie is
//! settled with the object fetched from Stripe.
//!
//! Per batch: FIFO semantics. At the first failure in a message group, that message and every
//! later message of the group are reported failed (SQS redelivers them in order); other groups go on.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use serde_json::json;
use shared::billing::{AccountRef, PlanError, Verdict, Write, plan_effects};
use shared::catalog::Catalog;
use shared::ids::{AccountId, StripeEventId};
use shared::queue::{ATTR_EVENT_ID, ATTR_PAYLOAD};
use shared::store::{ApplyResult, BillingStore, EventRecord, ParkResult, StoreError, WriteMode};
use shared::stripe::api::{ObjectKind, StripeApi, StripeApiError};
use shared::stripe::objects::{EventError, StripeEvent};
use tracing::{error, info, warn};

/// What happened to one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Its writes committed.
    Applied,
    /// A same-second tie, settled with Stripe's current object.
    TieResolved,
    /// Handled before: nothing changed.
    Duplicate,
    /// Older than the stored state: recorded, nothing changed.
    Stale,
    /// A type this backend does not act on, or one with nothing to write: recorded.
    Recorded,
    /// No account could be found for it: recorded, nothing changed.
    NoAccount,
}

impl Outcome {
    fn marker(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::TieResolved => "tie_resolved",
            Outcome::Duplicate => "duplicate",
            Outcome::Stale => "stale",
            Outcome::Recorded => "recorded",
            Outcome::NoAccount => "no_account",
        }
    }
}

/// Why a message failed. Every failure is retried by SQS and dead-lettered after the queue's
/// `maxReceiveCount`; `permanent` ones will fail every time and need an operator.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("the message is not a queued Stripe event: {0}")]
    Message(String),
    #[error(transparent)]
    Event(#[from] EventError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Stripe(#[from] StripeApiError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ProcessError {
    pub fn permanent(&self) -> bool {
        matches!(
            self,
            ProcessError::Message(_)
                | ProcessError::Event(_)
                | ProcessError::Plan(_)
                | ProcessError::Stripe(StripeApiError::NotFound(_))
        )
    }
}

/// The most one message can take: two Stripe calls (a reference fetch and a tie fetch), each
/// bounded by `CALL_BUDGET`, and the store's retries.
pub const MESSAGE_BUDGET: Duration =
    Duration::from_secs(2 * shared::stripe::api::CALL_BUDGET.as_secs() + 2);

pub struct Processor<S, P> {
    store: S,
    stripe: P,
    catalog: Catalog,
}

impl<S: BillingStore, P: StripeApi> Processor<S, P> {
    pub fn new(store: S, stripe: P, catalog: Catalog) -> Self {
        Self {
            store,
            stripe,
            catalog,
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn stripe(&self) -> &P {
        &self.stripe
    }

    /// One SQS batch, with partial-failure semantics per message group and no deadline.
    pub async fn handle_batch(&self, batch: &SqsEvent, now: i64) -> SqsBatchResponse {
        self.handle_batch_before(batch, now, None).await
    }

    /// One SQS batch, with partial-failure semantics per message group. No message is started
    /// with less than `MESSAGE_BUDGET` left before `deadline` (the invocation's): those left are
    /// reported failed, for SQS to redeliver, rather than cut off by the Lambda timeout, which
    /// would fail the whole batch.
    pub async fn handle_batch_before(
        &self,
        batch: &SqsEvent,
        now: i64,
        deadline: Option<Instant>,
    ) -> SqsBatchResponse {
        let mut failed_groups = HashSet::new();
        let mut failures = Vec::new();
        for message in &batch.records {
            let message_id = message.message_id.clone().unwrap_or_default();
            let group = message
                .attributes
                .get("MessageGroupId")
                .cloned()
                .unwrap_or_default();
            if failed_groups.contains(&group) {
                failures.push(message_id);
                continue;
            }
            if deadline
                .is_some_and(|d| d.saturating_duration_since(Instant::now()) < MESSAGE_BUDGET)
            {
                warn!(message_id = %message_id, group = %group, "too close to the invocation's deadline: left for SQS to redeliver");
                failed_groups.insert(group);
                failures.push(message_id);
                continue;
            }
            if let Err(e) = self.handle_message(message, now).await {
                error!(
                    message_id = %message_id,
                    group = %group,
                    event_id = message.message_attributes.get(ATTR_EVENT_ID).and_then(|a| a.string_value.as_deref()).unwrap_or("?"),
                    receive_count = message.attributes.get("ApproximateReceiveCount").map(String::as_str).unwrap_or("?"),
                    permanent = e.permanent(),
                    reason = %e,
                    "message not applied; SQS will retry it, then dead-letter it"
                );
                failed_groups.insert(group);
                failures.push(message_id);
            }
        }
        let mut response = SqsBatchResponse::default();
        response.batch_item_failures = failures
            .into_iter()
            .map(|id| {
                let mut f = BatchItemFailure::default();
                f.item_identifier = id;
                f
            })
            .collect();
        response
    }

    pub async fn handle_message(
        &self,
        message: &SqsMessage,
        now: i64,
    ) -> Result<Outcome, ProcessError> {
        let attribute = |name: &str| {
            message
                .message_attributes
                .get(name)
                .and_then(|a| a.string_value.as_deref())
        };
        let raw = match attribute(ATTR_PAYLOAD) {
            Some("reference") => {
                let id = attribute(ATTR_EVENT_ID).ok_or_else(|| {
                    ProcessError::Message("a reference without an event id".into())
                })?;
                let id =
                    StripeEventId::parse(id).map_err(|e| ProcessError::Message(e.to_string()))?;
                self.stripe.event(&id).await?
            }
            Some("inline") | None => message
                .body
                .clone()
                .ok_or_else(|| ProcessError::Message("the message has no body".into()))?
                .into_bytes(),
            Some(other) => {
                return Err(ProcessError::Message(format!(
                    "unknown payload kind `{other}`"
                )));
            }
        };
        self.apply(&raw, now).await
    }

    /// Applies one raw Stripe event.
    pub async fn apply(&self, raw: &[u8], now: i64) -> Result<Outcome, ProcessError> {
        let event = StripeEvent::parse(raw)?;
        let outcome = self.apply_event(&event, raw, now).await?;
        info!(event_id = %event.id, event_type = %event.event_type, outcome = outcome.marker(), "event handled");
        Ok(outcome)
    }

    async fn apply_event(
        &self,
        event: &StripeEvent,
        raw: &[u8],
        now: i64,
    ) -> Result<Outcome, ProcessError> {
        let effects = plan_effects(event, &self.catalog)?;
        let account = match &effects.account {
            AccountRef::Known(a) => Some(a.clone()),
            AccountRef::Customer(c) if !effects.writes.is_empty() => {
                self.store.customer_account(c).await?
            }
            AccountRef::Customer(_) | AccountRef::Unknown => None,
        };
        let record = EventRecord {
            event_id: event.id.clone(),
            event_type: event.event_type.clone(),
            created: event.created,
            account: account.clone(),
            processed_at: now,
        };
        if effects.writes.is_empty() {
            return self.record(&record, Outcome::Recorded).await;
        }
        let Some(account) = account else {
            let AccountRef::Customer(customer) = &effects.account else {
                warn!(event_id = %event.id, event_type = %event.event_type, "the event names no account and no customer");
                return self.record(&record, Outcome::NoAccount).await;
            };
            // Parked under the customer until an event links it to an account (the link then
            // applies it), instead of being lost behind a final marker.
            return match self.store.park(&record, customer, raw).await? {
                ParkResult::Parked => {
                    info!(event_id = %event.id, event_type = %event.event_type, "no account for this customer yet: parked until it is linked");
                    Ok(Outcome::NoAccount)
                }
                ParkResult::Duplicate => Ok(Outcome::Duplicate),
                ParkResult::Linked => Err(ProcessError::Store(StoreError::Retryable(
                    anyhow::anyhow!("the customer was linked while its event was being parked"),
                ))),
            };
        };

        let mut writes = effects.writes;
        // A refund found before its grant changes the grant once, parked events are applied
        // once; more in the same delivery means the state moves under us: SQS retries.
        for _ in 0..4 {
            match self
                .store
                .apply(&record, "applied", &writes, WriteMode::Newer)
                .await?
            {
                ApplyResult::Applied => return Ok(Outcome::Applied),
                ApplyResult::Duplicate => return Ok(Outcome::Duplicate),
                ApplyResult::Conflict {
                    verdict: Verdict::Stale,
                    ..
                } => return self.record_stale(&record, &writes).await,
                ApplyResult::Conflict {
                    index,
                    verdict: Verdict::Tie,
                } => return self.break_tie(event, &record, &writes[index]).await,
                ApplyResult::Conflict {
                    index,
                    verdict: Verdict::RefundedBeforeGrant { amount_refunded },
                } => {
                    info!(event_id = %event.id, amount_refunded, "the payment was refunded before its credits were granted: granting the rest");
                    if let Write::GrantCredits {
                        refunded_before, ..
                    } = &mut writes[index]
                    {
                        *refunded_before = Some(amount_refunded);
                    }
                }
                ApplyResult::Conflict {
                    index,
                    verdict: Verdict::ParkedEvents,
                } => {
                    if let Write::LinkCustomer { customer_id } = &writes[index] {
                        self.apply_parked(customer_id, &account, now).await?;
                    }
                }
                ApplyResult::Conflict {
                    verdict: Verdict::Apply,
                    ..
                } => break,
            }
        }
        Err(ProcessError::Store(StoreError::Retryable(anyhow::anyhow!(
            "a write was refused that the rules accept"
        ))))
    }

    /// Links a customer whose events were parked, then applies them, oldest first. Each is
    /// unparked once applied; a crash in between leaves it parked, and its next application is
    /// a duplicate.
    async fn apply_parked(
        &self,
        customer_id: &str,
        account: &AccountId,
        now: i64,
    ) -> Result<(), ProcessError> {
        self.store.link(customer_id, account).await?;
        for parked in self.store.parked(customer_id).await? {
            if let Some(raw) = &parked.raw {
                let outcome = Box::pin(self.apply(raw, now)).await?;
                info!(event_id = %parked.event_id, customer_id, outcome = outcome.marker(), "parked event applied once its customer was linked");
            }
            self.store.unpark(customer_id, &parked.event_id).await?;
        }
        Ok(())
    }

    /// A stale event: its marker, with the facts that hold whatever its age (a subscription's
    /// end, the customer's account), and nothing else.
    async fn record_stale(
        &self,
        record: &EventRecord,
        writes: &[Write],
    ) -> Result<Outcome, ProcessError> {
        let kept: Vec<Write> = writes
            .iter()
            .filter(|w| w.holds_when_stale())
            .cloned()
            .collect();
        if kept.is_empty() {
            return self.record(record, Outcome::Stale).await;
        }
        match self
            .store
            .apply(record, Outcome::Stale.marker(), &kept, WriteMode::Newer)
            .await?
        {
            ApplyResult::Applied => Ok(Outcome::Stale),
            ApplyResult::Duplicate => Ok(Outcome::Duplicate),
            ApplyResult::Conflict { .. } => Err(ProcessError::Store(StoreError::Retryable(
                anyhow::anyhow!("a fact of a stale event was refused"),
            ))),
        }
    }

    /// Same second, different content: Stripe's current object decides.
    async fn break_tie(
        &self,
        event: &StripeEvent,
        record: &EventRecord,
        lost: &Write,
    ) -> Result<Outcome, ProcessError> {
        let (kind, id) = match lost {
            Write::Subscription(s) => (ObjectKind::Subscription, s.subscription_id.as_str()),
            Write::Invoice(i, _) => (ObjectKind::Invoice, i.invoice_id.as_str()),
            Write::CustomerProfile { customer_id, .. } => {
                (ObjectKind::Customer, customer_id.as_str())
            }
            _ => return self.record(record, Outcome::Stale).await,
        };
        let current = match self.stripe.object(kind, id).await {
            Ok(current) => current,
            // Stripe keeps deleted customers and ended subscriptions retrievable; an invoice
            // that is gone was a deleted draft. The event describes something that no longer
            // exists: stale, not poison.
            Err(StripeApiError::NotFound(what)) if kind == ObjectKind::Invoice => {
                warn!(event_id = %event.id, event_type = %event.event_type, "{what} no longer exists: the event is stale");
                return self.record(record, Outcome::Stale).await;
            }
            Err(e) => return Err(e.into()),
        };
        let refetched = StripeEvent::parse(
            json!({
                "id": event.id.as_str(),
                "type": event.event_type,
                "created": event.created,
                "livemode": event.livemode,
                "data": { "object": current },
            })
            .to_string()
            .as_bytes(),
        )?;
        let effects = plan_effects(&refetched, &self.catalog)?;
        match self
            .store
            .apply(record, "tie_resolved", &effects.writes, WriteMode::TieBreak)
            .await?
        {
            ApplyResult::Applied => Ok(Outcome::TieResolved),
            ApplyResult::Duplicate => Ok(Outcome::Duplicate),
            ApplyResult::Conflict {
                verdict: Verdict::Stale,
                ..
            } => self.record_stale(record, &effects.writes).await,
            ApplyResult::Conflict { .. } => Err(ProcessError::Store(StoreError::Retryable(
                anyhow::anyhow!("the state changed while a tie was being settled"),
            ))),
        }
    }

    /// The marker alone: the event is handled, nothing else changes.
    async fn record(
        &self,
        record: &EventRecord,
        outcome: Outcome,
    ) -> Result<Outcome, ProcessError> {
        match self
            .store
            .apply(record, outcome.marker(), &[], WriteMode::Newer)
            .await?
        {
            ApplyResult::Duplicate => Ok(Outcome::Duplicate),
            _ => Ok(outcome),
        }
    }
}
