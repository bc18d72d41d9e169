//! Customer portal sessions: the port the API opens them through, over async-stripe's typed
//! request (`POST /v1/billing_portal/sessions`), and a fake for tests.
//!
//! Each call carries an `Idempotency-Key` derived by the caller from the request, so a retried
//! call (ours after a 429 or a timeout, or the app's) opens one session, not several; after a 5xx,
//! which Stripe stores under the key, the retry takes a key of its own.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use stripe::StripeRequest;
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_client_core::{IdempotencyKey, RequestStrategy};

use super::api::RealStripe;
use crate::retry::full_jitter;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortalError {
    /// 429, 5xx, a timeout: the same call may succeed later.
    #[error("Stripe did not open the portal session; try again: {0}")]
    Retryable(String),
    /// Stripe refused the request itself (an unknown customer, a bad return URL).
    #[error("Stripe refused the portal session: {0}")]
    Rejected(String),
}

pub trait PortalApi {
    /// A portal session for `customer_id` that returns to `return_url`: its URL.
    fn portal_session(
        &self,
        customer_id: &str,
        return_url: &str,
        idempotency_key: &str,
    ) -> impl Future<Output = Result<String, PortalError>> + Send;
}

/// Attempts per portal call when Stripe answers 429, 409 (the key in use) or 5xx.
const ATTEMPTS: u32 = 3;
/// The whole call, retries included, inside the API function's timeout.
const BUDGET: Duration = Duration::from_secs(8);

impl PortalApi for RealStripe {
    async fn portal_session(
        &self,
        customer_id: &str,
        return_url: &str,
        idempotency_key: &str,
    ) -> Result<String, PortalError> {
        let deadline = tokio::time::Instant::now() + BUDGET;
        // Stripe keeps a 5xx answer under its key and replays it: after one, the next attempt
        // goes out under a key of its own (a second portal session is harmless, a stuck key is not).
        let mut generation = 0u32;
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(full_jitter(Duration::from_millis(200), attempt)).await;
            }
            let key = if generation == 0 {
                idempotency_key.to_owned()
            } else {
                format!("{idempotency_key}:{generation}")
            };
            let key = IdempotencyKey::new(&key)
                .map_err(|e| PortalError::Rejected(format!("idempotency key: {e}")))?;
            let request = CreateBillingPortalSession::new()
                .customer(customer_id)
                .return_url(return_url);
            let call = request
                .customize()
                .request_strategy(RequestStrategy::Idempotent(key))
                .send(&self.client);
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left.min(self.budget), call).await {
                Err(_) => {
                    last = "no answer within the call's budget".into();
                    if tokio::time::Instant::now() >= deadline {
                        break;
                    }
                }
                Ok(Ok(session)) => return Ok(session.url),
                Ok(Err(stripe::StripeError::Stripe(e, status)))
                    if status == 429 || status == 409 || status >= 500 =>
                {
                    if status >= 500 {
                        generation += 1;
                    }
                    last = format!("{status}: {}", e.message.unwrap_or_default());
                }
                Ok(Err(stripe::StripeError::Stripe(e, status))) => {
                    return Err(PortalError::Rejected(format!(
                        "{status}: {}",
                        e.message.unwrap_or_default()
                    )));
                }
                Ok(Err(other)) => last = other.to_string(),
            }
        }
        Err(PortalError::Retryable(last))
    }
}

/// Opens sessions in memory: one per idempotency key, as Stripe replays a key's first answer.
#[derive(Debug, Default)]
pub struct FakePortal {
    /// (customer, return URL, key) of every call, in order.
    pub calls: Mutex<Vec<(String, String, String)>>,
    pub fail_next: Mutex<Option<PortalError>>,
}

impl PortalApi for FakePortal {
    async fn portal_session(
        &self,
        customer_id: &str,
        return_url: &str,
        idempotency_key: &str,
    ) -> Result<String, PortalError> {
        if let Some(e) = self
            .fail_next
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            return Err(e);
        }
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.push((
            customer_id.to_owned(),
            return_url.to_owned(),
            idempotency_key.to_owned(),
        ));
        let first = calls
            .iter()
            .position(|(_, _, k)| k == idempotency_key)
            .unwrap_or(0);
        Ok(format!("https://billing.stripe.com/p/session/test_{first}"))
    }
}
