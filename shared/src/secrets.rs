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
        if !(api_key.starts_with("sk_") || api_key.starts_with("rk_")) {
            return Err(SecretsError::Invalid {
                field: "api_key",
                reason: "expected a secret (sk_) or restricted (rk_) key",
            });
        }
        Ok(Self {
            api_key: SecretString::new(api_key),
        })
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
                    reason: "expected a secret (sk_) or restricted (rk_) key",
                },
            ),
        ];
        for (input, expected) in key_cases {
            let err = StripeApiKey::from_json(input).unwrap_err();
            assert!(!err.to_string().contains("leak"), "{err}");
            assert_eq!(err, expected, "{input}");
        }
    }
}
