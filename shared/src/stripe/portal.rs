//! Customer portal sessions: the port the API opens them through, over async-stripe's typed
//! request (`POST /v1/billing_portal/sessions`), and a fake for tests.
//!
//! Each call carries an `Idempotency-Key` derived by the caller from the request, so a retried
//! call (ours after a 429 or a timeout, or the app's) opens one session, not several; after a 5xx,
//! which Stripe stores under the key, the retry takes a key of its own.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use stripe_billing::billing_portal_session::CreateBillingPortalSession;

use super::api::RealStripe;
use super::keyed::{KeyedError, send_keyed};

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

/// The whole call, retries included, inside the API function's timeout.
const BUDGET: Duration = Duration::from_secs(8);

impl PortalApi for RealStripe {
    async fn portal_session(
        &self,
        customer_id: &str,
        return_url: &str,
        idempotency_key: &str,
    ) -> Result<String, PortalError> {
        // After a 5xx the retry takes a key of its own: a second portal session is harmless, a
        // stuck key is not.
        let build = || {
            CreateBillingPortalSession::new()
                .customer(customer_id)
                .return_url(return_url)
        };
        match send_keyed(
            &self.client,
            BUDGET.min(self.budget),
            idempotency_key,
            build,
        )
        .await
        {
            Ok(session) => Ok(session.url),
            Err(KeyedError::Retryable(why)) => Err(PortalError::Retryable(why)),
            Err(refused) => Err(PortalError::Rejected(refused.describe())),
        }
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
