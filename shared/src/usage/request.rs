//! The usage function's input: parsed strictly, every refusal naming its field.

use serde_json::{Map, Value};

use crate::ids::{AccountId, ModelName, RequestId, ReservationId};

/// Most tokens of one kind in one call.
pub const MAX_TOKENS: u64 = 1_000_000_000;
/// How far back a `timestamp` may be: Stripe's meter takes usage up to 35 days old.
pub const MAX_AGE_SECS: i64 = 35 * 86_400;
/// How far ahead a `timestamp` may be (clock skew).
pub const MAX_AHEAD_SECS: i64 = 300;
/// The longest hold.
pub const MAX_TTL_SECS: u64 = 86_400;

/// Bad input: the field and what is wrong with it. Becomes `errorType: ValidationError`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// Tokens of one model call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub reasoning: u64,
}

impl std::ops::AddAssign for Tokens {
    fn add_assign(&mut self, other: Self) {
        self.input += other.input;
        self.output += other.output;
        self.cached_input += other.cached_input;
        self.reasoning += other.reasoning;
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub model: ModelName,
    pub tokens: Tokens,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageRequest {
    Track {
        account: AccountId,
        request: RequestId,
        call: Call,
        reservation: Option<ReservationId>,
        /// When the usage happened (Unix seconds); now when absent.
        at: Option<i64>,
    },
    Check {
        account: AccountId,
        call: Call,
    },
    Reserve {
        account: AccountId,
        request: RequestId,
        call: Call,
        ttl_secs: u64,
    },
    Release {
        account: AccountId,
        reservation: ReservationId,
    },
    Balance {
        account: AccountId,
    },
}

impl UsageRequest {
    pub fn account(&self) -> &AccountId {
        match self {
            Self::Track { account, .. }
            | Self::Check { account, .. }
            | Self::Reserve { account, .. }
            | Self::Release { account, .. }
            | Self::Balance { account } => account,
        }
    }

    /// The model call a request prices, if it prices one.
    pub fn call(&self) -> Option<&Call> {
        match self {
            Self::Track { call, .. } | Self::Check { call, .. } | Self::Reserve { call, .. } => {
                Some(call)
            }
            Self::Release { .. } | Self::Balance { .. } => None,
        }
    }

    pub fn action(&self) -> &'static str {
        match self {
            Self::Track { .. } => "track",
            Self::Check { .. } => "check",
            Self::Reserve { .. } => "reserve",
            Self::Release { .. } => "release",
            Self::Balance { .. } => "balance",
        }
    }

    /// Parses and validates one invocation's payload, at `now` (for `timestamp`).
    pub fn parse(payload: &Value, now: i64) -> Result<Self, ValidationError> {
        let obj = payload
            .as_object()
            .ok_or_else(|| ValidationError::new("payload", "must be a JSON object"))?;
        let action = obj
            .get("action")
            .ok_or_else(|| ValidationError::new("action", "is required"))?
            .as_str()
            .ok_or_else(|| ValidationError::new("action", "must be a string"))?;
        const TOKENS: [&str; 4] = [
            "input_tokens",
            "output_tokens",
            "cached_input_tokens",
            "reasoning_tokens",
        ];
        let allowed: &[&str] = match action {
            "track" => &[
                "account_id",
                "request_id",
                "model",
                "reservation_id",
                "timestamp",
            ],
            "check" => &["account_id", "model"],
            "reserve" => &["account_id", "request_id", "model", "ttl_seconds"],
            "release" => &["account_id", "reservation_id"],
            "balance" => &["account_id"],
            other => {
                return Err(ValidationError::new(
                    "action",
                    format!(
                        "`{}` is not one of track, check, reserve, release, balance",
                        truncate(other)
                    ),
                ));
            }
        };
        let with_tokens = matches!(action, "track" | "check" | "reserve");
        if let Some(unknown) = obj.keys().find(|k| {
            k.as_str() != "action"
                && !allowed.contains(&k.as_str())
                && !(with_tokens && TOKENS.contains(&k.as_str()))
        }) {
            return Err(ValidationError::new(&truncate(unknown), "unknown field"));
        }
        let f = Fields(obj);
        let account = f.account()?;
        Ok(match action {
            "track" => Self::Track {
                account,
                request: f.id("request_id", RequestId::parse)?,
                call: f.call()?,
                reservation: f.optional_id("reservation_id", ReservationId::parse)?,
                at: f.timestamp(now)?,
            },
            "check" => Self::Check {
                account,
                call: f.call()?,
            },
            "reserve" => Self::Reserve {
                account,
                request: f.id("request_id", RequestId::parse)?,
                call: f.call()?,
                ttl_secs: match f.count("ttl_seconds", MAX_TTL_SECS)? {
                    Some(0) | None => {
                        return Err(ValidationError::new(
                            "ttl_seconds",
                            format!("is required: whole seconds from 1 to {MAX_TTL_SECS}"),
                        ));
                    }
                    Some(ttl) => ttl,
                },
            },
            "release" => Self::Release {
                account,
                reservation: f.id("reservation_id", ReservationId::parse)?,
            },
            _ => Self::Balance { account },
        })
    }
}

/// Field names and values echoed in messages are cut short: the message goes to logs.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    fn string(&self, field: &str) -> Result<Option<&str>, ValidationError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ValidationError::new(field, "must be a string")),
        }
    }

    fn optional_id<T, E: std::fmt::Display>(
        &self,
        field: &str,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Result<Option<T>, ValidationError> {
        self.string(field)?
            .map(|s| parse(s).map_err(|e| ValidationError::new(field, e.to_string())))
            .transpose()
    }

    fn id<T, E: std::fmt::Display>(
        &self,
        field: &str,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Result<T, ValidationError> {
        self.optional_id(field, parse)?
            .ok_or_else(|| ValidationError::new(field, "is required"))
    }

    fn account(&self) -> Result<AccountId, ValidationError> {
        self.id("account_id", AccountId::parse)
    }

    /// A whole number from 0 to `max`; absent or null is `None`.
    fn count(&self, field: &str, max: u64) -> Result<Option<u64>, ValidationError> {
        match self.0.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(v) if v <= max => Ok(Some(v)),
                _ => Err(ValidationError::new(
                    field,
                    format!("must be a whole number from 0 to {max}"),
                )),
            },
            Some(_) => Err(ValidationError::new(field, "must be a number")),
        }
    }

    fn call(&self) -> Result<Call, ValidationError> {
        let model = self.id("model", ModelName::parse)?;
        let required = |field: &str| {
            self.count(field, MAX_TOKENS)?
                .ok_or_else(|| ValidationError::new(field, "is required"))
        };
        Ok(Call {
            model,
            tokens: Tokens {
                input: required("input_tokens")?,
                output: required("output_tokens")?,
                cached_input: self.count("cached_input_tokens", MAX_TOKENS)?.unwrap_or(0),
                reasoning: self.count("reasoning_tokens", MAX_TOKENS)?.unwrap_or(0),
            },
        })
    }

    fn timestamp(&self, now: i64) -> Result<Option<i64>, ValidationError> {
        let Some(v) = self.0.get("timestamp").filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let t = v
            .as_i64()
            .ok_or_else(|| ValidationError::new("timestamp", "must be whole Unix seconds"))?;
        if t < now - MAX_AGE_SECS || t > now + MAX_AHEAD_SECS {
            return Err(ValidationError::new(
                "timestamp",
                "must be within the last 35 days and at most 5 minutes ahead",
            ));
        }
        Ok(Some(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const NOW: i64 = 1_767_225_600;

    fn field_of(v: Value) -> String {
        UsageRequest::parse(&v, NOW).unwrap_err().field
    }

    #[test]
    fn the_briefs_examples_parse() {
        let track = json!({"action":"track","account_id":"acct_1","request_id":"req_1","model":"gpt-4o","input_tokens":1000,"output_tokens":200});
        assert!(matches!(
            UsageRequest::parse(&track, NOW),
            Ok(UsageRequest::Track {
                at: None,
                reservation: None,
                ..
            })
        ));
        let reserve = json!({"action":"reserve","account_id":"acct_1","request_id":"r","model":"m","input_tokens":1,"output_tokens":2,"ttl_seconds":60});
        assert!(matches!(
            UsageRequest::parse(&reserve, NOW),
            Ok(UsageRequest::Reserve { ttl_secs: 60, .. })
        ));
        let balance = json!({"action":"balance","account_id":"acct_1"});
        assert_eq!(
            UsageRequest::parse(&balance, NOW).unwrap().action(),
            "balance"
        );
    }

    #[test]
    fn every_refusal_names_its_field() {
        let base = json!({"action":"track","account_id":"acct_1","request_id":"req_1","model":"gpt-4o","input_tokens":1,"output_tokens":2});
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            b
        };
        assert_eq!(field_of(with("input_tokens", json!(-1))), "input_tokens");
        assert_eq!(
            field_of(with("output_tokens", json!(1_000_000_001u64))),
            "output_tokens"
        );
        assert_eq!(
            field_of(with("cached_input_tokens", json!(1.5))),
            "cached_input_tokens"
        );
        assert_eq!(
            field_of(with("reasoning_tokens", json!("9"))),
            "reasoning_tokens"
        );
        assert_eq!(
            field_of(with("request_id", json!("x".repeat(129)))),
            "request_id"
        );
        assert_eq!(field_of(with("request_id", json!("a\u{0}b"))), "request_id");
        assert_eq!(field_of(with("account_id", json!("a#b"))), "account_id");
        assert_eq!(field_of(with("model", json!(""))), "model");
        assert_eq!(
            field_of(with("timestamp", json!(NOW - 36 * 86_400))),
            "timestamp"
        );
        assert_eq!(field_of(with("timestamp", json!(NOW + 301))), "timestamp");
        assert_eq!(
            field_of(with("reservation_id", json!("rsv_1"))),
            "reservation_id"
        );
        assert_eq!(field_of(with("discount", json!(1))), "discount");
        assert_eq!(field_of(with("action", json!("spend"))), "action");
        assert_eq!(
            field_of(json!({"action":"balance","account_id":"a","model":"m"})),
            "model"
        );
        assert_eq!(
            field_of(
                json!({"action":"reserve","account_id":"a","request_id":"r","model":"m","input_tokens":1,"output_tokens":1})
            ),
            "ttl_seconds"
        );
        assert_eq!(field_of(json!([1])), "payload");
        let mut missing = base.clone();
        missing.as_object_mut().unwrap().remove("output_tokens");
        assert_eq!(field_of(missing), "output_tokens");
    }

    proptest! {
        #[test]
        fn no_input_panics(s in "\\PC{0,200}") {
            if let Ok(v) = serde_json::from_str::<Value>(&s) {
                let _ = UsageRequest::parse(&v, NOW);
            }
        }

        #[test]
        fn arbitrary_field_values_are_accepted_or_named(
            field in prop::sample::select(vec!["account_id","request_id","model","input_tokens","output_tokens","cached_input_tokens","reasoning_tokens","reservation_id","timestamp"]),
            value in prop_oneof![any::<i64>().prop_map(Value::from), ".{0,140}".prop_map(Value::from), any::<f64>().prop_map(Value::from), Just(Value::Null)],
        ) {
            let mut v = json!({"action":"track","account_id":"acct_1","request_id":"req_1","model":"gpt-4o","input_tokens":1,"output_tokens":2});
            v[field] = value;
            if let Err(e) = UsageRequest::parse(&v, NOW) {
                prop_assert_eq!(e.field, field);
            }
        }
    }
}
