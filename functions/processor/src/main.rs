//! Wiring only: telemetry, configuration, catalog, clients built once, then the runtime loop.

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use processor::config::ProcessorConfig;
use processor::handler::Processor;
use shared::catalog::Catalog;
use shared::config::ProcessEnv;
use shared::store::DynamoDbBillingStore;
use shared::stripe::api::RealStripe;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let config = ProcessorConfig::from_env(&ProcessEnv)?;
    let catalog = Catalog::embedded()?;
    let aws = shared::aws::sdk_config().await;
    let secrets = shared::secrets::load_stack_api_key(
        &aws_sdk_secretsmanager::Client::new(&aws),
        &config.api_key_secret_id,
        &ProcessEnv,
    )
    .await?;
    let processor = Processor::new(
        DynamoDbBillingStore::new(aws_sdk_dynamodb::Client::new(&aws), config.table_name),
        RealStripe::new(&secrets.api_key, config.stripe_api_base.as_deref())?,
        catalog,
    );
    let processor = &processor;

    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let deadline = shared::clock::instant_of_unix_millis(event.context.deadline);
        Ok::<SqsBatchResponse, Error>(
            processor
                .handle_batch_before(&event.payload, shared::clock::unix_now(), Some(deadline))
                .await,
        )
    }))
    .await
}
