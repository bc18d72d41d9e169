//! Wiring only: telemetry, configuration, clients built once, then the runtime loop.

use lambda_http::aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use lambda_http::lambda_runtime::{self, Error, LambdaEvent, service_fn};
use shared::config::ProcessEnv;
use shared::queue::SqsEventQueue;
use shared::stripe::WebhookVerifier;
use shared::stripe::signature::DEFAULT_TOLERANCE_SECS;
use webhook::config::WebhookConfig;
use webhook::handler::WebhookHandler;

// The webhook allocates a few buffers of the event's size per delivery; glibc's allocator
// consolidates its free lists on each, mimalloc does not (≈ 6 % of the warm CPU per event).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let config = WebhookConfig::from_env(&ProcessEnv)?;
    let aws = shared::aws::sdk_config().await;
    let secrets = shared::secrets::load_webhook_secrets(
        &aws_sdk_secretsmanager::Client::new(&aws),
        &config.webhook_secret_id,
    )
    .await?;
    let handler = WebhookHandler::new(
        WebhookVerifier::new(&secrets.webhook_secrets, DEFAULT_TOLERANCE_SECS)?,
        SqsEventQueue::from_config(&aws, config.events_queue_url, config.max_message_bytes).await?,
        config.livemode,
    );
    let handler = &handler;

    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ApiGatewayV2httpRequest>| async move {
            Ok::<ApiGatewayV2httpResponse, Error>(
                handler
                    .handle(&event.payload, shared::clock::unix_now())
                    .await,
            )
        },
    ))
    .await
}
