//! `redrive`: move the dead-letter queue's messages back to the events queue (see the README).
//!
//! Environment: EVENTS_QUEUE_URL and EVENTS_DEAD_LETTER_QUEUE_URL.

use shared::config::{ProcessEnv, required};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    shared::telemetry::init();
    let queue = required(&ProcessEnv, "EVENTS_QUEUE_URL")?;
    let dead_letters = required(&ProcessEnv, "EVENTS_DEAD_LETTER_QUEUE_URL")?;
    let sqs = aws_sdk_sqs::Client::new(&shared::aws::sdk_config().await);
    let moved = tools::redrive(&sqs, &dead_letters, &queue).await?;
    println!("moved {moved} messages from the dead-letter queue back to the events queue");
    Ok(())
}
