//! The webhook handler in-process, over the in-memory queue: every answer the endpoint gives.

mod support;

use lambda_http::aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use lambda_http::aws_lambda_events::encodings::Body;
use lambda_http::lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;
use shared::queue::{EventPayload, InMemoryEventQueue};
use support::*;
use webhook::handler::{MAX_BODY_BYTES, WebhookHandler};

fn handler() -> WebhookHandler<InMemoryEventQueue> {
    WebhookHandler::new(verifier(), InMemoryEventQueue::new(200 * 1024), false)
}

fn body_json(r: &ApiGatewayV2httpResponse) -> Value {
    match &r.body {
        Some(Body::Text(t)) => serde_json::from_str(t).expect("JSON body"),
        other => panic!("unexpected body {other:?}"),
    }
}

async fn refused(req: ApiGatewayV2httpRequest, now: i64, status: i64, code: &str) {
    let h = handler();
    let r = h.handle(&req, now).await;
    assert_eq!(r.status_code, status, "{:?}", r.body);
    assert_eq!(body_json(&r)["error"]["code"], code);
    assert_eq!(
        h.queue().calls(),
        0,
        "a refused delivery never reaches the queue"
    );
}

#[tokio::test]
async fn the_sample_event_is_queued_through_a_lambda_event() {
    let h = handler();
    // Exactly what the runtime hands the function: the sample wrapped in a LambdaEvent.
    let event = LambdaEvent::new(sample(), Context::default());
    let r = h.handle(&event.payload, T).await;
    assert_eq!(r.status_code, 200);
    assert_eq!(body_json(&r)["event_id"], "evt_1QvSampleCheckout01");
    let queued = h.queue().messages();
    assert_eq!(queued.len(), 1);
    assert_eq!(h.queue().calls(), 1, "one queue call per event");
    assert_eq!(queued[0].event_id.as_str(), "evt_1QvSampleCheckout01");
    assert_eq!(queued[0].event_type, "checkout.session.completed");
    assert_eq!(queued[0].group.as_str(), "cus_QvSampleCustomer1");
    // The body is queued exactly as Stripe signed it.
    assert_eq!(
        queued[0].payload,
        EventPayload::Inline(sample_json()["body"].as_str().unwrap().to_owned())
    );
}

#[tokio::test]
async fn a_base64_body_is_decoded_before_verification() {
    let h = handler();
    let r = h.handle(&base64_encoded(sample()), T).await;
    assert_eq!(r.status_code, 200, "{:?}", r.body);
    assert_eq!(h.queue().messages().len(), 1);
}

#[tokio::test]
async fn an_event_without_customer_is_grouped_by_its_object() {
    let h = handler();
    let body = event_body("evt_1QvNoCustomer", "invoice.created", None, false);
    assert_eq!(h.handle(&signed(&body), T).await.status_code, 200);
    assert_eq!(h.queue().messages()[0].group.as_str(), "in_1QvTestInvoice");
}

#[tokio::test]
async fn a_large_event_is_queued_by_reference() {
    let h = WebhookHandler::new(verifier(), InMemoryEventQueue::new(256), false);
    let body = event_body(
        "evt_1QvLarge",
        "invoice.finalized",
        Some("cus_QvBig"),
        false,
    );
    assert!(body.len() > 256);
    assert_eq!(h.handle(&signed(&body), T).await.status_code, 200);
    let queued = h.queue().messages();
    assert_eq!(queued[0].payload, EventPayload::Reference);
    let reference: Value = serde_json::from_str(&queued[0].body()).unwrap();
    assert_eq!(reference["id"], "evt_1QvLarge");
    assert_eq!(reference["type"], "invoice.finalized");
}

#[tokio::test]
async fn duplicates_collapse_and_answer_200() {
    let h = handler();
    for _ in 0..3 {
        assert_eq!(h.handle(&sample(), T).await.status_code, 200);
    }
    // Each delivery is one send, all with the event id as deduplication id: SQS collapses them
    // within its 5-minute window; beyond it, the processor's marker makes them no-ops.
    assert_eq!(h.queue().calls(), 3);
    let sent = h.queue().messages();
    assert_eq!(sent.len(), 3);
    assert!(
        sent.iter()
            .all(|m| m.event_id == sent[0].event_id && m.group == sent[0].group)
    );
}

#[tokio::test]
async fn bad_signatures_are_400() {
    let body = event_body("evt_1QvBad", "invoice.paid", Some("cus_Qv1"), false);
    refused(request(&body, None), T, 400, "missing_signature").await;
    refused(
        request(&body, Some("t=1,v1=zz".into())),
        T,
        400,
        "invalid_signature",
    )
    .await;
    refused(
        request(&body, Some("nonsense".into())),
        T,
        400,
        "invalid_signature",
    )
    .await;
    let mut tampered = signed(&body);
    tampered.body = Some(body.replace("2000", "1"));
    refused(tampered, T, 400, "invalid_signature").await;
}

#[tokio::test]
async fn stale_and_future_timestamps_are_400() {
    let body = event_body("evt_1QvStale", "invoice.paid", Some("cus_Qv1"), false);
    refused(
        signed_at(&body, T - 301),
        T,
        400,
        "timestamp_outside_tolerance",
    )
    .await;
    refused(
        signed_at(&body, T + 301),
        T,
        400,
        "timestamp_outside_tolerance",
    )
    .await;
}

#[tokio::test]
async fn bodies_that_are_not_events_are_400() {
    refused(signed("not json"), T, 400, "invalid_event").await;
    refused(
        signed(r#"{"object":"event","type":"invoice.paid"}"#),
        T,
        400,
        "invalid_event",
    )
    .await;
    refused(
        signed(r#"{"id":"evt_1QvNoType","object":"event"}"#),
        T,
        400,
        "invalid_event",
    )
    .await;
}

#[tokio::test]
async fn the_other_mode_is_400() {
    let live = event_body("evt_1QvLive", "invoice.paid", Some("cus_Qv1"), true);
    refused(signed(&live), T, 400, "wrong_livemode").await;
}

#[tokio::test]
async fn malformed_base64_is_400() {
    let mut req = signed(&event_body("evt_1Qv64", "invoice.paid", None, false));
    req.body = Some("%%% not base64 %%%".into());
    req.is_base64_encoded = true;
    refused(req, T, 400, "malformed_base64").await;
}

#[tokio::test]
async fn oversized_bodies_are_413() {
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(MAX_BODY_BYTES));
    refused(signed(&big), T, 413, "body_too_large").await;
    refused(base64_encoded(signed(&big)), T, 413, "body_too_large").await;
}

#[tokio::test]
async fn an_unreachable_queue_is_500_so_stripe_retries() {
    let h = handler();
    h.queue().set_unreachable(true);
    let r = h.handle(&sample(), T).await;
    assert_eq!(r.status_code, 500);
    assert_eq!(body_json(&r)["error"]["code"], "queue_unavailable");
    assert_eq!(h.queue().calls(), 1);
    assert!(h.queue().messages().is_empty());
}

#[tokio::test]
async fn responses_are_small_json() {
    let r = handler().handle(&sample(), T).await;
    assert_eq!(r.headers["content-type"], "application/json");
    let Some(Body::Text(text)) = &r.body else {
        panic!()
    };
    assert!(text.len() < 200, "{text}");
}

mod no_panic {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        /// Whatever API Gateway hands over, the handler answers with a status, never a panic.
        #[test]
        fn any_request_gets_an_answer(
            body in proptest::option::of(".{0,400}"),
            b64 in any::<bool>(),
            sig in proptest::option::of("[ -~]{0,120}"),
            now in any::<i64>(),
        ) {
            let mut req = request(body.as_deref().unwrap_or_default(), sig);
            req.body = body;
            req.is_base64_encoded = b64;
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let status = rt.block_on(handler().handle(&req, now)).status_code;
            prop_assert!([200, 400, 413].contains(&status), "{}", status);
        }
    }
}
