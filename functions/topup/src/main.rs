//! Wiring only: telemetry, configuration, clients built once, then the runtime loop. Each
//! invocation is one batch of claimed top-ups from the table's stream.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use shared::catalog::Catalog;
use shared::config::{EnvSource, ProcessEnv, required};
use shared::store::DynamoDbTopupStore;
use shared::stripe::api::RealStripe;
use topup::handler::Topup;
use topup::stream::{BatchResponse, StreamEvent};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let env = ProcessEnv;
    let table = required(&env, "TABLE_NAME")?;
    let secret_id = required(&env, "STRIPE_API_KEY_SECRET_ID")?;
    let api_base = env.get("STRIPE_API_BASE").filter(|v| !v.trim().is_empty());
    let catalog = Catalog::embedded()?;
    let aws = shared::aws::sdk_config().await;
    let secrets = shared::secrets::load_stack_api_key(
        &aws_sdk_secretsmanager::Client::new(&aws),
        &secret_id,
        &ProcessEnv,
    )
    .await?;
    let stripe = RealStripe::new(&secrets.api_key, api_base.as_deref())?;
    let topup = Topup::new(
        DynamoDbTopupStore::new(aws_sdk_dynamodb::Client::new(&aws), table),
        stripe,
        catalog.currency,
    );
    let topup = &topup;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<StreamEvent>| async move {
            let (response, summary) = topup.handle(event.payload).await;
            tracing::info!(?summary, "top-up batch");
            Ok::<BatchResponse, Error>(response)
        },
    ))
    .await
}
