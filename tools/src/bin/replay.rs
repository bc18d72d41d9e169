//! `replay --since 2026-11-20`: re-queue Stripe's events since a date (see the README).
//!
//! Environment: EVENTS_QUEUE_URL, and STRIPE_API_KEY_SECRET_ID (the deployment's API-key
//! secret) or STRIPE_API_KEY; STRIPE_API_BASE to talk to another Stripe (the local simulator).

use shared::config::{ProcessEnv, required};
use shared::queue::{DEFAULT_MAX_MESSAGE_BYTES, SqsEventQueue};
use shared::secrets::SecretString;
use shared::stripe::api::RealStripe;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let since = match args.as_slice() {
        [flag, value] if flag == "--since" => tools::parse_since(value)?,
        _ => anyhow::bail!("usage: replay --since <YYYY-MM-DD | unix seconds>"),
    };
    let aws = shared::aws::sdk_config().await;
    let api_key = match std::env::var("STRIPE_API_KEY") {
        Ok(key) => SecretString::new(key),
        Err(_) => {
            let id = required(&ProcessEnv, "STRIPE_API_KEY_SECRET_ID")?;
            shared::secrets::load_api_key(&aws_sdk_secretsmanager::Client::new(&aws), &id)
                .await?
                .api_key
        }
    };
    let stripe = RealStripe::new(&api_key, std::env::var("STRIPE_API_BASE").ok().as_deref())?;
    let queue = SqsEventQueue::from_config(
        &aws,
        required(&ProcessEnv, "EVENTS_QUEUE_URL")?,
        DEFAULT_MAX_MESSAGE_BYTES,
    )
    .await?;
    let report = tools::replay(&stripe, &queue, since).await?;
    println!(
        "listed {} events since {since}; queued {}, skipped {}",
        report.listed, report.queued, report.skipped
    );
    Ok(())
}
