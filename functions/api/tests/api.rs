//! The API in-process over the in-memory store, with the events/ sample.

use api::handler::ApiHandler;
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_http::aws_lambda_events::encodings::Body;
use lambda_http::lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;
use shared::billing::{DunningChange, InvoiceRecord, Write};
use shared::catalog::Catalog;
use shared::ids::{AccountId, StripeEventId};
use shared::store::{
    BillingStore, EventRecord, InMemoryBillingStore, InMemoryTopupStore, InMemoryUsageStore,
    WriteMode,
};
use shared::stripe::portal::{FakePortal, PortalError};
use std::sync::Arc;

type Api =
    ApiHandler<InMemoryBillingStore, Arc<InMemoryUsageStore>, FakePortal, InMemoryTopupStore>;

fn sample() -> ApiGatewayV2httpRequest {
    serde_json::from_str(include_str!("../../../events/api.json")).unwrap()
}

async fn call(h: &Api, req: ApiGatewayV2httpRequest) -> (i64, Value) {
    let event = LambdaEvent::new(req, Context::default());
    let r = h.handle(&event.payload).await;
    let Some(Body::Text(body)) = r.body else {
        panic!("no body")
    };
    (r.status_code, serde_json::from_str(&body).unwrap())
}

fn handler() -> Api {
    with_usage(Arc::default())
}

fn with_usage(usage: Arc<InMemoryUsageStore>) -> Api {
    ApiHandler::new(
        InMemoryBillingStore::new(),
        usage,
        FakePortal::default(),
        InMemoryTopupStore::default(),
        Catalog::embedded().unwrap(),
    )
}

#[tokio::test]
async fn an_unknown_account_is_on_the_free_plan() {
    let (status, body) = call(&handler(), sample()).await;
    assert_eq!(status, 200);
    assert_eq!(body["plan"], "free");
    assert_eq!(body["included_units"], 100_000);
    assert_eq!(body["credits"], 0);
}

#[tokio::test]
async fn accounts_and_invoices_show_what_the_processor_wrote() {
    let h = handler();
    let account = AccountId::parse("acct_demo_1").unwrap();
    let record = EventRecord {
        event_id: StripeEventId::parse("evt_1").unwrap(),
        event_type: "invoice.payment_failed".into(),
        created: 10,
        account: Some(account.clone()),
        processed_at: 10,
    };
    let writes = [
        Write::GrantCredits {
            grant_id: "pi_1".into(),
            pack_id: "credits_small".into(),
            credits: 1_000_000,
            amount_paid: 1000,
            refunded_before: None,
        },
        Write::Invoice(
            InvoiceRecord {
                invoice_id: "in_1".into(),
                number: Some("SIM-0001".into()),
                status: "open".into(),
                amount_due: 4900,
                amount_paid: 0,
                amount_remaining: 4900,
                currency: "usd".into(),
                hosted_invoice_url: None,
                invoice_pdf: None,
                period_start: 1,
                period_end: 2,
                subscription_id: None,
            },
            DunningChange::Failed {
                attempt_count: 1,
                next_payment_attempt: Some(99),
            },
        ),
    ];
    h.store()
        .apply(&record, "applied", &writes, WriteMode::Newer)
        .await
        .unwrap();

    let (_, body) = call(&h, sample()).await;
    assert_eq!(body["credits"], 1_000_000);

    let mut req = sample();
    req.route_key = Some("GET /v1/accounts/{account_id}/invoices".into());
    let (status, body) = call(&h, req).await;
    assert_eq!(status, 200);
    assert_eq!(body["data"][0]["number"], "SIM-0001");
    assert_eq!(body["data"][0]["dunning"]["failures"], 1);
}

#[tokio::test]
async fn bad_ids_and_routes_are_refused() {
    let mut req = sample();
    req.path_parameters
        .insert("account_id".into(), "a#b".into());
    let (status, body) = call(&handler(), req).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_account_id"))
    );
    let mut req = sample();
    req.route_key = Some("DELETE /v1/accounts/{account_id}".into());
    assert_eq!(call(&handler(), req).await.0, 404);
}

#[tokio::test]
async fn usage_shows_each_period_and_model_with_the_buckets_that_paid() {
    let usage = Arc::new(InMemoryUsageStore::default());
    let recorder = usage::handler::UsageHandler::new(usage.clone(), Catalog::embedded().unwrap());
    let track = |request: &str, model: &str, input: u64| serde_json::json!({"action":"track","account_id":"acct_demo_1","request_id":request,"model":model,"input_tokens":input,"output_tokens":0});
    let now = 1_767_225_600 + 60; // January 2026
    recorder
        .handle(&track("a", "gpt-4o", 10), now)
        .await
        .unwrap();
    recorder
        .handle(&track("b", "gpt-4o-mini", 99_990), now)
        .await
        .unwrap();
    recorder
        .handle(&track("c", "gpt-4o-mini", 5), now)
        .await
        .unwrap();
    let february = now + 31 * 86_400;
    recorder
        .handle(&track("d", "gpt-4o", 1), february)
        .await
        .unwrap();

    let mut req = sample();
    req.route_key = Some("GET /v1/accounts/{account_id}/usage".into());
    let (status, body) = call(&with_usage(usage), req).await;
    assert_eq!(status, 200);
    let periods = body["periods"].as_array().unwrap();
    assert_eq!(periods.len(), 2);
    assert_eq!(periods[0]["period_start"], 1_769_904_000, "newest first");
    let january = &periods[1];
    assert_eq!(january["totals"]["units"], 20 + 99_990 + 5);
    assert_eq!(
        january["totals"]["covered"],
        serde_json::json!({"included": 100_000, "credits": 0, "overage": 0, "uncovered": 15})
    );
    let mini = january["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["model"] == "gpt-4o-mini")
        .unwrap();
    assert_eq!(
        (
            mini["requests"].as_u64(),
            mini["covered"]["uncovered"].as_u64()
        ),
        (Some(2), Some(15))
    );
    assert_eq!(mini["tokens"]["input"], 99_995);
}

#[tokio::test]
async fn invoices_come_newest_first_in_pages_with_stripes_cursor() {
    let h = handler();
    for n in 1..=5i64 {
        let record = EventRecord {
            event_id: StripeEventId::parse(&format!("evt_page_{n}")).unwrap(),
            event_type: "invoice.finalized".into(),
            created: 1_767_225_600 + n,
            account: Some(AccountId::parse("acct_demo_1").unwrap()),
            processed_at: 1_767_225_600 + n,
        };
        let invoice = InvoiceRecord {
            invoice_id: format!("in_{n}"),
            number: Some(format!("SIM-000{n}")),
            status: "open".into(),
            amount_due: 4900,
            amount_paid: 0,
            amount_remaining: 4900,
            currency: "usd".into(),
            hosted_invoice_url: Some(format!("https://invoice.stripe.com/i/in_{n}")),
            invoice_pdf: Some(format!("https://pay.stripe.com/invoice/in_{n}/pdf")),
            period_start: 1_767_225_600 + n * 2_592_000,
            period_end: 1_767_225_600 + (n + 1) * 2_592_000,
            subscription_id: Some("sub_1".into()),
        };
        let writes = vec![Write::Invoice(invoice, DunningChange::None)];
        h.store()
            .apply(&record, "applied", &writes, WriteMode::Newer)
            .await
            .unwrap();
    }
    let page = |query: &[(&str, &str)]| {
        let mut req = sample();
        req.route_key = Some("GET /v1/accounts/{account_id}/invoices".into());
        req.query_string_parameters = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<std::collections::HashMap<_, _>>()
            .into();
        req
    };
    let ids = |body: &serde_json::Value| -> Vec<String> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect()
    };

    let (status, first) = call(&h, page(&[("limit", "2")])).await;
    assert_eq!(status, 200);
    assert_eq!(ids(&first), ["in_5", "in_4"]);
    assert_eq!(first["has_more"], true);
    assert_eq!(
        first["data"][0]["hosted_invoice_url"],
        "https://invoice.stripe.com/i/in_5"
    );
    assert_eq!(
        first["data"][0]["invoice_pdf"],
        "https://pay.stripe.com/invoice/in_5/pdf"
    );
    let (_, second) = call(&h, page(&[("limit", "2"), ("starting_after", "in_4")])).await;
    assert_eq!(
        (ids(&second), second["has_more"].as_bool()),
        (vec!["in_3".to_owned(), "in_2".to_owned()], Some(true))
    );
    let (_, last) = call(&h, page(&[("limit", "2"), ("starting_after", "in_2")])).await;
    assert_eq!(
        (ids(&last), last["has_more"].as_bool()),
        (vec!["in_1".to_owned()], Some(false))
    );
    let (_, all) = call(&h, page(&[])).await;
    assert_eq!(ids(&all).len(), 5);
    assert_eq!(all["has_more"], false);

    for bad in [
        &[("limit", "0")][..],
        &[("limit", "101")],
        &[("limit", "ten")],
        &[("starting_after", "in_404")],
    ] {
        let (status, body) = call(&h, page(bad)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_request")),
            "{bad:?}"
        );
    }
}

fn portal_request(body: &str) -> ApiGatewayV2httpRequest {
    let mut req = sample();
    req.route_key = Some("POST /v1/accounts/{account_id}/portal".into());
    req.request_context.http.method = lambda_http::http::Method::POST;
    req.body = Some(body.into());
    req
}

async fn with_customer(h: &Api) {
    let record = EventRecord {
        event_id: StripeEventId::parse("evt_customer").unwrap(),
        event_type: "checkout.session.completed".into(),
        created: 10,
        account: Some(AccountId::parse("acct_demo_1").unwrap()),
        processed_at: 10,
    };
    let writes = [Write::AccountCustomer {
        customer_id: "cus_portal".into(),
        email: None,
    }];
    h.store()
        .apply(&record, "applied", &writes, WriteMode::Newer)
        .await
        .unwrap();
}

#[tokio::test]
async fn the_portal_opens_for_the_accounts_customer_once_per_request() {
    let h = handler();
    with_customer(&h).await;
    let body = r#"{"return_url":"https://app.example.com/billing"}"#;
    let (status, first) = call(&h, portal_request(body)).await;
    assert_eq!(status, 200, "{first}");
    assert!(
        first["url"]
            .as_str()
            .unwrap()
            .starts_with("https://billing.stripe.com/")
    );
    // The same request again (a retry within the minute) carries the same key: one session.
    let (_, again) = call(&h, portal_request(body)).await;
    assert_eq!(again["url"], first["url"]);
    let calls = h.portal().calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 2);
    assert_eq!(
        (calls[0].0.as_str(), calls[0].1.as_str()),
        ("cus_portal", "https://app.example.com/billing")
    );
    assert_eq!(calls[0].2, calls[1].2);
    assert!(calls[0].2.starts_with("portal:"));

    // A later visit gets a fresh key; so does an app-chosen Idempotency-Key.
    let mut later = portal_request(body);
    later.request_context.time_epoch += 60_000;
    call(&h, later).await;
    let mut keyed = portal_request(body);
    keyed
        .headers
        .insert("idempotency-key", "visit-42".parse().unwrap());
    call(&h, keyed).await;
    let keys: Vec<String> = h
        .portal()
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.2.clone())
        .collect();
    assert_eq!(keys.len(), 4);
    assert_ne!(keys[2], keys[0]);
    assert_ne!(keys[3], keys[0]);
    assert_ne!(keys[3], keys[2]);
}

#[tokio::test]
async fn the_portal_refuses_what_it_cannot_open_and_says_why() {
    let h = handler();
    // No customer yet: nothing to open a portal for.
    let (status, body) = call(
        &h,
        portal_request(r#"{"return_url":"https://app.example.com"}"#),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("no_customer"))
    );

    with_customer(&h).await;
    for (body, code) in [
        ("", "invalid_body"),
        ("[1]", "invalid_body"),
        ("{}", "invalid_return_url"),
        (
            r#"{"return_url":"javascript:alert(1)"}"#,
            "invalid_return_url",
        ),
        (
            r#"{"return_url":"http://evil.example.com"}"#,
            "invalid_return_url",
        ),
        (r#"{"return_url":"https://"}"#, "invalid_return_url"),
        (
            r#"{"return_url":"https://a.example.com/x y"}"#,
            "invalid_return_url",
        ),
    ] {
        let (status, answer) = call(&h, portal_request(body)).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}"
        );
    }
    let mut bad_key = portal_request(r#"{"return_url":"https://app.example.com"}"#);
    bad_key
        .headers
        .insert("idempotency-key", "".parse().unwrap());
    assert_eq!(call(&h, bad_key).await.0, 400);
    assert!(
        h.portal().calls.lock().unwrap().is_empty(),
        "nothing reached Stripe"
    );

    *h.portal().fail_next.lock().unwrap() = Some(PortalError::Retryable("503".into()));
    let (status, body) = call(
        &h,
        portal_request(r#"{"return_url":"https://app.example.com"}"#),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("stripe_unavailable"))
    );
    *h.portal().fail_next.lock().unwrap() =
        Some(PortalError::Rejected("400: No such customer".into()));
    let (status, body) = call(
        &h,
        portal_request(r#"{"return_url":"https://app.example.com"}"#),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (502, Some("stripe_refused"))
    );
}

fn topup_request(body: &str) -> ApiGatewayV2httpRequest {
    let mut req = sample();
    req.route_key = Some("PUT /v1/accounts/{account_id}/auto-topup".into());
    req.request_context.http.method = lambda_http::http::Method::PUT;
    req.body = Some(body.into());
    req
}

#[tokio::test]
async fn auto_topup_is_turned_on_with_the_packs_price_and_off_again() {
    let h = handler();
    let account = AccountId::parse("acct_demo_1").unwrap();
    let (status, body) = call(
        &h,
        topup_request(r#"{"threshold":200000,"credit_pack":"credits_small","monthly_cap":3000}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["auto_topup"]["enabled"], true);
    assert_eq!(body["auto_topup"]["amount"], 1000);
    assert_eq!(body["auto_topup"]["credits"], 1_000_000);
    let stored = h.topup().state(&account).settings.unwrap();
    assert_eq!(
        (stored.threshold, stored.pack.as_str(), stored.monthly_cap),
        (200_000, "credits_small", 3000)
    );

    let (status, body) = call(&h, topup_request(r#"{"enabled":false}"#)).await;
    assert_eq!(
        (status, &body["auto_topup"]["enabled"]),
        (200, &Value::Bool(false))
    );
    assert_eq!(h.topup().state(&account).settings, None);
}

#[tokio::test]
async fn bad_auto_topup_settings_are_refused_naming_the_field_and_change_nothing() {
    let h = handler();
    let account = AccountId::parse("acct_demo_1").unwrap();
    for (body, code, names) in [
        (
            r#"{"threshold":0,"credit_pack":"credits_small","monthly_cap":3000}"#,
            "invalid_auto_topup",
            "`threshold`",
        ),
        (
            r#"{"threshold":-5,"credit_pack":"credits_small","monthly_cap":3000}"#,
            "invalid_auto_topup",
            "`threshold`",
        ),
        (
            r#"{"threshold":1.5,"credit_pack":"credits_small","monthly_cap":3000}"#,
            "invalid_auto_topup",
            "`threshold`",
        ),
        (
            r#"{"threshold":10,"credit_pack":"credits_huge","monthly_cap":3000}"#,
            "unknown_credit_pack",
            "credits_huge",
        ),
        (
            r#"{"threshold":10,"monthly_cap":3000}"#,
            "invalid_auto_topup",
            "`credit_pack`",
        ),
        (
            r#"{"threshold":10,"credit_pack":"credits_small","monthly_cap":999}"#,
            "invalid_auto_topup",
            "`monthly_cap` (999)",
        ),
        (
            r#"{"threshold":10,"credit_pack":"credits_small","monthly_cap":3000,"card":"x"}"#,
            "invalid_auto_topup",
            "unknown field `card`",
        ),
        (r#"{"enabled":"yes"}"#, "invalid_auto_topup", "`enabled`"),
        ("[1]", "invalid_auto_topup", "object"),
        ("{", "invalid_auto_topup", "JSON"),
    ] {
        let (status, answer) = call(&h, topup_request(body)).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{body}: {message}");
    }
    assert_eq!(h.topup().state(&account).settings, None);
}
