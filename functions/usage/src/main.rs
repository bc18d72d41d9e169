//! Wiring only: telemetry, configuration, catalog, the DynamoDB client, then the runtime loop.

use lambda_runtime::{Diagnostic, Error, LambdaEvent, service_fn};
use serde_json::Value;
use shared::catalog::Catalog;
use shared::config::{ProcessEnv, required};
use shared::store::DynamoDbUsageStore;
use usage::handler::UsageHandler;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let table = required(&ProcessEnv, "TABLE_NAME")?;
    let catalog = Catalog::embedded()?;
    let aws = shared::aws::sdk_config().await;
    let handler = UsageHandler::new(
        DynamoDbUsageStore::new(aws_sdk_dynamodb::Client::new(&aws), table),
        catalog,
    );
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = shared::clock::instant_of_unix_millis(event.context.deadline);
        handler
            .handle_before(&event.payload, shared::clock::unix_now(), deadline)
            .await
            .map_err(|e| Diagnostic {
                error_type: e.error_type().to_owned(),
                error_message: e.to_string(),
            })
    }))
    .await
}
