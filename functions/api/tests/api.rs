//! The API in-process over the in-memory store, with the events/ sample.

use api::handler::ApiHandler;
use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use lambda_http::aws_lambda_events::encodings::Body;
use lambda_http::lambda_runtime::{Context, LambdaEvent};
use serde_json::Value;
use shared::billing::{DunningChange, InvoiceRecord, Write};
use shared::catalog::Catalog;
use shared::ids::{AccountId, StripeEventId};
use shared::store::{BillingStore, EventRecord, InMemoryBillingStore, WriteMode};

fn sample() -> ApiGatewayV2httpRequest {
    serde_json::from_str(include_str!("../../../events/api.json")).unwrap()
}

async fn call(h: &ApiHandler<InMemoryBillingStore>, req: ApiGatewayV2httpRequest) -> (i64, Value) {
    let event = LambdaEvent::new(req, Context::default());
    let r = h.handle(&event.payload).await;
    let Some(Body::Text(body)) = r.body else {
        panic!("no body")
    };
    (r.status_code, serde_json::from_str(&body).unwrap())
}

fn handler() -> ApiHandler<InMemoryBillingStore> {
    ApiHandler::new(InMemoryBillingStore::new(), Catalog::embedded().unwrap())
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
