//! The processor's environment, read once at cold start.

use shared::config::{ConfigError, EnvSource, required};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessorConfig {
    pub table_name: String,
    /// Id or ARN of the Secrets Manager secret holding the Stripe API key (only it).
    pub api_key_secret_id: String,
    /// Where Stripe's API is (the local simulator, in the local stack); Stripe's own by default.
    pub stripe_api_base: Option<String>,
}

impl ProcessorConfig {
    pub fn from_env(env: &impl EnvSource) -> Result<Self, ConfigError> {
        Ok(Self {
            table_name: required(env, "TABLE_NAME")?,
            api_key_secret_id: required(env, "STRIPE_API_KEY_SECRET_ID")?,
            stripe_api_base: env.get("STRIPE_API_BASE").filter(|v| !v.trim().is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_is_missing() {
        assert_eq!(
            ProcessorConfig::from_env(&[("STRIPE_API_KEY_SECRET_ID", "s")]),
            Err(ConfigError::Missing("TABLE_NAME"))
        );
        let c =
            ProcessorConfig::from_env(&[("TABLE_NAME", "t"), ("STRIPE_API_KEY_SECRET_ID", "s")])
                .unwrap();
        assert_eq!(c.stripe_api_base, None);
    }
}
