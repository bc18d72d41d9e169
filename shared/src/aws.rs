//! AWS SDK configuration, built once per cold start.
//!
//! `aws-config` honours the standard variables, `AWS_ENDPOINT_URL` included, so the same binary
//! talks to AWS in the cloud and to the local AWS endpoint on a developer's machine.

use std::time::Duration;

use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::{BehaviorVersion, SdkConfig, timeout::TimeoutConfig};

pub mod credentials;
pub mod json_rpc;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(6);

/// Loads the shared SDK configuration with timeouts that fit inside a Lambda invocation:
/// a call that cannot complete fails fast enough for the function to answer (and for Stripe to retry).
///
/// Lambda hands a function its credentials in `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
/// `AWS_SESSION_TOKEN`. When they are set they are read directly: the default provider chain would
/// first build profile, SSO and STS providers that a function never uses, which costs several
/// milliseconds of every cold start.
pub async fn sdk_config() -> SdkConfig {
    let loader = aws_config::defaults(BehaviorVersion::latest());
    let loader = if std::env::var_os("AWS_ACCESS_KEY_ID").is_some() {
        loader.credentials_provider(EnvironmentVariableCredentialsProvider::new())
    } else {
        loader
    };
    loader
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        )
        .load()
        .await
}
