//! Wiring only: telemetry, configuration, catalog, the DynamoDB and Stripe clients, then the
//! runtime loop.

use checkout::handler::CheckoutHandler;
use checkout::stripe::RealCheckout;
use lambda_http::aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use lambda_http::lambda_runtime::{self, Error, LambdaEvent, service_fn};
use shared::catalog::Catalog;
use shared::config::{EnvSource, ProcessEnv, required};
use shared::store::DynamoDbBillingStore;
use shared::stripe::api::RealStripe;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let table = required(&ProcessEnv, "TABLE_NAME")?;
    let catalog = Catalog::embedded()?;
    let aws = shared::aws::sdk_config().await;
    let secrets = shared::secrets::load_stack_api_key(
        &aws_sdk_secretsmanager::Client::new(&aws),
        &required(&ProcessEnv, "STRIPE_API_KEY_SECRET_ID")?,
        &ProcessEnv,
    )
    .await?;
    let stripe = RealStripe::new(
        &secrets.api_key,
        ProcessEnv
            .get("STRIPE_API_BASE")
            .filter(|v| !v.trim().is_empty())
            .as_deref(),
    )?;
    let handler = CheckoutHandler::new(
        DynamoDbBillingStore::new(aws_sdk_dynamodb::Client::new(&aws), table),
        RealCheckout::new(stripe),
        catalog,
    );
    let handler = &handler;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ApiGatewayV2httpRequest>| async move {
            Ok::<ApiGatewayV2httpResponse, Error>(handler.handle(&event.payload).await)
        },
    ))
    .await
}
