//! Checkout in-process over the in-memory store and a fake Stripe, with the events/ sample:
//! the session each purchase makes, the metadata the processor needs on it, idempotency under
//! retries, and every refusal with its status and code.

use checkout::handler::CheckoutHandler;
use checkout::stripe::{CheckoutError, FakeCheckout, Purchase};
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_http::aws_lambda_events::encodings::Body;
use lambda_http::lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use shared::billing::{SubscriptionState, SubscriptionStatus, Write};
use shared::catalog::Catalog;
use shared::ids::{AccountId, StripeEventId};
use shared::store::{BillingStore, EventRecord, InMemoryBillingStore, WriteMode};

type Handler = CheckoutHandler<InMemoryBillingStore, FakeCheckout>;

/// What `make stripe-setup` records: here each lookup key `x` was given the id `price_x`.
fn set_up_store() -> InMemoryBillingStore {
    let store = InMemoryBillingStore::new();
    let catalog = Catalog::embedded().unwrap();
    store.set_stripe_prices(
        catalog
            .price_definitions()
            .map(|p| (p.lookup_key.clone(), format!("price_{}", p.lookup_key)))
            .collect(),
    );
    store
}

fn handler() -> Handler {
    CheckoutHandler::new(
        set_up_store(),
        FakeCheckout::default(),
        Catalog::embedded().unwrap(),
    )
}

#[tokio::test]
async fn before_stripe_is_set_up_checkout_says_so_and_calls_nothing() {
    let h = CheckoutHandler::new(
        InMemoryBillingStore::new(),
        FakeCheckout::default(),
        Catalog::embedded().unwrap(),
    );
    let (status, body) = call(&h, request(plan("pro"))).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "stripe_not_set_up");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`pro_monthly`"),
        "{body}"
    );
    assert!(h.stripe().sessions().is_empty());
}

fn sample() -> ApiGatewayV2httpRequest {
    serde_json::from_str(include_str!("../../../events/checkout.json")).unwrap()
}

fn request(body: Value) -> ApiGatewayV2httpRequest {
    let mut req = sample();
    req.headers.remove("idempotency-key");
    req.body = Some(body.to_string());
    req
}

fn plan(plan: &str) -> Value {
    json!({"plan": plan, "success_url": "https://app.example.com/ok", "cancel_url": "https://app.example.com/no"})
}

async fn call(h: &Handler, req: ApiGatewayV2httpRequest) -> (i64, Value) {
    let event = LambdaEvent::new(req, Context::default());
    let r = h.handle(&event.payload).await;
    let Some(Body::Text(body)) = r.body else {
        panic!("no body")
    };
    (r.status_code, serde_json::from_str(&body).unwrap())
}

async fn apply(h: &Handler, id: &str, writes: &[Write]) {
    let account = AccountId::parse("acct_demo_1").unwrap();
    let record = EventRecord {
        event_id: StripeEventId::parse(id).unwrap(),
        event_type: "test".into(),
        created: 10,
        account: Some(account),
        processed_at: 10,
    };
    // What the processor wrote, in the store the handler reads.
    h.store()
        .apply(&record, "applied", writes, WriteMode::Newer)
        .await
        .unwrap();
}

fn subscribed(status: SubscriptionStatus, plan: &str) -> Write {
    let catalog = Catalog::embedded().unwrap();
    let p = catalog.plan(plan).unwrap();
    Write::Subscription(SubscriptionState {
        subscription_id: "sub_1".into(),
        status,
        plan: p.id.clone(),
        period_start: 0,
        period_end: 2_592_000,
        cancel_at_period_end: false,
        effective_plan: p.id.clone(),
        included_units: p.included_units,
        card: None,
    })
}

#[tokio::test]
async fn the_sample_opens_a_subscription_session_for_the_plan_with_its_overage_price() {
    let h = handler();
    let (status, body) = call(&h, sample()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["url"].as_str().unwrap().starts_with("https://"));
    assert!(body["session_id"].as_str().unwrap().starts_with("cs_"));
    let sessions = h.stripe().sessions();
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(
        s.purchase,
        Purchase::Plan {
            plan_id: "pro".into(),
            base_price: "price_pro_monthly".into(),
            metered_prices: vec!["price_pro_overage".into()],
        }
    );
    // A new customer, named for the account, then the session for it.
    assert_eq!(
        h.stripe().customers(),
        vec![(AccountId::parse("acct_demo_1").unwrap(), None)]
    );
    assert_eq!(s.customer_id, "cus_fake0");
    let metadata = s.metadata();
    assert_eq!(metadata["account_id"], "acct_demo_1");
    assert_eq!(metadata["plan"], "pro");
}

#[tokio::test]
async fn a_credit_pack_is_a_payment_session_carrying_the_pack_for_the_processor() {
    let h = handler();
    let (status, body) = call(
        &h,
        request(
            json!({"credit_pack": "credits_large", "success_url": "https://app.example.com/ok",
                       "cancel_url": "https://app.example.com/no", "email": "ada@example.com"}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let s = &h.stripe().sessions()[0];
    assert_eq!(
        s.purchase,
        Purchase::CreditPack {
            pack_id: "credits_large".into(),
            price_id: "price_credits_10m".into()
        }
    );
    assert_eq!(s.metadata()["credit_pack"], "credits_large");
    assert_eq!(s.metadata()["account_id"], "acct_demo_1");
    assert_eq!(
        h.stripe().customers()[0].1.as_deref(),
        Some("ada@example.com")
    );
}

#[tokio::test]
async fn the_accounts_customer_is_reused() {
    let h = handler();
    apply(
        &h,
        "evt_link",
        &[Write::AccountCustomer {
            customer_id: "cus_known".into(),
            email: None,
        }],
    )
    .await;
    let (status, _) = call(&h, request(plan("pro"))).await;
    assert_eq!(status, 200);
    assert!(h.stripe().customers().is_empty());
    assert_eq!(h.stripe().sessions()[0].customer_id, "cus_known");
}

#[tokio::test]
async fn a_retried_request_makes_one_customer_and_one_session() {
    let h = handler();
    // The app's retries carry its Idempotency-Key (the sample's) ...
    let (_, first) = call(&h, sample()).await;
    let (_, again) = call(&h, sample()).await;
    assert_eq!(first, again);
    // ... or none: the same request within the minute is the same session.
    let (_, a) = call(&h, request(plan("enterprise"))).await;
    let (_, b) = call(&h, request(plan("enterprise"))).await;
    assert_eq!(a, b);
    assert_eq!(h.stripe().sessions().len(), 2);
    assert_eq!(h.stripe().customers().len(), 1);
    // A later visit opens a fresh session (they expire).
    let mut later = request(plan("enterprise"));
    later.request_context.time_epoch += 60_000;
    let (_, c) = call(&h, later).await;
    assert_ne!(a["session_id"], c["session_id"]);
}

#[tokio::test]
async fn an_account_already_on_the_plan_gets_a_clear_409() {
    let h = handler();
    apply(
        &h,
        "evt_sub",
        &[subscribed(SubscriptionStatus::PastDue, "pro")],
    )
    .await;
    let (status, body) = call(&h, request(plan("pro"))).await;
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "already_on_plan");
    assert!(body["error"]["message"].as_str().unwrap().contains("pro"));
    let (status, body) = call(&h, request(plan("enterprise"))).await;
    assert_eq!(status, 409);
    assert_eq!(body["error"]["code"], "already_subscribed");
    // Credits can always be bought.
    let (status, _) = call(
        &h,
        request(json!({"credit_pack": "credits_small", "success_url": "https://app.example.com/ok", "cancel_url": "https://app.example.com/no"})),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        h.stripe()
            .sessions()
            .iter()
            .all(|s| matches!(s.purchase, Purchase::CreditPack { .. }))
    );
}

#[tokio::test]
async fn a_subscription_that_ended_does_not_block_a_new_one() {
    let h = handler();
    apply(
        &h,
        "evt_sub",
        &[subscribed(SubscriptionStatus::Canceled, "pro")],
    )
    .await;
    let (status, body) = call(&h, request(plan("pro"))).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_code_naming_the_problem() {
    let h = handler();
    let ok = "https://app.example.com/ok";
    let cases = [
        (
            json!({"plan": "platinum", "success_url": ok, "cancel_url": ok}),
            "unknown_plan",
            "platinum",
        ),
        (
            json!({"credit_pack": "credits_huge", "success_url": ok, "cancel_url": ok}),
            "unknown_credit_pack",
            "credits_huge",
        ),
        (
            json!({"plan": "free", "success_url": ok, "cancel_url": ok}),
            "plan_not_for_sale",
            "free",
        ),
        (
            json!({"plan": "pro", "credit_pack": "credits_small", "success_url": ok, "cancel_url": ok}),
            "invalid_request",
            "exactly one",
        ),
        (
            json!({"success_url": ok, "cancel_url": ok}),
            "invalid_request",
            "exactly one",
        ),
        (
            json!({"plan": "pro", "success_url": "javascript:alert(1)", "cancel_url": ok}),
            "invalid_success_url",
            "success_url",
        ),
        (
            json!({"plan": "pro", "success_url": ok}),
            "invalid_cancel_url",
            "cancel_url is required",
        ),
        (
            json!({"plan": "pro", "success_url": ok, "cancel_url": "http://evil.example.com/"}),
            "invalid_cancel_url",
            "https",
        ),
        (
            json!({"plan": "pro", "success_url": ok, "cancel_url": ok, "coupon": "FREE"}),
            "invalid_request",
            "coupon",
        ),
        (
            json!({"plan": 7, "success_url": ok, "cancel_url": ok}),
            "invalid_request",
            "plan must be a string",
        ),
        (
            json!({"plan": "pro", "success_url": ok, "cancel_url": ok, "email": "not an email"}),
            "invalid_email",
            "email",
        ),
    ];
    for (body, code, says) in cases {
        let (status, answer) = call(&h, request(body.clone())).await;
        assert_eq!(status, 400, "{body} → {answer}");
        assert_eq!(answer["error"]["code"], code, "{body} → {answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(says),
            "{body} → {answer}"
        );
    }
    let mut not_json = sample();
    not_json.body = Some("plan=pro".into());
    let (status, answer) = call(&h, not_json).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("invalid_body"))
    );
    let mut bad_id = sample();
    bad_id
        .path_parameters
        .insert("account_id".into(), "acct with spaces".into());
    let (status, answer) = call(&h, bad_id).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("invalid_account_id"))
    );
    assert_eq!(h.stripe().calls(), 0, "nothing reached Stripe");
}

#[tokio::test]
async fn stripe_failures_answer_503_to_retry_and_502_when_refused() {
    let h = handler();
    h.stripe()
        .fail_next(CheckoutError::Retryable("429: slow down".into()));
    let (status, body) = call(&h, sample()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("stripe_unavailable"))
    );
    h.stripe()
        .fail_next(CheckoutError::Rejected("400: No such price".into()));
    let (status, body) = call(&h, sample()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (502, Some("stripe_refused"))
    );
    let (status, _) = call(&h, sample()).await;
    assert_eq!(status, 200);
}
