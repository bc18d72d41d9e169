//! Wiring only: telemetry, configuration, clients built once, then the runtime loop. Each
//! invocation (the daily schedule, or by hand) is one run; "now" is the scheduled event's
//! `time` when it has one.

use lambda_runtime::{Diagnostic, Error, LambdaEvent, service_fn};
use reconciler::handler::{Reconciler, RunError, scheduled_time};
use serde_json::{Value, json};
use shared::config::{EnvSource, ProcessEnv, required};
use shared::store::DynamoDbMeteringStore;
use shared::stripe::api::RealStripe;
use shared::stripe::meter::MeterConfig;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let env = ProcessEnv;
    let table = required(&env, "TABLE_NAME")?;
    let meter = MeterConfig {
        event_name: required(&env, "METER_EVENT_NAME")?,
        customer_key: env
            .get("METER_CUSTOMER_KEY")
            .unwrap_or_else(|| "stripe_customer_id".to_owned()),
    };
    let aws = shared::aws::sdk_config().await;
    let secrets = shared::secrets::load_api_key(
        &aws_sdk_secretsmanager::Client::new(&aws),
        &required(&env, "STRIPE_API_KEY_SECRET_ID")?,
    )
    .await?;
    let stripe = RealStripe::new(
        &secrets.api_key,
        env.get("STRIPE_API_BASE")
            .filter(|v| !v.trim().is_empty())
            .as_deref(),
    )?;
    let reconciler = Reconciler::new(
        DynamoDbMeteringStore::new(aws_sdk_dynamodb::Client::new(&aws), table),
        stripe,
        meter,
    );
    let reconciler = &reconciler;
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
        if summary.needs_attention() {
            return Err(Diagnostic {
                error_type: "NeedsAttention".into(),
                error_message: format!("{summary:?}"),
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
