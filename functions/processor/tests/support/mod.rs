//! Stripe events for processor tests, built around Stripe's complete object fixtures.
#![allow(dead_code)] // each test file uses a different part

use std::collections::HashMap;

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage, SqsMessageAttribute};
use serde_json::{Value, json};
use shared::catalog::Catalog;
use shared::store::InMemoryBillingStore;
use shared::stripe::api::FakeStripe;

pub const ACCOUNT: &str = "acct_test_1";
pub const CUSTOMER: &str = "cus_QvTest000001";
pub const NOW: i64 = 1_763_942_400;

fn fixtures() -> Value {
    serde_json::from_str(include_str!(
        "../../../../shared/tests/fixtures/stripe-objects.json"
    ))
    .unwrap()
}

pub fn resource(name: &str) -> Value {
    fixtures()["resources"][name].clone()
}

pub fn event(id: &str, event_type: &str, created: i64, object: Value) -> Vec<u8> {
    let mut e = resource("event");
    e["id"] = json!(id);
    e["type"] = json!(event_type);
    e["created"] = json!(created);
    e["api_version"] = json!("2026-09-30.endive");
    e["data"] = json!({ "object": object });
    serde_json::to_vec(&e).unwrap()
}

pub fn subscription(id: &str, status: &str, price: &str) -> Value {
    let mut s = resource("subscription");
    s["id"] = json!(id);
    s["status"] = json!(status);
    s["customer"] = json!(CUSTOMER);
    s["cancel_at_period_end"] = json!(false);
    s["metadata"] = json!({ "account_id": ACCOUNT });
    s["items"]["data"][0]["price"]["id"] = json!(price);
    // The catalog knows its prices by lookup key; here a price `price_x` carries the key `x`.
    s["items"]["data"][0]["price"]["lookup_key"] = json!(price.strip_prefix("price_"));
    s["items"]["data"][0]["current_period_start"] = json!(NOW);
    s["items"]["data"][0]["current_period_end"] = json!(NOW + 30 * 86_400);
    s
}

pub fn invoice(id: &str, status: &str, attempt_count: u32) -> Value {
    let mut i = resource("invoice");
    i["id"] = json!(id);
    i["status"] = json!(status);
    i["customer"] = json!(CUSTOMER);
    i["number"] = json!("INV-0001");
    i["amount_due"] = json!(4900);
    i["amount_paid"] = json!(if status == "paid" { 4900 } else { 0 });
    i["amount_remaining"] = json!(if status == "paid" { 0 } else { 4900 });
    i["attempt_count"] = json!(attempt_count);
    i["next_payment_attempt"] = json!(NOW + 3 * 86_400);
    i["parent"] = json!({
        "type": "subscription_details",
        "quote_details": null,
        "subscription_details": { "subscription": "sub_1", "metadata": { "account_id": ACCOUNT } }
    });
    i
}

/// A paid payment-mode session selling the `credits_small` pack (1,000,000 credits for 1000).
pub fn credit_checkout(session: &str, payment_intent: &str, paid: bool) -> Value {
    let mut s = resource("checkout.session");
    s["id"] = json!(session);
    s["customer"] = json!(CUSTOMER);
    s["client_reference_id"] = json!(ACCOUNT);
    s["mode"] = json!("payment");
    s["status"] = json!("complete");
    s["payment_status"] = json!(if paid { "paid" } else { "unpaid" });
    s["payment_intent"] = json!(payment_intent);
    s["amount_total"] = json!(1000);
    s["currency"] = json!("usd");
    s["metadata"] = json!({ "account_id": ACCOUNT, "credit_pack": "credits_small" });
    s
}

pub fn refunded_charge(payment_intent: &str, amount_refunded: i64) -> Value {
    let mut c = resource("charge");
    c["id"] = json!("ch_QvTest0001");
    c["customer"] = json!(CUSTOMER);
    c["payment_intent"] = json!(payment_intent);
    c["amount"] = json!(1000);
    c["amount_refunded"] = json!(amount_refunded);
    c["refunded"] = json!(amount_refunded == 1000);
    c["metadata"] = json!({ "account_id": ACCOUNT });
    c
}

/// One SQS message as the event source mapping delivers it.
pub fn message(message_id: &str, group: &str, body: &[u8]) -> SqsMessage {
    let event: Value = serde_json::from_slice(body).unwrap_or(json!({}));
    let mut m = SqsMessage::default();
    m.message_id = Some(message_id.into());
    m.receipt_handle = Some(format!("rh-{message_id}"));
    m.body = Some(String::from_utf8_lossy(body).into_owned());
    m.attributes = HashMap::from([
        ("MessageGroupId".to_owned(), group.to_owned()),
        ("ApproximateReceiveCount".to_owned(), "1".to_owned()),
    ]);
    let attr = |v: &str| {
        let mut a = SqsMessageAttribute::default();
        a.string_value = Some(v.to_owned());
        a.data_type = Some("String".into());
        a
    };
    m.message_attributes = HashMap::from([
        (
            "stripe_event_id".to_owned(),
            attr(event["id"].as_str().unwrap_or("evt_unknown")),
        ),
        (
            "stripe_event_type".to_owned(),
            attr(event["type"].as_str().unwrap_or("unknown")),
        ),
        ("payload".to_owned(), attr("inline")),
    ]);
    m
}

/// A message queued by reference (the event was too large to travel inline).
pub fn reference_message(message_id: &str, event_id: &str, event_type: &str) -> SqsMessage {
    let body = format!(r#"{{"id":"{event_id}","object":"event","type":"{event_type}"}}"#);
    let mut m = message(message_id, CUSTOMER, body.as_bytes());
    if let Some(a) = m.message_attributes.get_mut("payload") {
        a.string_value = Some("reference".into());
    }
    m
}

pub fn batch(messages: Vec<SqsMessage>) -> SqsEvent {
    let mut e = SqsEvent::default();
    e.records = messages;
    e
}

pub type TestProcessor = processor::handler::Processor<InMemoryBillingStore, FakeStripe>;

pub fn processor() -> TestProcessor {
    processor::handler::Processor::new(
        InMemoryBillingStore::new(),
        FakeStripe::new(),
        Catalog::embedded().unwrap(),
    )
}

/// A subscription on a price made for one deal: its metadata names the plan and allowance.
pub fn deal_subscription(id: &str, price: &str, plan: &str, included_units: &str) -> Value {
    let mut s = subscription(id, "active", price);
    s["items"]["data"][0]["price"]["metadata"] =
        json!({ "plan": plan, "included_units": included_units });
    // Made in Stripe for one customer, with no catalog lookup key.
    s["items"]["data"][0]["price"]["lookup_key"] = Value::Null;
    s["items"]["data"][0]["price"]["billing_scheme"] = json!("tiered");
    s["items"]["data"][0]["price"]["tiers_mode"] = json!("volume");
    s
}

/// An auto top-up's payment as Stripe's `payment_intent.succeeded` carries it.
pub fn topup_payment(payment_intent: &str, seq: &str, amount: i64) -> Value {
    let mut p = resource("payment_intent");
    p["id"] = json!(payment_intent);
    p["customer"] = json!(CUSTOMER);
    p["status"] = json!("succeeded");
    p["amount"] = json!(amount);
    p["amount_received"] = json!(amount);
    p["currency"] = json!("usd");
    p["off_session"] = json!(true);
    p["metadata"] =
        json!({ "account_id": ACCOUNT, "credit_pack": "credits_small", "topup_seq": seq });
    p
}
