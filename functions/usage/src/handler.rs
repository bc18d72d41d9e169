//! The usage function's actions, over any [`UsageStore`].
//!
//! Writes (`track`, `reserve`, `release`) decide from the account as this instance last saw it
//! and commit on the condition that it has not changed: one round trip when this instance was
//! the last to write the account. When another instance (or the processor) wrote meanwhile, the
//! failed commit brings the account as it is now and the decision is made again. A refusal is
//! only ever given from a state read in this invocation. Reads (`check`, `balance`) are one
//! consistent read.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::catalog::Catalog;
use shared::ids::{AccountId, ReservationId};
use shared::store::StoreError;
use shared::store::usage::{
    Committed, HoldRecord, HoldStatus, Notification, StoredTerms, UsageAccount, UsageChange,
    UsageRecord, UsageStore,
};
use shared::usage::ledger::{Balance, Ledger, Notice, Released, Terms, Tracked, units};
use shared::usage::request::{Call, UsageRequest, ValidationError};
use tracing::{debug, error, info, instrument, warn};

/// A write stops deciding again this long before the invocation's deadline, to answer in time.
const DEADLINE_MARGIN: Duration = Duration::from_millis(500);
/// A table call still unanswered this close to the deadline is given up, so that the function
/// answers instead of being timed out (which would also cost the instance its warm state).
const ANSWER_MARGIN: Duration = Duration::from_millis(150);

/// `call`, unless the invocation's deadline comes first: then a retryable error. A commit given
/// up may still have been applied; a retry with the same request id is then a duplicate that
/// answers as the first did, so retrying is safe either way.
async fn before_deadline<T>(
    call: impl std::future::Future<Output = Result<T, StoreError>>,
    deadline: Instant,
) -> Result<T, StoreError> {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .saturating_sub(ANSWER_MARGIN);
    match tokio::time::timeout(left, call).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Retryable(anyhow::anyhow!(
            "the table did not answer before the invocation's deadline; retry with the same request id"
        ))),
    }
}

/// The deadline of a call made without one (tests, tools).
const DEFAULT_BUDGET: Duration = Duration::from_secs(30);
/// Accounts remembered per instance; beyond it the memory starts over.
const CACHE_LIMIT: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// Other writers kept changing the account for every attempt.
    #[error("account {0} is changing too fast to decide; try again")]
    Contention(AccountId),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl UsageError {
    /// The Lambda `errorType` the invocation fails with.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Validation(_) => "ValidationError",
            Self::Contention(_) => "ContentionError",
            Self::Store(StoreError::Retryable(_)) => "RetryableError",
            Self::Store(StoreError::Other(_)) => "InternalError",
        }
    }
}

pub struct UsageHandler<S: UsageStore> {
    store: S,
    catalog: Catalog,
    seen: Mutex<HashMap<AccountId, UsageAccount<S::Version>>>,
    /// Writes to one account from this process take turns: they would only fail each other's
    /// commits, and each one decides from the state the one before it wrote (one round trip).
    /// (A Lambda instance serves one invocation at a time; this matters where a process serves
    /// several at once.)
    turns: Mutex<HashMap<AccountId, Arc<tokio::sync::Mutex<()>>>>,
}

/// One write's decision: the new ledger, what goes with it, and the answer if it commits.
struct Decision {
    ledger: Ledger,
    change: UsageChange,
    notifications: Vec<Notification>,
    answer: Value,
}

enum Decided {
    Write(Box<Decision>),
    /// An answer that writes nothing (a refusal).
    Answer(Value),
}

fn balance_json(b: &Balance) -> Value {
    json!({
        "plan": b.plan,
        "status": b.status,
        "period_start": b.period.start,
        "period_end": b.period.end,
        "included_units": b.included_units,
        "included_remaining": b.included_remaining,
        "credits": b.credits,
        "reserved": b.reserved,
        "overage_units": b.overage_units,
        "uncovered_units": b.uncovered_units,
        "allowed": b.allowed,
    })
}

fn with_status(answer: &str, status: &str) -> Value {
    let mut v: Value = serde_json::from_str(answer).unwrap_or_else(|_| json!({}));
    v["status"] = json!(status);
    v
}

/// The pause before attempt `attempt` (from 0). The second attempt goes at once: the failed
/// commit brought the account as it is now. After that, others are writing the account too, so
/// the contenders spread out over a window of round trips (`round_trip`, the last commit's),
/// doubling from one up to 32 of them, at most a second, with full jitter: a window measured
/// in round trips holds the same number of commits whether the table answers in 5 ms or 200.
fn backoff(attempt: u32, round_trip: Duration) -> Duration {
    if attempt < 2 {
        return Duration::ZERO;
    }
    let ceiling = (round_trip.max(Duration::from_millis(2)) * (1u32 << (attempt - 2).min(5)))
        .min(Duration::from_secs(1));
    let ceiling_us = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(RandomState::new().hash_one(attempt) % (ceiling_us + 1))
}

impl<S: UsageStore> UsageHandler<S> {
    pub fn new(store: S, catalog: Catalog) -> Self {
        Self {
            store,
            catalog,
            seen: Mutex::new(HashMap::new()),
            turns: Mutex::new(HashMap::new()),
        }
    }

    fn remember(&self, account: &AccountId, state: UsageAccount<S::Version>) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= CACHE_LIMIT && !seen.contains_key(account) {
            seen.clear();
        }
        seen.insert(account.clone(), state);
    }

    fn last_seen(&self, account: &AccountId) -> Option<UsageAccount<S::Version>> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(account).cloned()
    }

    /// The plan's terms: the stored plan as the catalog defines it (free without one).
    pub fn terms(&self, stored: &StoredTerms) -> Terms {
        let free = self.catalog.free_plan();
        let plan = stored
            .plan
            .as_deref()
            .and_then(|id| self.catalog.plan(id))
            .unwrap_or(free);
        Terms {
            plan: plan.id.as_str().to_owned(),
            included_units: stored.included_units.unwrap_or(plan.included_units),
            overage: plan.overage,
            period: stored.period,
            suspended: stored.suspended,
        }
    }

    fn units_of(&self, call: &Call) -> Result<u64, ValidationError> {
        let rate = self.catalog.rate(call.model.as_str());
        let t = call.tokens;
        units(&rate, t.input, t.output, t.cached_input, t.reasoning)
            .ok_or_else(|| ValidationError::new("units", "the call's units overflow"))
    }

    /// Answers `payload` at `now` (Unix seconds), with the default time budget.
    pub async fn handle(&self, payload: &Value, now: i64) -> Result<Value, UsageError> {
        self.handle_before(payload, now, Instant::now() + DEFAULT_BUDGET)
            .await
    }

    /// Answers `payload` at `now`, deciding again under contention until shortly before
    /// `deadline` (the invocation's), then answering `ContentionError` (safe to retry with the
    /// same request id).
    #[instrument(skip_all, fields(action, account_id))]
    pub async fn handle_before(
        &self,
        payload: &Value,
        now: i64,
        deadline: Instant,
    ) -> Result<Value, UsageError> {
        // Boxed: the answer's future nests the store's, the SDK's and the retry loop's, deeper
        // than the compiler's layout limit allows inside the runtime's own future.
        let answer = Box::pin(self.answer(payload, now, deadline)).await;
        match &answer {
            Ok(_) => {}
            // The caller's mistake: its field, never its values.
            Err(UsageError::Validation(e)) => info!(field = %e.field, "invalid usage input"),
            Err(e) => error!(error_type = e.error_type(), error = %e, "usage call failed"),
        }
        answer
    }

    async fn answer(
        &self,
        payload: &Value,
        now: i64,
        deadline: Instant,
    ) -> Result<Value, UsageError> {
        let request = UsageRequest::parse(payload, now)?;
        let account = request.account().clone();
        let span = tracing::Span::current();
        span.record("action", request.action());
        span.record("account_id", account.as_str());
        let mut answer = self
            .answer_request(&request, &account, now, deadline)
            .await?;
        if let (Some(call), Some(fields)) = (request.call(), answer.as_object_mut()) {
            // Which rate priced the call, so a model missing from the rate card is never
            // priced at the default silently; the log line is what the UnlistedModels metric counts.
            let model = call.model.as_str();
            let listed = self.catalog.lists_model(model);
            if !listed {
                warn!(
                    unlisted_model = true,
                    model, "a model not in the rate card, priced at the default rate"
                );
            }
            fields.insert(
                "rate".into(),
                json!({ "model": if listed { model } else { "default" }, "rate_card": self.catalog.rate_card_version() }),
            );
        }
        Ok(answer)
    }

    async fn answer_request(
        &self,
        request: &UsageRequest,
        account: &AccountId,
        now: i64,
        deadline: Instant,
    ) -> Result<Value, UsageError> {
        match request {
            UsageRequest::Check { call, .. } => {
                let units = self.units_of(call)?;
                let state = self.store.load(account).await?;
                let terms = self.terms(&state.terms);
                let verdict = state.ledger.check(&terms, now, units);
                let answer = json!({
                    "allowed": verdict.is_ok(),
                    "reason": verdict.err().map(|r| r.reason()),
                    "units": units,
                    "balance": balance_json(&state.ledger.balance(&terms, now)),
                });
                self.remember(account, state);
                Ok(answer)
            }
            UsageRequest::Balance { .. } => {
                let state = self.store.load(account).await?;
                let terms = self.terms(&state.terms);
                let answer = balance_json(&state.ledger.balance(&terms, now));
                self.remember(account, state);
                Ok(answer)
            }
            _ => {
                let turn = {
                    let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
                    turns.entry(account.clone()).or_default().clone()
                };
                let answer = {
                    let _mine = turn.lock().await;
                    self.write(request, account, now, deadline).await
                };
                let mut turns = self.turns.lock().unwrap_or_else(|e| e.into_inner());
                // Forget the account's turn once nobody else is waiting for it.
                if Arc::strong_count(&turn) == 2 {
                    turns.remove(account);
                }
                answer
            }
        }
    }

    /// Decides from the last state seen and commits, deciding again while the account moves.
    async fn write(
        &self,
        request: &UsageRequest,
        account: &AccountId,
        now: i64,
        deadline: Instant,
    ) -> Result<Value, UsageError> {
        let (mut state, mut fresh) = match self.last_seen(account) {
            Some(s) => (s, false),
            None => (self.store.never_written(), false),
        };
        let mut settle = true;
        let mut round_trip = Duration::ZERO;
        let mut attempt = 0;
        loop {
            let pause = backoff(attempt, round_trip);
            if Instant::now() + pause + DEADLINE_MARGIN >= deadline {
                break;
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            attempt += 1;
            let decision = match self.decide(request, account, &state, now, settle)? {
                Decided::Write(d) => d,
                Decided::Answer(answer) if fresh => return Ok(answer),
                Decided::Answer(_) => {
                    // Refuse only from the account as it is now.
                    state = before_deadline(self.store.load(account), deadline).await?;
                    fresh = true;
                    self.remember(account, state.clone());
                    continue;
                }
            };
            let sent = Instant::now();
            let commit = self.store.commit(
                account,
                &state.version,
                &decision.ledger,
                &decision.change,
                &decision.notifications,
            );
            let committed = before_deadline(commit, deadline).await?;
            round_trip = sent.elapsed();
            match committed {
                Committed::Done(version) => {
                    self.remember(
                        account,
                        UsageAccount {
                            version,
                            terms: state.terms,
                            ledger: decision.ledger,
                        },
                    );
                    return Ok(decision.answer);
                }
                Committed::Changed(now_state) => {
                    debug!(account_id = %account, attempt, "account changed; deciding again");
                    state = *now_state;
                    self.remember(account, state.clone());
                    fresh = true;
                }
                Committed::Duplicate(first) => return Ok(with_status(&first, "duplicate")),
                Committed::NotHeld(record) => match request {
                    UsageRequest::Release { .. } => {
                        if record.is_none() {
                            return Err(ValidationError::new(
                                "reservation_id",
                                "no such reservation on this account",
                            )
                            .into());
                        }
                        // Nothing was written; the balance is read, since this instance's
                        // memory of the account may be behind.
                        let now_state = self.store.load(account).await?;
                        self.remember(account, now_state.clone());
                        return release_answer(record, &now_state, self, now);
                    }
                    // The hold ended between the read and the write: charge without it.
                    _ => {
                        settle = false;
                        state = self.store.load(account).await?;
                        fresh = true;
                    }
                },
            }
        }
        warn!(account_id = %account, attempts = attempt, "usage write gave up under contention");
        Err(UsageError::Contention(account.clone()))
    }

    fn decide(
        &self,
        request: &UsageRequest,
        account: &AccountId,
        state: &UsageAccount<S::Version>,
        now: i64,
        settle: bool,
    ) -> Result<Decided, ValidationError> {
        let terms = self.terms(&state.terms);
        let mut ledger = state.ledger.clone();
        Ok(match request {
            UsageRequest::Track {
                request: request_id,
                call,
                reservation,
                at,
                ..
            } => {
                let units = self.units_of(call)?;
                let at = at.unwrap_or(now);
                let reservation = reservation.as_ref().filter(|_| settle);
                let tracked = ledger.track(&terms, now, at, units, reservation);
                let balance = ledger.balance(&terms, now);
                let answer = json!({
                    "status": "recorded",
                    "units": units,
                    "covered": {
                        "included": tracked.covered.included,
                        "credits": tracked.covered.credits,
                        "overage": tracked.covered.overage,
                        "uncovered": tracked.covered.uncovered,
                    },
                    "allowed": balance.allowed,
                    "low_balance": ledger.low_balance(),
                    "balance": balance_json(&balance),
                });
                let notifications = notifications(account, request_id.as_str(), &tracked, &balance);
                Decided::Write(Box::new(Decision {
                    change: UsageChange::Track(Box::new(UsageRecord {
                        request: request_id.clone(),
                        model: call.model.as_str().to_owned(),
                        tokens: call.tokens,
                        units,
                        covered: tracked.covered,
                        period: tracked.period,
                        at,
                        recorded_at: now,
                        rate_card_version: self.catalog.rate_card_version().to_owned(),
                        settled: tracked.settled_hold.and(reservation.cloned()),
                        answer: answer.to_string(),
                        topup: tracked.topup,
                    })),
                    ledger,
                    notifications,
                    answer,
                }))
            }
            UsageRequest::Reserve {
                request: request_id,
                call,
                ttl_secs,
                ..
            } => {
                let units = self.units_of(call)?;
                let id = ReservationId::for_request(account, request_id);
                let expires_at = now + i64::try_from(*ttl_secs).unwrap_or(i64::MAX - now);
                match ledger.reserve(&terms, now, id.clone(), units, expires_at) {
                    Err(refusal) => Decided::Answer(json!({
                        "status": "refused",
                        "allowed": false,
                        "reason": refusal.reason(),
                        "balance": balance_json(&state.ledger.balance(&terms, now)),
                    })),
                    Ok(()) => {
                        let answer = json!({
                            "status": "reserved",
                            "reservation_id": id.as_str(),
                            "units": units,
                            "expires_at": expires_at,
                            "allowed": true,
                            "balance": balance_json(&ledger.balance(&terms, now)),
                        });
                        Decided::Write(Box::new(Decision {
                            change: UsageChange::Reserve(HoldRecord {
                                reservation: id,
                                request: request_id.clone(),
                                units,
                                expires_at,
                                status: HoldStatus::Held,
                                answer: answer.to_string(),
                            }),
                            ledger,
                            notifications: Vec::new(),
                            answer,
                        }))
                    }
                }
            }
            UsageRequest::Release { reservation, .. } => {
                let (status, answer_status) = match ledger.release(now, reservation) {
                    Released::Released => (HoldStatus::Released, "released"),
                    // Expired, on the account or already dropped from it: the record says which
                    // if it ended otherwise (the commit's condition requires it still held).
                    Released::Expired | Released::NotHeld => (HoldStatus::Expired, "expired"),
                };
                let answer = json!({
                    "status": answer_status,
                    "balance": balance_json(&ledger.balance(&terms, now)),
                });
                Decided::Write(Box::new(Decision {
                    ledger,
                    change: UsageChange::Release {
                        reservation: reservation.clone(),
                        status,
                    },
                    notifications: Vec::new(),
                    answer,
                }))
            }
            UsageRequest::Check { .. } | UsageRequest::Balance { .. } => {
                unreachable!("reads are not decided as writes")
            }
        })
    }
}

/// A release whose reservation is no longer held: what became of it.
fn release_answer<S: UsageStore>(
    record: Option<HoldRecord>,
    state: &UsageAccount<S::Version>,
    handler: &UsageHandler<S>,
    now: i64,
) -> Result<Value, UsageError> {
    let Some(record) = record else {
        return Err(
            ValidationError::new("reservation_id", "no such reservation on this account").into(),
        );
    };
    let status = match record.status {
        HoldStatus::Settled => "settled",
        HoldStatus::Released => "already_released",
        HoldStatus::Expired | HoldStatus::Held => "expired",
    };
    let terms = handler.terms(&state.terms);
    Ok(json!({ "status": status, "balance": balance_json(&state.ledger.balance(&terms, now)) }))
}

/// The outbox entries a use causes, each with an id that names its cause, so that a retried
/// commit writes the same entry again rather than a second one.
fn notifications(
    account: &AccountId,
    request_id: &str,
    tracked: &Tracked,
    balance: &Balance,
) -> Vec<Notification> {
    tracked
        .notices
        .iter()
        .map(|notice| {
            let (id, detail) = match *notice {
                Notice::CreditsLow { credits, last_topup } => (
                    format!("credits.low:{account}:{request_id}"),
                    json!({ "account_id": account.as_str(), "credits": credits, "last_topup": last_topup }),
                ),
                Notice::UsageThreshold { percent, period_start, included_units } => (
                    format!("usage.threshold:{account}:{period_start}:{percent}"),
                    json!({
                        "account_id": account.as_str(),
                        "percent": percent,
                        "period_start": period_start,
                        "period_end": tracked.period.end,
                        "included_units": included_units,
                    }),
                ),
                Notice::UsageBlocked => (
                    format!("usage.blocked:{account}:{request_id}"),
                    json!({
                        "account_id": account.as_str(),
                        "plan": balance.plan,
                        "credits": balance.credits,
                        "uncovered_units": balance.uncovered_units,
                    }),
                ),
            };
            Notification {
                id,
                name: notice.name(),
                detail: detail.to_string(),
            }
        })
        .collect()
}
