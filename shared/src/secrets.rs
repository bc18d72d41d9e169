//! Secrets: fetched once at cold start, never logged, redacted in `Debug`.
//!
//! The Stripe secret in Secrets Manager is a JSON object:
//! `{"api_key": "sk_live_...", "webhook_secrets": ["whsec_new", "whsec_old"]}`.
//! Several webhook secrets are live at once while one is being rotated.

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

#[derive(Clone, Debug)]
pub struct StripeSecrets {
    pub api_key: SecretString,
    pub webhook_secrets: Vec<SecretString>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    /// Messages name fields, never values: a secret must not reach a log through an error.
    #[error("the Stripe secret is not a JSON object")]
    NotAnObject,
    #[error("the Stripe secret has no `{0}`")]
    Missing(&'static str),
    #[error("the Stripe secret's `{field}` is invalid: {reason}")]
    Invalid {
        field: &'static str,
        reason: &'static str,
    },
}

impl StripeSecrets {
    pub fn from_json(text: &str) -> Result<Self, SecretsError> {
        // Parsed as a Value and read by hand: serde's typed errors quote the offending value.
        let value: Value = serde_json::from_str(text).map_err(|_| SecretsError::NotAnObject)?;
        let object = value.as_object().ok_or(SecretsError::NotAnObject)?;

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

        Ok(Self {
            api_key: SecretString::new(api_key),
            webhook_secrets,
        })
    }
}

/// Reads and parses the Stripe secret from Secrets Manager.
pub async fn load_stripe_secrets(
    client: &aws_sdk_secretsmanager::Client,
    secret_id: &str,
) -> anyhow::Result<StripeSecrets> {
    let output = client
        .get_secret_value()
        .secret_id(secret_id)
        .send()
        .await
        .with_context(|| format!("reading secret {secret_id} from Secrets Manager"))?;
    let text = output
        .secret_string()
        .with_context(|| format!("secret {secret_id} has no string value"))?;
    StripeSecrets::from_json(text).with_context(|| format!("parsing secret {secret_id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_rotation_pair() {
        let s = StripeSecrets::from_json(
            r#"{"api_key":"sk_test_abc","webhook_secrets":["whsec_new","whsec_old"]}"#,
        )
        .unwrap();
        assert_eq!(s.api_key.expose(), "sk_test_abc");
        assert_eq!(s.webhook_secrets.len(), 2);
    }

    #[test]
    fn debug_never_prints_a_secret() {
        let s = StripeSecrets::from_json(
            r#"{"api_key":"sk_test_abc","webhook_secrets":["whsec_xyz"]}"#,
        )
        .unwrap();
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("sk_test_abc") && !shown.contains("whsec_xyz"),
            "{shown}"
        );
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn errors_name_the_field_not_the_value() {
        let cases = [
            ("[]", SecretsError::NotAnObject),
            ("not json sk_live_leak", SecretsError::NotAnObject),
            (
                r#"{"webhook_secrets":["whsec_a"]}"#,
                SecretsError::Missing("api_key"),
            ),
            (
                r#"{"api_key":"sk_a"}"#,
                SecretsError::Missing("webhook_secrets"),
            ),
            (
                r#"{"api_key":"pk_live_leak","webhook_secrets":["whsec_a"]}"#,
                SecretsError::Invalid {
                    field: "api_key",
                    reason: "expected a secret (sk_) or restricted (rk_) key",
                },
            ),
            (
                r#"{"api_key":"sk_a","webhook_secrets":"whsec_leak"}"#,
                SecretsError::Invalid {
                    field: "webhook_secrets",
                    reason: "expected a list of strings",
                },
            ),
            (
                r#"{"api_key":"sk_a","webhook_secrets":[]}"#,
                SecretsError::Invalid {
                    field: "webhook_secrets",
                    reason: "at least one signing secret is needed",
                },
            ),
            (
                r#"{"api_key":"sk_a","webhook_secrets":["leak_value"]}"#,
                SecretsError::Invalid {
                    field: "webhook_secrets",
                    reason: "every entry must be a signing secret string (whsec_...)",
                },
            ),
        ];
        for (input, expected) in cases {
            let err = StripeSecrets::from_json(input).unwrap_err();
            assert!(!err.to_string().contains("leak"), "{err}");
            assert_eq!(err, expected, "{input}");
        }
    }
}
