//! What the dunning function reads from the environment at cold start.

use shared::billing::dunning::DunningPolicy;
use shared::config::{ConfigError, EnvSource, parsed_or, required};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DunningEnv {
    pub table_name: String,
    /// Id or ARN of the Secrets Manager secret holding the Stripe API key.
    pub api_key_secret_id: String,
    /// Where Stripe's API is (the local simulator, in the local stack); Stripe's own by default.
    pub stripe_api_base: Option<String>,
    pub policy: DunningPolicy,
}

impl DunningEnv {
    pub fn from_env(env: &impl EnvSource) -> Result<Self, ConfigError> {
        let defaults = DunningPolicy::default();
        let policy = DunningPolicy {
            retry_after: parsed_or(env, "DUNNING_RETRY_AFTER_SECS", defaults.retry_after)?,
            suspend_after: parsed_or(env, "DUNNING_SUSPEND_AFTER_SECS", defaults.suspend_after)?,
        };
        if policy.retry_after < 0 || policy.suspend_after <= 0 {
            return Err(ConfigError::Invalid {
                name: "DUNNING_SUSPEND_AFTER_SECS",
                reason: "delays are seconds after the first failure: retry at 0 or more, suspension after more than 0".into(),
            });
        }
        Ok(Self {
            table_name: required(env, "TABLE_NAME")?,
            api_key_secret_id: required(env, "STRIPE_API_KEY_SECRET_ID")?,
            stripe_api_base: env.get("STRIPE_API_BASE").filter(|v| !v.trim().is_empty()),
            policy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_default_to_a_day_and_fourteen_days_and_bad_ones_are_named() {
        let base = [("TABLE_NAME", "t"), ("STRIPE_API_KEY_SECRET_ID", "s")];
        let env = DunningEnv::from_env(&base).unwrap();
        assert_eq!(env.policy, DunningPolicy::default());
        assert_eq!(env.stripe_api_base, None);

        let custom = [
            ("TABLE_NAME", "t"),
            ("STRIPE_API_KEY_SECRET_ID", "s"),
            ("DUNNING_RETRY_AFTER_SECS", "3600"),
            ("DUNNING_SUSPEND_AFTER_SECS", "604800"),
        ];
        let env = DunningEnv::from_env(&custom).unwrap();
        assert_eq!(env.policy.retry_after, 3600);
        assert_eq!(env.policy.suspend_after, 604_800);

        let bad = [
            ("TABLE_NAME", "t"),
            ("STRIPE_API_KEY_SECRET_ID", "s"),
            ("DUNNING_SUSPEND_AFTER_SECS", "two weeks"),
        ];
        let err = DunningEnv::from_env(&bad).unwrap_err().to_string();
        assert!(err.contains("DUNNING_SUSPEND_AFTER_SECS"), "{err}");
        let missing = DunningEnv::from_env(&[("TABLE_NAME", "t")]).unwrap_err();
        assert!(missing.to_string().contains("STRIPE_API_KEY_SECRET_ID"));
    }
}
