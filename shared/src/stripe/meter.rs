//! Meter events: the port the meter reporter sends its claims through, over async-stripe's
//! typed request (`POST /v1/billing/meter_events`), and a fake for tests.
//!
//! A call is made once per attempt, without an `Idempotency-Key`: the event's `identifier`
//! (derived from the claim) is what Stripe deduplicates meter events by, and a retry sends the
//! same one.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use stripe::StripeRequest;
use stripe_billing::billing_meter_event::CreateBillingMeterEvent;
use stripe_client_core::RequestStrategy;

use super::api::RealStripe;
use crate::metering::Claim;

/// Where the meter is, as configured: its event name and the payload key naming the customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterConfig {
    pub event_name: String,
    pub customer_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeterError {
    /// 429, 5xx, a timeout or the network: the same claim may be sent again.
    #[error("the meter event may be retried: {0}")]
    Retryable(String),
    /// Stripe refused the event itself (400): sending it again would be refused again.
    #[error("Stripe refused the meter event: {0}")]
    Rejected(String),
}

pub trait MeterApi {
    /// Sends `claim` as one meter event for `customer_id`.
    fn send(
        &self,
        meter: &MeterConfig,
        customer_id: &str,
        claim: &Claim,
    ) -> impl Future<Output = Result<(), MeterError>> + Send;
}

impl MeterApi for RealStripe {
    async fn send(
        &self,
        meter: &MeterConfig,
        customer_id: &str,
        claim: &Claim,
    ) -> Result<(), MeterError> {
        let payload = HashMap::from([
            (meter.customer_key.clone(), customer_id.to_owned()),
            ("value".to_owned(), claim.value.to_string()),
        ]);
        let request = CreateBillingMeterEvent::new(meter.event_name.clone(), payload)
            .identifier(claim.identifier.clone())
            .timestamp(claim.timestamp);
        let call = request
            .customize()
            .request_strategy(RequestStrategy::Once)
            .send(&self.client);
        match tokio::time::timeout(self.budget, call).await {
            Err(_) => Err(MeterError::Retryable(
                "no answer within the call's budget".into(),
            )),
            Ok(Ok(_event)) => Ok(()),
            Ok(Err(stripe::StripeError::Stripe(e, status))) if status == 429 || status >= 500 => {
                Err(MeterError::Retryable(format!(
                    "{status}: {}",
                    e.message.unwrap_or_default()
                )))
            }
            Ok(Err(stripe::StripeError::Stripe(e, status))) => Err(MeterError::Rejected(format!(
                "{status}: {}",
                e.message.unwrap_or_default()
            ))),
            Ok(Err(other)) => Err(MeterError::Retryable(other.to_string())),
        }
    }
}

/// A meter in memory, as Stripe keeps one: the first value of each identifier counts.
#[derive(Debug, Default)]
pub struct FakeMeter {
    state: Mutex<FakeMeterState>,
}

#[derive(Debug, Default)]
struct FakeMeterState {
    events: HashMap<String, (String, u64)>,
    calls: usize,
    /// Answers for the next calls, in order, before any is accepted.
    scripted: Vec<MeterError>,
}

impl FakeMeter {
    /// The next `n` calls fail with `error` (a 429 storm, a 5xx, a refusal).
    pub fn fail_next(&self, n: usize, error: MeterError) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.scripted.extend(std::iter::repeat_n(error, n));
    }

    /// Units the meter holds for `customer_id`, each identifier once.
    pub fn total(&self, customer_id: &str) -> u64 {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.events
            .values()
            .filter(|(c, _)| c == customer_id)
            .map(|(_, v)| v)
            .sum()
    }

    pub fn calls(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).calls
    }
}

impl MeterApi for FakeMeter {
    async fn send(
        &self,
        _meter: &MeterConfig,
        customer_id: &str,
        claim: &Claim,
    ) -> Result<(), MeterError> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.calls += 1;
        if !s.scripted.is_empty() {
            return Err(s.scripted.remove(0));
        }
        s.events
            .entry(claim.identifier.clone())
            .or_insert((customer_id.to_owned(), claim.value));
        Ok(())
    }
}

/// One meter shared by several reporters (overlapping runs in tests).
impl<T: MeterApi + Send + Sync> MeterApi for std::sync::Arc<T> {
    fn send(
        &self,
        meter: &MeterConfig,
        customer_id: &str,
        claim: &Claim,
    ) -> impl Future<Output = Result<(), MeterError>> + Send {
        (**self).send(meter, customer_id, claim)
    }
}
