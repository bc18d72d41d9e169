//! The Stripe API port: what the backend asks Stripe for, behind a small trait.
//!
//! `RealStripe` calls Stripe through async-stripe (retries with exponential backoff on 429 and
//! 5xx, `Stripe-Version` pinned by the library); `FakeStripe` answers from memory for
//! in-process tests, counts calls, and fails on request.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use stripe::StripeRequest;
use stripe_client_core::{RequestBuilder, StripeMethod};

use crate::ids::StripeEventId;
use crate::secrets::SecretString;

/// Objects the processor may fetch to settle a same-second tie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    Subscription,
    Invoice,
    Customer,
}

impl ObjectKind {
    fn path(self) -> &'static str {
        match self {
            ObjectKind::Subscription => "subscriptions",
            ObjectKind::Invoice => "invoices",
            ObjectKind::Customer => "customers",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StripeApiError {
    /// Stripe said the thing does not exist (404): retrying will not change that.
    #[error("Stripe has no {0}")]
    NotFound(String),
    /// Anything else (network, 429 and 5xx after retries, a response that does not parse).
    #[error("Stripe call failed: {0}")]
    Failed(String),
}

pub trait StripeApi {
    /// `GET /v1/events/{id}`: the whole event, as JSON bytes.
    fn event(
        &self,
        id: &StripeEventId,
    ) -> impl Future<Output = Result<Vec<u8>, StripeApiError>> + Send;

    /// `GET /v1/{subscriptions|invoices|customers}/{id}`: the object as it is now.
    fn object(
        &self,
        kind: ObjectKind,
        id: &str,
    ) -> impl Future<Output = Result<serde_json::Value, StripeApiError>> + Send;

    /// `GET /v1/events?created[gte]=..&starting_after=..&limit=100`.
    fn events_since(
        &self,
        created_gte: i64,
        starting_after: Option<&str>,
    ) -> impl Future<Output = Result<EventPage, StripeApiError>> + Send;
}

/// A GET whose response is kept as JSON: the processor parses it with its own lean types.
struct RawGet {
    path: String,
    query: Option<serde_json::Value>,
}

impl StripeRequest for RawGet {
    type Output = miniserde::json::Value;

    fn build(&self) -> RequestBuilder {
        let request = RequestBuilder::new(StripeMethod::Get, self.path.as_str());
        match &self.query {
            Some(q) => request.query(q),
            None => request,
        }
    }
}

/// One page of `GET /v1/events`, newest first (Stripe's order).
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    pub events: Vec<serde_json::Value>,
    pub has_more: bool,
}

/// One attempt of a Stripe call may take this long before it is abandoned and retried.
pub const ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
/// A whole Stripe call, retries and backoff included, never takes longer than this: a hung
/// Stripe must not run a batch into the Lambda timeout (every unprocessed message would lose a
/// receive). Callers that must finish before a deadline budget for it.
pub const CALL_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Clone)]
pub struct RealStripe {
    pub(super) client: stripe::Client,
    pub(super) budget: std::time::Duration,
}

impl std::fmt::Debug for RealStripe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RealStripe")
    }
}

impl RealStripe {
    /// A client for `api_key`; `base_url` points it elsewhere than `https://api.stripe.com`
    /// (the local simulator).
    pub fn new(api_key: &SecretString, base_url: Option<&str>) -> anyhow::Result<Self> {
        Self::with_timeouts(api_key, base_url, ATTEMPT_TIMEOUT, CALL_BUDGET)
    }

    /// As `new`, with other limits per attempt and per call.
    pub fn with_timeouts(
        api_key: &SecretString,
        base_url: Option<&str>,
        attempt: std::time::Duration,
        budget: std::time::Duration,
    ) -> anyhow::Result<Self> {
        let mut builder = stripe::ClientBuilder::new(api_key.expose())
            .request_strategy(stripe::RequestStrategy::ExponentialBackoff(4))
            .timeout(attempt);
        if let Some(url) = base_url {
            builder = builder.url(url);
        }
        let client = builder
            .build()
            .map_err(|e| anyhow::anyhow!("building the Stripe client: {e}"))?;
        Ok(Self { client, budget })
    }

    /// The async-stripe client, for typed requests a function sends itself.
    pub fn client(&self) -> &stripe::Client {
        &self.client
    }

    async fn get(&self, path: String, what: String) -> Result<serde_json::Value, StripeApiError> {
        self.get_with(path, None, what).await
    }

    pub(crate) async fn get_with(
        &self,
        path: String,
        query: Option<serde_json::Value>,
        what: String,
    ) -> Result<serde_json::Value, StripeApiError> {
        let call = RawGet { path, query }.customize().send(&self.client);
        let value = tokio::time::timeout(self.budget, call)
            .await
            .map_err(|_| {
                StripeApiError::Failed(format!(
                    "no answer for {what} within {} s",
                    self.budget.as_secs_f32()
                ))
            })?
            .map_err(|e| match e {
                stripe::StripeError::Stripe(_, 404) => StripeApiError::NotFound(what),
                other => StripeApiError::Failed(other.to_string()),
            })?;
        serde_json::from_str(&miniserde::json::to_string(&value))
            .map_err(|e| StripeApiError::Failed(format!("re-reading Stripe's response: {e}")))
    }
}

impl StripeApi for RealStripe {
    async fn event(&self, id: &StripeEventId) -> Result<Vec<u8>, StripeApiError> {
        let value = self
            .get(format!("/events/{id}"), format!("event {id}"))
            .await?;
        serde_json::to_vec(&value).map_err(|e| StripeApiError::Failed(e.to_string()))
    }

    async fn object(
        &self,
        kind: ObjectKind,
        id: &str,
    ) -> Result<serde_json::Value, StripeApiError> {
        self.get(
            format!("/{}/{id}", kind.path()),
            format!("{} {id}", kind.path()),
        )
        .await
    }

    async fn events_since(
        &self,
        created_gte: i64,
        starting_after: Option<&str>,
    ) -> Result<EventPage, StripeApiError> {
        let mut query = serde_json::json!({ "created": { "gte": created_gte }, "limit": 100 });
        if let Some(after) = starting_after {
            query["starting_after"] = serde_json::Value::from(after);
        }
        let page = self
            .get_with("/events".into(), Some(query), "events".into())
            .await?;
        Ok(EventPage {
            has_more: page["has_more"].as_bool().unwrap_or(false),
            events: page["data"].as_array().cloned().unwrap_or_default(),
        })
    }
}

/// Stripe in memory, for tests: holds events and objects, counts calls, fails on request.
#[derive(Debug, Default)]
pub struct FakeStripe {
    inner: Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    events: HashMap<String, Vec<u8>>,
    objects: HashMap<(ObjectKind, String), serde_json::Value>,
    calls: usize,
    failing: bool,
}

impl FakeStripe {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FakeState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn put_event(&self, id: &str, raw: Vec<u8>) {
        self.lock().events.insert(id.to_owned(), raw);
    }

    pub fn put_object(&self, kind: ObjectKind, id: &str, value: serde_json::Value) {
        self.lock().objects.insert((kind, id.to_owned()), value);
    }

    /// Makes every call fail (as Stripe being unreachable would).
    pub fn set_failing(&self, failing: bool) {
        self.lock().failing = failing;
    }

    pub fn calls(&self) -> usize {
        self.lock().calls
    }
}

impl StripeApi for FakeStripe {
    async fn event(&self, id: &StripeEventId) -> Result<Vec<u8>, StripeApiError> {
        let mut s = self.lock();
        s.calls += 1;
        if s.failing {
            return Err(StripeApiError::Failed("injected failure".into()));
        }
        s.events
            .get(id.as_str())
            .cloned()
            .ok_or_else(|| StripeApiError::NotFound(format!("event {id}")))
    }

    async fn object(
        &self,
        kind: ObjectKind,
        id: &str,
    ) -> Result<serde_json::Value, StripeApiError> {
        let mut s = self.lock();
        s.calls += 1;
        if s.failing {
            return Err(StripeApiError::Failed("injected failure".into()));
        }
        s.objects
            .get(&(kind, id.to_owned()))
            .cloned()
            .ok_or_else(|| StripeApiError::NotFound(format!("{} {id}", kind.path())))
    }

    async fn events_since(
        &self,
        created_gte: i64,
        starting_after: Option<&str>,
    ) -> Result<EventPage, StripeApiError> {
        let mut s = self.lock();
        s.calls += 1;
        if s.failing {
            return Err(StripeApiError::Failed("injected failure".into()));
        }
        let mut all: Vec<serde_json::Value> = s
            .events
            .values()
            .filter_map(|raw| serde_json::from_slice::<serde_json::Value>(raw).ok())
            .filter(|e| e["created"].as_i64().unwrap_or(0) >= created_gte)
            .collect();
        all.sort_by(|a, b| {
            b["created"]
                .as_i64()
                .cmp(&a["created"].as_i64())
                .then(b["id"].as_str().cmp(&a["id"].as_str()))
        });
        let start = starting_after
            .and_then(|after| all.iter().position(|e| e["id"] == after).map(|i| i + 1))
            .unwrap_or(0);
        let rest = &all[start.min(all.len())..];
        Ok(EventPage {
            has_more: rest.len() > 100,
            events: rest.iter().take(100).cloned().collect(),
        })
    }
}
