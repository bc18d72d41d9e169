//! One Stripe write under the caller's `Idempotency-Key`, retried the way every write of the
//! backend is: 429 and 409 (the key still in use by a concurrent twin) go again under the same
//! key, so the retry gets the first answer; after a 5xx, which Stripe stores under its key and
//! replays, the next attempt takes a key of its own (`{key}:1`), which each caller has judged
//! safe for its call. Everything inside one budget, so a hung Stripe cannot hold the function.

use std::time::Duration;

use stripe::StripeRequest;
use stripe_client_core::{IdempotencyKey, RequestBuilder, RequestStrategy, StripeMethod};

use crate::retry::full_jitter;

/// A form request whose answer is read as plain JSON: for calls where only an id or a status
/// matters, so no full Stripe object has to parse.
pub struct RawRequest {
    method: StripeMethod,
    path: String,
    form: Option<serde_json::Value>,
}

impl RawRequest {
    pub fn post(path: &str, form: &serde_json::Value) -> Self {
        Self {
            method: StripeMethod::Post,
            path: path.to_owned(),
            form: Some(form.clone()),
        }
    }

    pub fn get(path: &str) -> Self {
        Self {
            method: StripeMethod::Get,
            path: path.to_owned(),
            form: None,
        }
    }
}

impl StripeRequest for RawRequest {
    type Output = miniserde::json::Value;

    fn build(&self) -> RequestBuilder {
        let request = RequestBuilder::new(self.method, self.path.as_str());
        match &self.form {
            Some(form) => request.form(form),
            None => request,
        }
    }
}

/// A string field of a JSON answer.
pub fn field<'a>(answer: &'a miniserde::json::Value, name: &str) -> Option<&'a str> {
    match answer {
        miniserde::json::Value::Object(map) => match map.get(name) {
            Some(miniserde::json::Value::String(s)) => Some(s.as_str()),
            _ => None,
        },
        _ => None,
    }
}

/// Attempts per call.
const ATTEMPTS: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyedError {
    /// 429, 409, 5xx, no answer within the budget: the same call may succeed later.
    Retryable(String),
    /// Stripe refused the request itself (4xx other than 409 and 429); `reason` quotes it.
    Refused {
        status: u16,
        code: Option<String>,
        reason: String,
    },
}

impl KeyedError {
    /// The refusal, as a caller reports it.
    pub fn describe(&self) -> String {
        match self {
            KeyedError::Retryable(why) => why.clone(),
            KeyedError::Refused { reason, .. } => reason.clone(),
        }
    }
}

/// Sends `build()` under `key` (see the module), within `budget`.
pub async fn send_keyed<R>(
    client: &stripe::Client,
    budget: Duration,
    key: &str,
    build: impl Fn() -> R,
) -> Result<R::Output, KeyedError>
where
    R: StripeRequest,
    R::Output: miniserde::Deserialize + Send + 'static,
{
    let deadline = tokio::time::Instant::now() + budget;
    let mut generation = 0u32;
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(full_jitter(Duration::from_millis(200), attempt)).await;
        }
        let this_key = match generation {
            0 => key.to_owned(),
            n => format!("{key}:{n}"),
        };
        let idempotency = IdempotencyKey::new(&this_key).map_err(|e| KeyedError::Refused {
            status: 0,
            code: None,
            reason: format!("idempotency key: {e}"),
        })?;
        let call = build()
            .customize()
            .request_strategy(RequestStrategy::Idempotent(idempotency))
            .send(client);
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, call).await {
            Err(_) => {
                last = "no answer within the call's budget".into();
                break;
            }
            Ok(Ok(out)) => return Ok(out),
            Ok(Err(stripe::StripeError::Stripe(e, status)))
                if status == 429 || status == 409 || status >= 500 =>
            {
                if status >= 500 {
                    generation += 1;
                }
                last = format!("{status}: {}", e.message.unwrap_or_default());
            }
            Ok(Err(stripe::StripeError::Stripe(e, status))) => {
                let code = e.code.as_ref().map(|c| c.as_str().to_owned());
                let reason = match &code {
                    Some(code) => format!("{status} {code}: {}", e.message.unwrap_or_default()),
                    None => format!("{status}: {}", e.message.unwrap_or_default()),
                };
                return Err(KeyedError::Refused {
                    status,
                    code,
                    reason,
                });
            }
            Ok(Err(other)) => last = other.to_string(),
        }
    }
    Err(KeyedError::Retryable(last))
}
