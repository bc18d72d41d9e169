//! Wiring only: telemetry, configuration, clients built once, then the runtime loop. Each
//! invocation (the 15-minute schedule, or by hand) is one run; "now" is the scheduled event's
//! `time` when it has one, so a run can be replayed for a given moment.

use dunning::config::DunningEnv;
use dunning::handler::{Dunning, scheduled_time};
use lambda_runtime::{Diagnostic, Error, LambdaEvent, service_fn};
use serde_json::{Value, json};
use shared::config::ProcessEnv;
use shared::store::DynamoDbDunningStore;
use shared::stripe::api::RealStripe;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let env = DunningEnv::from_env(&ProcessEnv)?;
    let aws = shared::aws::sdk_config().await;
    let secrets = shared::secrets::load_stack_api_key(
        &aws_sdk_secretsmanager::Client::new(&aws),
        &env.api_key_secret_id,
        &ProcessEnv,
    )
    .await?;
    let stripe = RealStripe::new(&secrets.api_key, env.stripe_api_base.as_deref())?;
    let dunning = Dunning::new(
        DynamoDbDunningStore::new(aws_sdk_dynamodb::Client::new(&aws), env.table_name),
        stripe,
        env.policy,
    );
    let dunning = &dunning;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = shared::clock::instant_of_unix_millis(event.context.deadline);
        let now = scheduled_time(&event.payload).unwrap_or_else(shared::clock::unix_now);
        let summary = Box::pin(dunning.run(now, deadline))
            .await
            .map_err(|e| Diagnostic {
                error_type: "RetryableError".into(),
                error_message: e.to_string(),
            })?;
        if summary.left > 0 {
            // Cases Stripe or the table did not let this run finish: the errors alarm sees
            // it, and the next run (15 minutes on) takes them up.
            return Err(Diagnostic {
                error_type: "CasesLeft".into(),
                error_message: format!("{summary:?}"),
            });
        }
        let taken: Vec<Value> = summary
            .taken
            .iter()
            .map(|(invoice, step)| json!({ "invoice_id": invoice, "step": step.as_str() }))
            .collect();
        Ok::<Value, Diagnostic>(json!({
            "now": now,
            "cases": summary.cases,
            "taken": taken,
            "already_taken": summary.already_taken,
            "paid": summary.paid,
            "settled": summary.settled,
            "left": summary.left,
        }))
    }))
    .await
}
