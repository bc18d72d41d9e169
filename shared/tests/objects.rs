//! The processor's lean objects, proven against events built around Stripe's complete fixtures.

use serde_json::{Value, json};
use shared::stripe::objects::{EventData, EventError, InvoiceEvent, StripeEvent};

fn fixtures() -> Value {
    serde_json::from_str(include_str!("fixtures/stripe-objects.json")).unwrap()
}

fn event(event_type: &str, object: Value) -> Vec<u8> {
    let mut e = fixtures()["resources"]["event"].clone();
    e["id"] = json!("evt_1QvObjects0001");
    e["type"] = json!(event_type);
    e["created"] = json!(1_763_942_400);
    e["data"] = json!({ "object": object });
    serde_json::to_vec(&e).unwrap()
}

fn resource(name: &str) -> Value {
    fixtures()["resources"][name].clone()
}

#[test]
fn subscription_events_carry_prices_and_the_period_from_the_items() {
    let mut sub = resource("subscription");
    sub["items"]["data"][0]["current_period_start"] = json!(1_763_942_400);
    sub["items"]["data"][0]["current_period_end"] = json!(1_766_534_400);
    sub["metadata"] = json!({ "account_id": "acct_1" });
    let e = StripeEvent::parse(&event("customer.subscription.updated", sub)).unwrap();
    let EventData::SubscriptionUpdated(s) = &e.data else {
        panic!("{:?}", e.data)
    };
    assert_eq!(s.status, "active");
    assert_eq!(
        s.price_ids().collect::<Vec<_>>(),
        ["price_1PgafmB7WZ01zgkW6dKueIc5"]
    );
    assert_eq!(s.current_period(), Some((1_763_942_400, 1_766_534_400)));
    assert_eq!(s.metadata.as_ref().unwrap()["account_id"], "acct_1");
    assert_eq!(e.customer_id(), Some("cus_QXg1o8vcGmoR32"));
    assert_eq!(e.created, 1_763_942_400);
}

#[test]
fn invoice_events_name_their_subscription_through_the_parent() {
    let mut inv = resource("invoice");
    inv["parent"] = json!({
        "type": "subscription_details",
        "quote_details": null,
        "subscription_details": { "subscription": "sub_1", "metadata": { "account_id": "acct_1" } }
    });
    let e = StripeEvent::parse(&event("invoice.payment_failed", inv)).unwrap();
    let EventData::Invoice(kind, i) = &e.data else {
        panic!()
    };
    assert_eq!(*kind, InvoiceEvent::PaymentFailed);
    assert_eq!(i.subscription_id(), Some("sub_1"));
    assert_eq!(i.subscription_metadata("account_id"), Some("acct_1"));
    assert_eq!(i.amount_due, 1000);
    assert_eq!(i.currency, "usd");
}

#[test]
fn every_handled_type_parses_its_fixture() {
    let cases = [
        ("checkout.session.completed", "checkout.session"),
        (
            "checkout.session.async_payment_succeeded",
            "checkout.session",
        ),
        ("customer.subscription.created", "subscription"),
        ("customer.subscription.deleted", "subscription"),
        ("invoice.created", "invoice"),
        ("invoice.finalized", "invoice"),
        ("invoice.paid", "invoice"),
        ("invoice.voided", "invoice"),
        ("invoice.marked_uncollectible", "invoice"),
        ("customer.created", "customer"),
        ("customer.updated", "customer"),
        ("customer.deleted", "deleted_customer"),
        ("charge.refunded", "charge"),
    ];
    for (event_type, object) in cases {
        let e = StripeEvent::parse(&event(event_type, resource(object)))
            .unwrap_or_else(|err| panic!("{event_type}: {err}"));
        assert_ne!(e.data, EventData::Unhandled, "{event_type}");
    }
}

#[test]
fn every_type_the_endpoint_enables_is_handled() {
    for event_type in shared::stripe::objects::HANDLED_EVENT_TYPES {
        let object = match event_type.split('.').next().unwrap() {
            "checkout" => "checkout.session",
            "invoice" => "invoice",
            "charge" => "charge",
            "payment_intent" => "payment_intent",
            _ if event_type.starts_with("customer.subscription") => "subscription",
            _ if event_type == "customer.deleted" => "deleted_customer",
            _ => "customer",
        };
        let e = StripeEvent::parse(&event(event_type, resource(object)))
            .unwrap_or_else(|err| panic!("{event_type}: {err}"));
        assert_ne!(e.data, EventData::Unhandled, "{event_type}");
    }
}

#[test]
fn unhandled_types_parse_as_unhandled() {
    let e = StripeEvent::parse(&event("plan.created", resource("price"))).unwrap();
    assert_eq!(e.data, EventData::Unhandled);
}

#[test]
fn a_handled_type_with_a_wrong_object_is_an_error_naming_the_type() {
    let err = StripeEvent::parse(&event("customer.subscription.updated", resource("invoice")))
        .unwrap_err();
    let EventError::Object { event_type, reason } = err else {
        panic!("{err:?}")
    };
    assert_eq!(event_type, "customer.subscription.updated");
    assert!(reason.contains("missing field"), "{reason}");
}

#[test]
fn errors_never_quote_the_payload() {
    let mut customer = resource("customer");
    customer["id"] = json!(42);
    customer["email"] = json!("ada@example.com");
    let err = StripeEvent::parse(&event("customer.updated", customer)).unwrap_err();
    assert!(!err.to_string().contains("ada@example.com"), "{err}");
    assert!(matches!(
        StripeEvent::parse(b"{\"id\": \"evt_x\""),
        Err(EventError::Shape(_))
    ));
}

#[test]
fn the_cards_dunning_compares_are_read_from_customers_and_subscriptions() {
    // Stripe's fixtures have no card: neither object names one.
    let e = StripeEvent::parse(&event("customer.updated", resource("customer"))).unwrap();
    let EventData::CustomerUpdated(c) = &e.data else {
        panic!("{:?}", e.data)
    };
    assert_eq!(c.default_payment_method(), None);
    let e = StripeEvent::parse(&event(
        "customer.subscription.updated",
        resource("subscription"),
    ))
    .unwrap();
    let EventData::SubscriptionUpdated(s) = &e.data else {
        panic!("{:?}", e.data)
    };
    assert_eq!(s.default_payment_method(), None);

    // The portal sets the customer's default; Checkout the subscription's (an id, or expanded).
    let mut customer = resource("customer");
    customer["invoice_settings"]["default_payment_method"] = json!("pm_new");
    let e = StripeEvent::parse(&event("customer.updated", customer)).unwrap();
    let EventData::CustomerUpdated(c) = &e.data else {
        panic!()
    };
    assert_eq!(c.default_payment_method(), Some("pm_new"));
    let mut sub = resource("subscription");
    sub["default_payment_method"] = json!({ "id": "pm_old", "object": "payment_method" });
    let e = StripeEvent::parse(&event("customer.subscription.updated", sub)).unwrap();
    let EventData::SubscriptionUpdated(s) = &e.data else {
        panic!()
    };
    assert_eq!(s.default_payment_method(), Some("pm_old"));
}
