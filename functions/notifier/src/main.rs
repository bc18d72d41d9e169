//! Wiring only: telemetry, configuration, clients built once, then the runtime loop. Each
//! invocation is one batch of the table's stream.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use notifier::bus::RealEventBus;
use notifier::handler::{Notifier, NotifierConfig};
use notifier::mail::RealMailer;
use notifier::stream::{BatchResponse, StreamEvent};
use shared::config::{EnvSource, ProcessEnv, required};
use shared::notifications::Links;
use shared::store::DynamoDbOutboxStore;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let env = ProcessEnv;
    let table = required(&env, "TABLE_NAME")?;
    let bus_name = required(&env, "EVENT_BUS_NAME")?;
    let nonempty = |name: &str| env.get(name).filter(|v| !v.trim().is_empty());
    let from = nonempty("EMAIL_FROM");
    let config = NotifierConfig {
        links: Links {
            billing_page: nonempty("BILLING_PAGE_URL"),
        },
        mail_enabled: from.is_some(),
    };
    let aws = shared::aws::sdk_config().await;
    let notifier = Notifier::new(
        DynamoDbOutboxStore::new(aws_sdk_dynamodb::Client::new(&aws), table),
        RealEventBus::new(aws_sdk_eventbridge::Client::new(&aws), bus_name),
        RealMailer::new(aws_sdk_sesv2::Client::new(&aws), from.unwrap_or_default()),
        config,
    );
    let notifier = &notifier;
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<StreamEvent>| async move {
            Ok::<BatchResponse, Error>(
                notifier
                    .handle(event.payload, shared::clock::unix_now())
                    .await,
            )
        },
    ))
    .await
}
