//! Meter events: the port the meter reporter sends its claims through, over async-stripe's
//! typed request (`POST /v1/billing/meter_events`); the port reconciliation reads the meter's
//! totals through (`GET /v1/billing/meters`, `.../event_summaries`); and a fake for both.
//!
//! A call is made once per attempt, without an `Idempotency-Key`: the event's `identifier`
//! (derived from the claim) is what Stripe deduplicates meter events by, and a retry sends the
//! same one.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use stripe::StripeRequest;
use stripe_billing::billing_meter::ListBillingMeter;
use stripe_billing::billing_meter_event::CreateBillingMeterEvent;
use stripe_billing::billing_meter_event_summary::ListIdBillingMeterEventSummary;
use stripe_client_core::RequestStrategy;

use super::api::RealStripe;
use crate::catalog::{PriceKind, StripePriceFacts};
use crate::config::{ConfigError, EnvSource, required};
use crate::metering::Claim;
use crate::secrets::StripeMode;
use anyhow::Context;

/// Where the meter is, as configured: its event name and the payload key naming the customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterConfig {
    pub event_name: String,
    pub customer_key: String,
}

/// What the meter reporter and the reconciler read from the environment at cold start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeteringEnv {
    pub table_name: String,
    /// Id or ARN of the Secrets Manager secret holding the Stripe API key.
    pub api_key_secret_id: String,
    /// Where Stripe's API is (the local simulator, in the local stack); Stripe's own by default.
    pub stripe_api_base: Option<String>,
    /// The stack's Stripe mode: the key must be of it.
    pub stripe_mode: StripeMode,
    pub meter: MeterConfig,
}

impl MeteringEnv {
    pub fn from_env(env: &impl EnvSource) -> Result<Self, ConfigError> {
        Ok(Self {
            table_name: required(env, "TABLE_NAME")?,
            api_key_secret_id: required(env, "STRIPE_API_KEY_SECRET_ID")?,
            stripe_api_base: env.get("STRIPE_API_BASE").filter(|v| !v.trim().is_empty()),
            stripe_mode: StripeMode::from_env(env)?,
            meter: MeterConfig {
                event_name: required(env, "METER_EVENT_NAME")?,
                customer_key: env
                    .get("METER_CUSTOMER_KEY")
                    .filter(|v| !v.trim().is_empty())
                    .unwrap_or_else(|| "stripe_customer_id".to_owned()),
            },
        })
    }

    /// The Stripe client, with the API key read from Secrets Manager once.
    pub async fn stripe(&self, aws: &aws_config::SdkConfig) -> anyhow::Result<RealStripe> {
        let secrets = crate::secrets::load_api_key(
            &aws_sdk_secretsmanager::Client::new(aws),
            &self.api_key_secret_id,
        )
        .await?
        .for_mode(self.stripe_mode)
        .with_context(|| format!("checking secret {}", self.api_key_secret_id))?;
        RealStripe::new(&secrets.api_key, self.stripe_api_base.as_deref())
    }
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

/// What reconciliation reads of a meter.
pub trait MeterReadApi {
    /// The id of the active meter whose `event_name` is `event_name`, if there is one.
    fn find_meter(
        &self,
        event_name: &str,
    ) -> impl Future<Output = Result<Option<String>, MeterError>> + Send;

    /// The meter's total for `customer_id` over `[start, end)` (whole minutes).
    fn total(
        &self,
        meter_id: &str,
        customer_id: &str,
        start: i64,
        end: i64,
    ) -> impl Future<Output = Result<u64, MeterError>> + Send;

    /// The prices Stripe has under these lookup keys (the daily catalog check).
    fn prices(
        &self,
        lookup_keys: &[String],
    ) -> impl Future<Output = Result<Vec<StripePriceFacts>, MeterError>> + Send;
}

/// A price from Stripe's JSON, as the catalog check compares it.
fn price_facts(p: &serde_json::Value) -> Option<StripePriceFacts> {
    let recurring = p.get("recurring").filter(|r| !r.is_null());
    let kind = match (
        p.get("type")?.as_str()?,
        recurring.and_then(|r| r.get("usage_type")?.as_str()),
    ) {
        ("one_time", _) => Some(PriceKind::OneTime),
        (_, Some("licensed")) => Some(PriceKind::Licensed),
        (_, Some("metered")) => Some(PriceKind::Metered),
        _ => None,
    };
    Some(StripePriceFacts {
        id: p.get("id")?.as_str()?.to_owned(),
        lookup_key: p.get("lookup_key")?.as_str()?.to_owned(),
        active: p.get("active")?.as_bool()?,
        currency: p.get("currency")?.as_str()?.to_owned(),
        kind,
        unit_amount: p.get("unit_amount").and_then(serde_json::Value::as_u64),
        divide_by: p
            .get("transform_quantity")
            .and_then(|t| t.get("divide_by")?.as_u64()),
        tiers_mode: p
            .get("tiers_mode")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned),
        meter: recurring
            .and_then(|r| r.get("meter")?.as_str())
            .map(str::to_owned),
    })
}

fn stripe_error(e: stripe::StripeError) -> MeterError {
    match e {
        stripe::StripeError::Stripe(e, status) if status == 429 || status >= 500 => {
            MeterError::Retryable(format!("{status}: {}", e.message.unwrap_or_default()))
        }
        stripe::StripeError::Stripe(e, status) => {
            MeterError::Rejected(format!("{status}: {}", e.message.unwrap_or_default()))
        }
        other => MeterError::Retryable(other.to_string()),
    }
}

impl MeterReadApi for RealStripe {
    async fn prices(&self, lookup_keys: &[String]) -> Result<Vec<StripePriceFacts>, MeterError> {
        let mut out = Vec::new();
        // Stripe takes at most 10 lookup keys per list.
        for keys in lookup_keys.chunks(10) {
            let page = self
                .get_with(
                    "/prices".into(),
                    Some(serde_json::json!({ "lookup_keys": keys, "limit": 100 })),
                    "the catalog's prices".into(),
                )
                .await
                .map_err(|e| MeterError::Retryable(e.to_string()))?;
            let data = page
                .get("data")
                .and_then(serde_json::Value::as_array)
                .ok_or_else(|| MeterError::Rejected("a price list without `data`".into()))?;
            out.extend(data.iter().filter_map(price_facts));
        }
        Ok(out)
    }

    async fn find_meter(&self, event_name: &str) -> Result<Option<String>, MeterError> {
        let mut request = ListBillingMeter::new().limit(100);
        loop {
            let call = request.send(&self.client);
            let page = tokio::time::timeout(self.budget, call)
                .await
                .map_err(|_| MeterError::Retryable("no answer within the call's budget".into()))?
                .map_err(stripe_error)?;
            if let Some(m) = page.data.iter().find(|m| {
                m.event_name == event_name && m.status == stripe_billing::BillingMeterStatus::Active
            }) {
                return Ok(Some(m.id.to_string()));
            }
            match page.data.last() {
                Some(last) if page.has_more => {
                    request = ListBillingMeter::new()
                        .limit(100)
                        .starting_after(last.id.to_string());
                }
                _ => return Ok(None),
            }
        }
    }

    async fn total(
        &self,
        meter_id: &str,
        customer_id: &str,
        start: i64,
        end: i64,
    ) -> Result<u64, MeterError> {
        // Without a grouping window Stripe sums the whole range into one summary.
        let request = ListIdBillingMeterEventSummary::new(meter_id, customer_id, end, start);
        let call = request.send(&self.client);
        let list = tokio::time::timeout(self.budget, call)
            .await
            .map_err(|_| MeterError::Retryable("no answer within the call's budget".into()))?
            .map_err(stripe_error)?;
        let mut total = 0u64;
        for summary in &list.data {
            let v = summary.aggregated_value;
            // Sums of whole units, far below 2^53: anything else is not a total we can trust.
            if !(v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < 9.0e15) {
                return Err(MeterError::Rejected(format!(
                    "the meter summed to {v}, not a whole number of units"
                )));
            }
            total += v as u64;
        }
        Ok(total)
    }
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
            Ok(Err(e)) => Err(stripe_error(e)),
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
    /// identifier → (customer, value, timestamp)
    events: HashMap<String, (String, u64, i64)>,
    calls: usize,
    summary_calls: usize,
    /// Answers for the next calls, in order, before any is accepted.
    scripted: Vec<MeterError>,
    /// The account's prices, for the catalog check.
    prices: Vec<StripePriceFacts>,
}

impl FakeMeter {
    /// The account's prices, as the catalog check will read them.
    pub fn set_prices(&self, prices: Vec<StripePriceFacts>) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).prices = prices;
    }

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
            .filter(|(c, _, _)| c == customer_id)
            .map(|(_, v, _)| v)
            .sum()
    }

    /// Plants an event as if sent by another writer (a double count, a stray event).
    pub fn plant(&self, identifier: &str, customer_id: &str, value: u64, timestamp: i64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.events.insert(
            identifier.to_owned(),
            (customer_id.to_owned(), value, timestamp),
        );
    }

    pub fn summary_calls(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .summary_calls
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
        s.events.entry(claim.identifier.clone()).or_insert((
            customer_id.to_owned(),
            claim.value,
            claim.timestamp,
        ));
        Ok(())
    }
}

/// The fake's one meter is found under any event name, as `mtr_fake`.
impl MeterReadApi for FakeMeter {
    async fn prices(&self, lookup_keys: &[String]) -> Result<Vec<StripePriceFacts>, MeterError> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Ok(s.prices
            .iter()
            .filter(|p| lookup_keys.contains(&p.lookup_key))
            .cloned()
            .collect())
    }

    async fn find_meter(&self, _event_name: &str) -> Result<Option<String>, MeterError> {
        Ok(Some("mtr_fake".into()))
    }

    async fn total(
        &self,
        _meter_id: &str,
        customer_id: &str,
        start: i64,
        end: i64,
    ) -> Result<u64, MeterError> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.summary_calls += 1;
        if !s.scripted.is_empty() {
            return Err(s.scripted.remove(0));
        }
        Ok(s.events
            .values()
            .filter(|(c, _, at)| c == customer_id && (start..end).contains(at))
            .map(|(_, v, _)| v)
            .sum())
    }
}

impl<T: MeterReadApi + Send + Sync> MeterReadApi for std::sync::Arc<T> {
    fn find_meter(
        &self,
        event_name: &str,
    ) -> impl Future<Output = Result<Option<String>, MeterError>> + Send {
        (**self).find_meter(event_name)
    }

    fn total(
        &self,
        meter_id: &str,
        customer_id: &str,
        start: i64,
        end: i64,
    ) -> impl Future<Output = Result<u64, MeterError>> + Send {
        (**self).total(meter_id, customer_id, start, end)
    }

    fn prices(
        &self,
        lookup_keys: &[String],
    ) -> impl Future<Output = Result<Vec<StripePriceFacts>, MeterError>> + Send {
        (**self).prices(lookup_keys)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metering_environment_names_what_is_missing_and_defaults_the_customer_key() {
        let base = [
            ("TABLE_NAME", "t"),
            ("STRIPE_API_KEY_SECRET_ID", "s"),
            ("STRIPE_LIVEMODE", "false"),
            ("METER_EVENT_NAME", "llm_overage_units"),
        ];
        let env = MeteringEnv::from_env(&base).unwrap();
        assert_eq!(env.meter.customer_key, "stripe_customer_id");
        assert_eq!(env.stripe_api_base, None);
        assert_eq!(env.stripe_mode, StripeMode::Test);
        assert_eq!(
            MeteringEnv::from_env(&[base[0], base[1], base[2]]),
            Err(ConfigError::Missing("METER_EVENT_NAME"))
        );
        assert_eq!(
            MeteringEnv::from_env(&[base[0], base[1], base[3]]),
            Err(ConfigError::Missing("STRIPE_LIVEMODE"))
        );
        let with = [
            base[0],
            base[1],
            base[2],
            base[3],
            ("METER_CUSTOMER_KEY", "customer"),
            ("STRIPE_API_BASE", "http://127.0.0.1:12111"),
        ];
        let env = MeteringEnv::from_env(&with).unwrap();
        assert_eq!(env.meter.customer_key, "customer");
        assert_eq!(
            env.stripe_api_base.as_deref(),
            Some("http://127.0.0.1:12111")
        );
    }
}
