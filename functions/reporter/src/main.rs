//! Wiring only: telemetry, configuration, clients built once, then the runtime loop. Each
//! scheduled invocation is one run.

use lambda_runtime::{Diagnostic, Error, LambdaEvent, service_fn};
use reporter::handler::Reporter;
use serde_json::{Value, json};
use shared::config::ProcessEnv;
use shared::store::DynamoDbMeteringStore;
use shared::stripe::meter::MeteringEnv;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let env = MeteringEnv::from_env(&ProcessEnv)?;
    let aws = shared::aws::sdk_config().await;
    let stripe = env.stripe(&aws).await?;
    let reporter = Reporter::new(
        DynamoDbMeteringStore::new(aws_sdk_dynamodb::Client::new(&aws), env.table_name),
        stripe,
        env.meter,
    );
    let reporter = &reporter;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = shared::clock::instant_of_unix_millis(event.context.deadline);
        let summary = reporter
            .run(shared::clock::unix_now(), deadline)
            .await
            .map_err(|e| Diagnostic {
                error_type: "RetryableError".into(),
                error_message: e.to_string(),
            })?;
        if summary.needs_attention() {
            return Err(Diagnostic {
                error_type: "NeedsAttention".into(),
                error_message: format!("{summary:?}"),
            });
        }
        Ok::<Value, Diagnostic>(json!({
            "accounts": summary.accounts,
            "sent": summary.sent,
            "confirmed": summary.confirmed,
            "pending": summary.pending,
            "cleared": summary.cleared,
        }))
    }))
    .await
}
