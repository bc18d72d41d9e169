//! Builders for signed API Gateway requests, starting from the `events/webhook.json` sample.
#![allow(dead_code)] // each test file uses a different part

use base64::Engine;
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_http::http::HeaderValue;
use serde_json::{Value, json};
use shared::secrets::SecretString;
use shared::stripe::WebhookVerifier;
use shared::stripe::signature::sign;

pub const SECRET: &str = "whsec_local";
/// The sample's signature timestamp.
pub const T: i64 = 1_763_942_400;

pub fn verifier() -> WebhookVerifier {
    WebhookVerifier::new(&[SecretString::new(SECRET)], 300).unwrap()
}

/// The `sam local invoke` sample, as API Gateway delivers it.
pub fn sample() -> ApiGatewayV2httpRequest {
    serde_json::from_str(include_str!("../../../../events/webhook.json"))
        .expect("events/webhook.json parses")
}

pub fn sample_json() -> Value {
    serde_json::from_str(include_str!("../../../../events/webhook.json"))
        .expect("events/webhook.json parses")
}

/// A Stripe-shaped event body.
pub fn event_body(id: &str, event_type: &str, customer: Option<&str>, livemode: bool) -> String {
    serde_json::to_string_pretty(&json!({
        "id": id,
        "object": "event",
        "api_version": "2026-09-30.endive",
        "created": T,
        "data": { "object": {
            "id": "in_1QvTestInvoice",
            "object": "invoice",
            "customer": customer,
            "amount_due": 2000,
            "currency": "usd"
        }},
        "livemode": livemode,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": event_type
    }))
    .expect("serialisable")
}

/// `body` as API Gateway would deliver it, signed with `secret` at `t`.
pub fn request(body: &str, signature: Option<String>) -> ApiGatewayV2httpRequest {
    let mut req = sample();
    req.headers.remove("stripe-signature");
    if let Some(sig) = signature {
        req.headers.insert(
            "stripe-signature",
            HeaderValue::from_str(&sig).expect("ASCII header"),
        );
    }
    req.body = Some(body.to_owned());
    req.is_base64_encoded = false;
    req
}

pub fn signed(body: &str) -> ApiGatewayV2httpRequest {
    signed_at(body, T)
}

pub fn signed_at(body: &str, t: i64) -> ApiGatewayV2httpRequest {
    request(
        body,
        Some(sign(&SecretString::new(SECRET), t, body.as_bytes()).unwrap()),
    )
}

/// The same delivery with its body base64-encoded, as API Gateway does for binary media types.
pub fn base64_encoded(mut req: ApiGatewayV2httpRequest) -> ApiGatewayV2httpRequest {
    let raw = req.body.take().unwrap_or_default();
    req.body = Some(base64::engine::general_purpose::STANDARD.encode(raw));
    req.is_base64_encoded = true;
    req
}
