//! The webhook against a real SQS FIFO queue on the local AWS endpoint: the webhook's own signed
//! `SendMessage`, read back through the SDK.
//!
//! `make test` starts the endpoint and sets `LOCAL_AWS_ENDPOINT`; each test makes its own queue.

mod support;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use shared::queue::{
    ATTR_EVENT_ID, ATTR_EVENT_TYPE, ATTR_PAYLOAD, DEFAULT_MAX_MESSAGE_BYTES, SqsEventQueue,
};
use support::*;
use webhook::handler::WebhookHandler;

fn endpoint() -> String {
    testkit::aws_endpoint()
}

async fn sqs(endpoint: &str) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&testkit::sdk_config_for(endpoint).await)
}

/// A fresh FIFO queue, named after the test so runs never share one.
async fn fifo_queue(client: &aws_sdk_sqs::Client, test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("{test}-{}-{nanos}.fifo", std::process::id());
    let name = &name[name.len().saturating_sub(80)..];
    client
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url")
}

async fn drain(client: &aws_sdk_sqs::Client, url: &str) -> Vec<aws_sdk_sqs::types::Message> {
    let mut all = Vec::new();
    loop {
        let out = client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .visibility_timeout(60)
            .send()
            .await
            .expect("receive");
        let batch = out.messages.unwrap_or_default();
        if batch.is_empty() {
            return all;
        }
        all.extend(batch);
    }
}

async fn queue_at(endpoint: &str, url: &str, max_message_bytes: usize) -> SqsEventQueue {
    SqsEventQueue::from_config(
        &testkit::sdk_config_for(endpoint).await,
        url,
        max_message_bytes,
    )
    .await
    .expect("queue")
}

async fn handler_for(url: &str) -> WebhookHandler<SqsEventQueue> {
    let queue = queue_at(&endpoint(), url, DEFAULT_MAX_MESSAGE_BYTES).await;
    WebhookHandler::new(verifier(), queue, false)
}

#[tokio::test]
async fn one_event_is_one_message_with_group_and_deduplication_ids() {
    let client = sqs(&endpoint()).await;
    let url = fifo_queue(&client, "one-event").await;
    let h = handler_for(&url).await;

    let r = h.handle(&sample(), T).await;
    assert_eq!(r.status_code, 200);

    let messages = drain(&client, &url).await;
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    let system = m.attributes.as_ref().expect("system attributes");
    assert_eq!(
        system[&MessageSystemAttributeName::MessageGroupId],
        "cus_QvSampleCustomer1"
    );
    assert_eq!(
        system[&MessageSystemAttributeName::MessageDeduplicationId],
        "evt_1QvSampleCheckout01"
    );
    let attrs = m.message_attributes.as_ref().expect("message attributes");
    assert_eq!(
        attrs[ATTR_EVENT_ID].string_value(),
        Some("evt_1QvSampleCheckout01")
    );
    assert_eq!(
        attrs[ATTR_EVENT_TYPE].string_value(),
        Some("checkout.session.completed")
    );
    assert_eq!(attrs[ATTR_PAYLOAD].string_value(), Some("inline"));
    assert_eq!(
        m.body(),
        sample().body.as_deref(),
        "the body is queued byte for byte"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_deliveries_are_one_message() {
    let client = sqs(&endpoint()).await;
    let url = fifo_queue(&client, "twenty").await;
    let h = Arc::new(handler_for(&url).await);

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let h = Arc::clone(&h);
        tasks.spawn(async move { h.handle(&sample(), T).await.status_code });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    assert_eq!(drain(&client, &url).await.len(), 1);
}

#[tokio::test]
async fn every_refused_delivery_leaves_the_queue_empty() {
    let client = sqs(&endpoint()).await;
    let url = fifo_queue(&client, "refused").await;
    let h = handler_for(&url).await;
    let body = event_body("evt_1QvRefused", "invoice.paid", Some("cus_Qv1"), false);

    let mut malformed_base64 = signed(&body);
    malformed_base64.body = Some("@@@".into());
    malformed_base64.is_base64_encoded = true;
    let mut tampered = signed(&body);
    tampered.body = Some(body.replace("2000", "2"));
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(1024 * 1024));

    let cases = [
        ("no signature", request(&body, None), 400),
        (
            "malformed signature",
            request(&body, Some("t=x".into())),
            400,
        ),
        ("tampered body", tampered, 400),
        ("stale", signed_at(&body, T - 301), 400),
        ("future", signed_at(&body, T + 301), 400),
        ("not JSON", signed("{oops"), 400),
        ("no id", signed(r#"{"type":"invoice.paid"}"#), 400),
        ("no type", signed(r#"{"id":"evt_1Qv"}"#), 400),
        (
            "live event",
            signed(&event_body("evt_1QvLive", "invoice.paid", None, true)),
            400,
        ),
        ("malformed base64", malformed_base64, 400),
        ("over 1 MiB", signed(&big), 413),
    ];
    for (name, req, status) in cases {
        assert_eq!(h.handle(&req, T).await.status_code, status, "{name}");
    }
    assert!(drain(&client, &url).await.is_empty());
}

#[tokio::test]
async fn an_event_too_large_for_a_message_is_queued_by_reference() {
    let client = sqs(&endpoint()).await;
    let url = fifo_queue(&client, "reference").await;
    // A queue whose messages hold 2 KiB: the 5 KB sample cannot travel inline.
    let h = WebhookHandler::new(verifier(), queue_at(&endpoint(), &url, 2048).await, false);
    assert_eq!(h.handle(&sample(), T).await.status_code, 200);

    let messages = drain(&client, &url).await;
    assert_eq!(messages.len(), 1);
    let attrs = messages[0]
        .message_attributes
        .as_ref()
        .expect("message attributes");
    assert_eq!(attrs[ATTR_PAYLOAD].string_value(), Some("reference"));
    let body: serde_json::Value = serde_json::from_str(messages[0].body().unwrap()).unwrap();
    assert_eq!(body["id"], "evt_1QvSampleCheckout01");
    assert_eq!(body["type"], "checkout.session.completed");
}

#[tokio::test]
async fn exactly_one_sqs_round_trip_per_accepted_event_and_none_per_refusal() {
    let plain = sqs(&endpoint()).await;
    let url = fifo_queue(&plain, "round-trips").await;
    let proxy = testkit::CountingProxy::start(&endpoint()).await;
    let h = WebhookHandler::new(
        verifier(),
        queue_at(proxy.url(), &url, DEFAULT_MAX_MESSAGE_BYTES).await,
        false,
    );

    assert_eq!(h.handle(&sample(), T).await.status_code, 200);
    assert_eq!(proxy.requests(), 1);
    assert_eq!(h.handle(&sample(), T).await.status_code, 200);
    assert_eq!(
        proxy.requests(),
        2,
        "a redelivery is one more call, collapsed by the queue"
    );
    assert_eq!(h.handle(&sample(), T + 301).await.status_code, 400);
    assert_eq!(proxy.requests(), 2, "a refused delivery makes no call");
    assert_eq!(drain(&plain, &url).await.len(), 1);
}

#[tokio::test]
async fn an_unreachable_queue_answers_500() {
    // Nothing listens on port 9 (discard) here: the connection is refused at once.
    let queue = queue_at(
        "http://127.0.0.1:9",
        "http://127.0.0.1:9/000000000000/gone.fifo",
        DEFAULT_MAX_MESSAGE_BYTES,
    )
    .await;
    let h = WebhookHandler::new(verifier(), queue, false);
    assert_eq!(h.handle(&sample(), T).await.status_code, 500);
}

#[tokio::test]
async fn a_missing_queue_answers_500() {
    let queue = queue_at(
        &endpoint(),
        &format!("{}/000000000000/does-not-exist.fifo", endpoint()),
        DEFAULT_MAX_MESSAGE_BYTES,
    )
    .await;
    let h = WebhookHandler::new(verifier(), queue, false);
    assert_eq!(h.handle(&sample(), T).await.status_code, 500);
}
