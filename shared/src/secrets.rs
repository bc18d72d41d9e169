//! Secrets: fetched once at cold start, never logged, redacted in `Debug`.
//!
//! Two Secrets Manager secrets, so that each function can read only what it uses:
//! - the webhook signing secrets, `{"webhook_secrets": ["whsec_new", "whsec_old"]}` (several
//!   are live at once while one is being rotated), read by the internet-facing webhook alone;
//! - the Stripe API key, `{"api_key": "sk_live_..."}`, read by the functions that call Stripe.
//!
//! The webhook refuses a signing-secret document that also holds an API key: it must never
//! hold `sk_`, whatever is put where.

use anyhow::Context;
use serde_json::Value;

use crate::config::{ConfigError, EnvSource, required_bool};

/// A string that never prints itself.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The one way to read the value; grep for it to audit every use.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretString([redacted])")
    }
}

/// The webhook's signing secrets.
#[derive(Clone, Debug)]
pub struct WebhookSecrets {
    pub webhook_secrets: Vec<SecretString>,
}

/// The Stripe API key.
#[derive(Clone, Debug)]
pub struct StripeApiKey {
    pub api_key: SecretString,
    mode: StripeMode,
}

/// Which of Stripe's two worlds a key, or a stack, belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StripeMode {
    Live,
    Test,
}

impl StripeMode {
    /// The stack's mode: `STRIPE_LIVEMODE`, which the template sets from `StripeLivemode`.
    pub fn from_env(env: &impl EnvSource) -> Result<Self, ConfigError> {
        Ok(if required_bool(env, "STRIPE_LIVEMODE")? {
            Self::Live
        } else {
            Self::Test
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Test => "test",
        }
    }

    fn livemode(self) -> bool {
        self == Self::Live
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    /// Messages name fields, never values: a secret must not reach a log through an error.
    #[error("the secret is not a JSON object")]
    NotAnObject,
    #[error("the secret has no `{0}`")]
    Missing(&'static str),
    #[error("the secret's `{field}` is invalid: {reason}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
    #[error("the secret holds `{0}`, which belongs in another secret: refused")]
    Misplaced(&'static str),
    /// A test key in a live stack bills no one; a live key in a test stack charges real cards.
    #[error(
        "the Stripe API key is a {}-mode key, but this stack runs in {} mode \
         (StripeLivemode={}): put a {}-mode key in the secret, or deploy the stack with \
         StripeLivemode={}",
        key.as_str(), stack.as_str(), stack.livemode(), stack.as_str(), key.livemode()
    )]
    WrongMode { key: StripeMode, stack: StripeMode },
}

fn object(text: &str) -> Result<serde_json::Map<String, Value>, SecretsError> {
    // Parsed as a Value and read by hand: serde's typed errors quote the offending value.
    match serde_json::from_str(text) {
        Ok(Value::Object(o)) => Ok(o),
        _ => Err(SecretsError::NotAnObject),
    }
}

impl WebhookSecrets {
    pub fn from_json(text: &str) -> Result<Self, SecretsError> {
        let object = object(text)?;
        if object.contains_key("api_key") {
            return Err(SecretsError::Misplaced("api_key"));
        }
        let list = object
            .get("webhook_secrets")
            .ok_or(SecretsError::Missing("webhook_secrets"))?
            .as_array()
            .ok_or(SecretsError::Invalid {
                field: "webhook_secrets",
                reason: "expected a list of strings",
            })?;
        if list.is_empty() {
            return Err(SecretsError::Invalid {
                field: "webhook_secrets",
                reason: "at least one signing secret is needed",
            });
        }
        let webhook_secrets = list
            .iter()
            .map(|s| match s.as_str() {
                Some(s) if s.starts_with("whsec_") && s.len() > "whsec_".len() => {
                    Ok(SecretString::new(s))
                }
                _ => Err(SecretsError::Invalid {
                    field: "webhook_secrets",
                    reason: "every entry must be a signing secret string (whsec_...)",
                }),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { webhook_secrets })
    }
}

impl StripeApiKey {
    pub fn from_json(text: &str) -> Result<Self, SecretsError> {
        let object = object(text)?;
        let api_key = object
            .get("api_key")
            .ok_or(SecretsError::Missing("api_key"))?
            .as_str()
            .ok_or(SecretsError::Invalid {
                field: "api_key",
                reason: "expected a string",
            })?;
        // Every Stripe secret or restricted key names its mode (Stripe docs, "API keys").
        let mode = match api_key.get(..8) {
            Some("sk_live_" | "rk_live_") => StripeMode::Live,
            Some("sk_test_" | "rk_test_") => StripeMode::Test,
            _ => {
                return Err(SecretsError::Invalid {
                    field: "api_key",
                    reason: "expected a secret or restricted key (sk_live_, sk_test_, rk_live_, rk_test_)",
                });
            }
        };
        if api_key.len() == 8 {
            return Err(SecretsError::Invalid {
                field: "api_key",
                reason: "the key is empty after its prefix",
            });
        }
        Ok(Self {
            api_key: SecretString::new(api_key),
            mode,
        })
    }

    pub fn mode(&self) -> StripeMode {
        self.mode
    }

    /// The key, if it belongs to the stack's mode.
    pub fn for_mode(self, stack: StripeMode) -> Result<Self, SecretsError> {
        if self.mode == stack {
            Ok(self)
        } else {
            Err(SecretsError::WrongMode {
                key: self.mode,
                stack,
            })
        }
    }
}

async fn read(client: &aws_sdk_secretsmanager::Client, secret_id: &str) -> anyhow::Result<String> {
    let output = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .with_context(|| format!("reading secret {secret_id} from Secrets Manager"))?;
    output
        .secret_string()
        .map(str::to_owned)
        .with_context(|| format!("secret {secret_id} has no string value"))
}

/// Reads and parses the webhook signing secrets.
pub async fn load_webhook_secrets(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> anyhow::Result<WebhookSecrets> {
    let text = read(client, secret_id).await?;
    WebhookSecrets::from_json(&text).with_context(|| format!("parsing secret {secret_id}"))
}

/// Reads the Stripe API key for a function of the stack: refused at cold start unless its mode
/// is the stack's (`STRIPE_LIVEMODE`).
pub async fn load_stack_api_key(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
    env: &impl EnvSource,
) -> anyhow::Result<StripeApiKey> {
    let stack = StripeMode::from_env(env)?;
    let key = load_api_key(client, secret_id).await?;
    key.for_mode(stack)
        .with_context(|| format!("checking secret {secret_id}"))
}

/// Reads and parses the Stripe API key.
pub async fn load_api_key(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> anyhow::Result<StripeApiKey> {
    let text = read(client, secret_id).await?;
    StripeApiKey::from_json(&text).with_context(|| format!("parsing secret {secret_id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_rotation_pair_and_a_key() {
        let s =
            WebhookSecrets::from_json(r#"{"webhook_secrets":["whsec_new","whsec_old"]}"#).unwrap();
        assert_eq!(s.webhook_secrets.len(), 2);
        let k = StripeApiKey::from_json(r#"{"api_key":"sk_test_abc"}"#).unwrap();
        assert_eq!(k.api_key.expose(), "sk_test_abc");
    }

    #[test]
    fn the_webhook_never_holds_an_api_key() {
        let err = WebhookSecrets::from_json(
            r#"{"api_key":"sk_live_leak","webhook_secrets":["whsec_a"]}"#,
        )
        .unwrap_err();
        assert_eq!(err, SecretsError::Misplaced("api_key"));
        assert!(!err.to_string().contains("leak"));
    }

    #[test]
    fn debug_never_prints_a_secret() {
        let s = WebhookSecrets::from_json(r#"{"webhook_secrets":["whsec_xyz"]}"#).unwrap();
        let k = StripeApiKey::from_json(r#"{"api_key":"sk_test_abc"}"#).unwrap();
        let shown = format!("{s:?} {k:?}");
        assert!(
            !shown.contains("sk_test_abc") && !shown.contains("whsec_xyz"),
            "{shown}"
        );
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn errors_name_the_field_not_the_value() {
        let webhook_cases = [
            ("[]", SecretsError::NotAnObject),
            ("not json whsec_leak", SecretsError::NotAnObject),
            ("{}", SecretsError::Missing("webhook_secrets")),
            (
                r#"{"webhook_secrets":"whsec_leak"}"#,
                SecretsError::Invalid {
                    field: "webhook_secrets",
                    reason: "expected a list of strings",
                },
            ),
            (
                r#"{"webhook_secrets":[]}"#,
                SecretsError::Invalid {
                    field: "webhook_secrets",
                    reason: "at least one signing secret is needed",
                },
            ),
            (
                r#"{"webhook_secrets":["leak_value"]}"#,
                SecretsError::Invalid {
                    field: "webhook_secrets",
                    reason: "every entry must be a signing secret string (whsec_...)",
                },
            ),
        ];
        for (input, expected) in webhook_cases {
            let err = WebhookSecrets::from_json(input).unwrap_err();
            assert!(!err.to_string().contains("leak"), "{err}");
            assert_eq!(err, expected, "{input}");
        }
        let key_cases = [
            ("not json sk_live_leak", SecretsError::NotAnObject),
            (
                r#"{"webhook_secrets":["whsec_a"]}"#,
                SecretsError::Missing("api_key"),
            ),
            (
                r#"{"api_key":"pk_live_leak"}"#,
                SecretsError::Invalid {
                    field: "api_key",
                    reason: "expected a secret or restricted key (sk_live_, sk_test_, rk_live_, rk_test_)",
                },
            ),
            (
                // A key without its mode is no key Stripe issues.
                r#"{"api_key":"sk_leak"}"#,
                SecretsError::Invalid {
                    field: "api_key",
                    reason: "expected a secret or restricted key (sk_live_, sk_test_, rk_live_, rk_test_)",
                },
            ),
            (
                r#"{"api_key":"rk_test_"}"#,
                SecretsError::Invalid {
                    field: "api_key",
                    reason: "the key is empty after its prefix",
                },
            ),
        ];
        for (input, expected) in key_cases {
            let err = StripeApiKey::from_json(input).unwrap_err();
            assert!(!err.to_string().contains("leak"), "{err}");
            assert_eq!(err, expected, "{input}");
        }
    }

    #[test]
    fn a_key_is_accepted_only_by_a_stack_of_its_own_mode() {
        for (key, mode) in [
            ("sk_live_abc", StripeMode::Live),
            ("rk_live_abc", StripeMode::Live),
            ("sk_test_abc", StripeMode::Test),
            ("rk_test_abc", StripeMode::Test),
        ] {
            let parsed = StripeApiKey::from_json(&format!(r#"{{"api_key":"{key}"}}"#)).unwrap();
            assert_eq!(parsed.mode(), mode, "{key}");
            assert!(parsed.clone().for_mode(mode).is_ok(), "{key}");
        }
        let test_key = StripeApiKey::from_json(r#"{"api_key":"sk_test_abc"}"#).unwrap();
        let err = test_key.for_mode(StripeMode::Live).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the Stripe API key is a test-mode key, but this stack runs in live mode \
             (StripeLivemode=true): put a live-mode key in the secret, or deploy the stack with \
             StripeLivemode=false"
        );
        let live_key = StripeApiKey::from_json(r#"{"api_key":"rk_live_abc"}"#).unwrap();
        let err = live_key.for_mode(StripeMode::Test).unwrap_err();
        assert_eq!(
            err,
            SecretsError::WrongMode {
                key: StripeMode::Live,
                stack: StripeMode::Test
            }
        );
        assert!(!err.to_string().contains("abc"), "{err}");
    }

    #[test]
    fn the_stack_mode_is_read_strictly() {
        assert_eq!(
            StripeMode::from_env(&[("STRIPE_LIVEMODE", "true")]),
            Ok(StripeMode::Live)
        );
        assert_eq!(
            StripeMode::from_env(&[("STRIPE_LIVEMODE", "false")]),
            Ok(StripeMode::Test)
        );
        assert!(StripeMode::from_env(&[("STRIPE_LIVEMODE", "yes")]).is_err());
        assert!(StripeMode::from_env(&[("OTHER", "x")]).is_err());
    }
}
