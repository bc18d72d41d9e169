//! The webhook's environment, read once at cold start.

use shared::config::{ConfigError, EnvSource, parsed_or, required, required_bool};
use shared::queue::DEFAULT_MAX_MESSAGE_BYTES;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// The SQS FIFO queue verified events go to.
    pub events_queue_url: String,
    /// Id or ARN of the Secrets Manager secret holding the webhook signing secrets (only them).
    pub webhook_secret_id: String,
    /// Whether this deployment takes live-mode events (`true`) or test-mode events (`false`).
    pub livemode: bool,
    /// The queue's `MaximumMessageSize`; larger events are queued by reference.
    pub max_message_bytes: usize,
}

impl WebhookConfig {
    pub fn from_env(env: &impl EnvSource) -> Result<Self, ConfigError> {
        let max_message_bytes = parsed_or(
            env,
            "EVENTS_QUEUE_MAX_MESSAGE_BYTES",
            DEFAULT_MAX_MESSAGE_BYTES,
        )?;
        if !(1024..=1024 * 1024).contains(&max_message_bytes) {
            return Err(ConfigError::Invalid {
                name: "EVENTS_QUEUE_MAX_MESSAGE_BYTES",
                reason: "SQS messages are between 1 KiB and 1 MiB".to_owned(),
            });
        }
        Ok(Self {
            events_queue_url: required(env, "EVENTS_QUEUE_URL")?,
            webhook_secret_id: required(env, "STRIPE_WEBHOOK_SECRET_ID")?,
            livemode: required_bool(env, "STRIPE_LIVEMODE")?,
            max_message_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_variable() {
        let env = [
            ("EVENTS_QUEUE_URL", "http://q"),
            ("STRIPE_WEBHOOK_SECRET_ID", "billing/stripe"),
            ("STRIPE_LIVEMODE", "false"),
            ("EVENTS_QUEUE_MAX_MESSAGE_BYTES", "262144"),
        ];
        assert_eq!(
            WebhookConfig::from_env(&env).unwrap(),
            WebhookConfig {
                events_queue_url: "http://q".into(),
                webhook_secret_id: "billing/stripe".into(),
                livemode: false,
                max_message_bytes: 262_144,
            }
        );
    }

    #[test]
    fn names_what_is_missing_or_wrong() {
        let env = [
            ("STRIPE_WEBHOOK_SECRET_ID", "s"),
            ("STRIPE_LIVEMODE", "false"),
        ];
        assert_eq!(
            WebhookConfig::from_env(&env),
            Err(ConfigError::Missing("EVENTS_QUEUE_URL"))
        );
        let env = [
            ("EVENTS_QUEUE_URL", "http://q"),
            ("STRIPE_WEBHOOK_SECRET_ID", "s"),
            ("STRIPE_LIVEMODE", "False"),
        ];
        let err = WebhookConfig::from_env(&env).unwrap_err();
        assert!(err.to_string().contains("STRIPE_LIVEMODE"), "{err}");
        let env = [
            ("EVENTS_QUEUE_URL", "http://q"),
            ("STRIPE_WEBHOOK_SECRET_ID", "s"),
            ("STRIPE_LIVEMODE", "true"),
            ("EVENTS_QUEUE_MAX_MESSAGE_BYTES", "10"),
        ];
        let err = WebhookConfig::from_env(&env).unwrap_err();
        assert!(
            err.to_string().contains("EVENTS_QUEUE_MAX_MESSAGE_BYTES"),
            "{err}"
        );
    }
}
