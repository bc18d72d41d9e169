//! Wiring only: telemetry, configuration, clients built once, then the runtime loop. Each
//! invocation (the daily schedule, or by hand) is one run; "now" is the scheduled event's
//! `time` when it has one.

use lambda_runtime::{Diagnostic, Error, LambdaEvent, service_fn};
use reconciler::handler::{Reconciler, RunError, scheduled_time};
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
    let reconciler = Reconciler::new(
        DynamoDbMeteringStore::new(aws_sdk_dynamodb::Client::new(&aws), env.table_name),
        stripe,
        env.meter,
    );
    let reconciler = &reconciler;
    let catalog = &shared::catalog::Catalog::embedded()?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = shared::clock::instant_of_unix_millis(event.context.deadline);
        let now = scheduled_time(&event.payload).unwrap_or_else(shared::clock::unix_now);
        let summary = Box::pin(reconciler.run(now, deadline))
            .await
            .map_err(|e| Diagnostic {
                error_type: match e {
                    RunError::NoMeter(_) => "NeedsAttention",
                    _ => "RetryableError",
                }
                .into(),
                error_message: e.to_string(),
            })?;
        let mismatches = reconciler
            .check_catalog(catalog, deadline)
            .await
            .map_err(|e| Diagnostic {
                error_type: "RetryableError".into(),
                error_message: format!("the catalog check: {e}"),
            })?;
        if summary.needs_attention() || !mismatches.is_empty() {
            let names: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
            return Err(Diagnostic {
                error_type: "NeedsAttention".into(),
                error_message: format!("{summary:?}; catalog: {names:?}"),
            });
        }
        Ok::<Value, Diagnostic>(json!({
            "checked": summary.checked,
            "agreed": summary.agreed,
            "not_yet": summary.not_yet,
            "left": summary.left,
        }))
    }))
    .await
}
