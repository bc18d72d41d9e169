//! The lean envelope, proven against events built around Stripe's complete object fixtures.

use proptest::prelude::*;
use serde_json::{Value, json};
use shared::stripe::{EnvelopeError, EventEnvelope};

fn fixtures() -> Value {
    serde_json::from_str(include_str!("fixtures/stripe-objects.json")).unwrap()
}

/// A complete Stripe event (the fixture event's shape) carrying `object` as `data.object`.
fn event_around(resource: &str, event_type: &str) -> Value {
    let resources = &fixtures()["resources"];
    let mut event = resources["event"].clone();
    event["id"] = json!("evt_1QvEnvelopeTest01");
    event["type"] = json!(event_type);
    event["created"] = json!(1_763_942_400);
    event["api_version"] = json!("2026-09-30.endive");
    event["data"] = json!({ "object": resources[resource].clone(), "previous_attributes": {} });
    event
}

fn parse(event: &Value) -> Result<EventEnvelope, EnvelopeError> {
    EventEnvelope::parse(event.to_string().as_bytes())
}

#[test]
fn invoice_event_is_grouped_by_its_customer() {
    let e = parse(&event_around("invoice", "invoice.paid")).unwrap();
    assert_eq!(e.id.as_str(), "evt_1QvEnvelopeTest01");
    assert_eq!(e.event_type, "invoice.paid");
    assert_eq!(e.created, 1_763_942_400);
    assert!(!e.livemode);
    assert_eq!(e.api_version.as_deref(), Some("2026-09-30.endive"));
    assert_eq!(e.object.object, "invoice");
    assert_eq!(e.message_group().as_str(), "cus_QXg1o8vcGmoR32");
}

#[test]
fn customer_event_is_grouped_by_the_customer_itself() {
    let e = parse(&event_around("customer", "customer.updated")).unwrap();
    assert_eq!(e.object.object, "customer");
    assert_eq!(e.object.customer, None);
    assert_eq!(e.message_group(), &e.object.id);
}

#[test]
fn every_fixture_object_parses() {
    let resources = fixtures()["resources"].as_object().unwrap().clone();
    for (name, object) in resources {
        if object.get("id").and_then(Value::as_str).is_none() {
            continue; // meter event summaries and the like carry no routable id
        }
        let e =
            parse(&event_around(&name, "test.event")).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(
            e.object.id.as_str(),
            object["id"].as_str().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn expanded_customer_and_connect_account_are_read() {
    let mut event = event_around("subscription", "customer.subscription.updated");
    event["data"]["object"]["customer"] = fixtures()["resources"]["customer"].clone();
    event["account"] = json!("acct_1Connected");
    let e = parse(&event).unwrap();
    assert_eq!(e.message_group().as_str(), "cus_QXg1o8vcGmoR32");
    assert_eq!(e.account.as_deref(), Some("acct_1Connected"));
}

#[test]
fn the_bench_payload_parses() {
    let e = EventEnvelope::parse(include_bytes!("fixtures/invoice.paid.json")).unwrap();
    assert_eq!(e.message_group().as_str(), "cus_QvBenchCustomer01");
}

#[test]
fn missing_and_invalid_fields_are_named() {
    let base = event_around("invoice", "invoice.paid");
    let without = |path: &[&str]| {
        let mut e = base.clone();
        let mut node = &mut e;
        for p in &path[..path.len() - 1] {
            node = &mut node[*p];
        }
        node.as_object_mut().unwrap().remove(path[path.len() - 1]);
        e
    };
    assert_eq!(parse(&without(&["id"])), Err(EnvelopeError::Missing("id")));
    assert_eq!(
        parse(&without(&["type"])),
        Err(EnvelopeError::Missing("type"))
    );
    assert_eq!(
        parse(&without(&["created"])),
        Err(EnvelopeError::Missing("created"))
    );
    assert_eq!(
        parse(&without(&["livemode"])),
        Err(EnvelopeError::Missing("livemode"))
    );
    assert_eq!(
        parse(&without(&["data"])),
        Err(EnvelopeError::Missing("data"))
    );
    assert_eq!(
        parse(&without(&["data", "object", "id"])),
        Err(EnvelopeError::Missing("data.object.id"))
    );

    let with = |field: &str, value: Value| {
        let mut e = base.clone();
        e[field] = value;
        e
    };
    assert!(matches!(
        parse(&with("id", json!("cus_notanevent"))),
        Err(EnvelopeError::Invalid { field: "id", .. })
    ));
    assert!(matches!(
        parse(&with("id", json!("evt_".to_owned() + &"a".repeat(200)))),
        Err(EnvelopeError::Invalid { field: "id", .. })
    ));
    assert!(matches!(
        parse(&with("type", json!("Invoice Paid!"))),
        Err(EnvelopeError::Invalid { field: "type", .. })
    ));
    assert!(matches!(
        parse(&with("created", json!("yesterday"))),
        Err(EnvelopeError::NotJson(_))
    ));
    assert!(matches!(
        EventEnvelope::parse(b"not json"),
        Err(EnvelopeError::NotJson(_))
    ));
    assert!(matches!(
        EventEnvelope::parse(b"[1,2]"),
        Err(EnvelopeError::NotJson(_))
    ));
}

#[test]
fn errors_never_quote_the_body() {
    let mut event = event_around("customer", "customer.created");
    event["created"] = json!("ada@example.com");
    let err = parse(&event).unwrap_err();
    assert!(matches!(err, EnvelopeError::NotJson(_)));
    assert!(!err.to_string().contains("ada@example.com"), "{err}");
    let err = EventEnvelope::parse(br#"{"id": "evt_1", "type": secret-value}"#).unwrap_err();
    assert!(!err.to_string().contains("secret"), "{err}");
}

#[test]
fn escaped_strings_are_decoded() {
    let mut event = event_around("customer", "customer.created");
    event["id"] = json!("evt_1QvEscaped");
    let text = event
        .to_string()
        .replace("evt_1QvEscaped", "evt_1Qv\\u0045scaped");
    assert_eq!(
        EventEnvelope::parse(text.as_bytes()).unwrap().id.as_str(),
        "evt_1QvEscaped"
    );
}

proptest! {
    #[test]
    fn no_body_makes_the_parser_panic(body in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = EventEnvelope::parse(&body);
    }

    #[test]
    fn no_json_value_makes_the_parser_panic(s in r#"\{("(id|type|created|livemode|data|object|customer)":(null|1|-1|true|"[a-z_]{0,12}"|\{\}|\[\]),?){0,8}\}"#) {
        let _ = EventEnvelope::parse(s.as_bytes());
    }
}
