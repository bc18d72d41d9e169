//! Auto top-up over DynamoDB Local, through the real SDK: twenty uses racing across the
//! threshold on several function instances claim one top-up; none while it is in flight; the
//! grant of its payment ends it; the monthly cap holds across a period boundary; an idle
//! account is never charged.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};
use shared::billing::Write;
use shared::catalog::Catalog;
use shared::ids::{AccountId, StripeEventId};
use shared::store::topup::TopupStore;
use shared::store::{
    ApplyResult, BillingStore, DynamoDbBillingStore, DynamoDbTopupStore, DynamoDbUsageStore,
    EventRecord, WriteMode,
};
use shared::usage::topup::TopupSettings;
use usage::handler::UsageHandler;

mod support;
use support::run_all;

/// 2026-01-31T00:00:00Z: the next calendar month starts a day later.
const JAN_31: i64 = 1_769_817_600;
const FEB_1: i64 = 1_769_904_000;
const ACCOUNT: &str = "acct_topup";

type Handler = UsageHandler<Arc<DynamoDbUsageStore>>;

struct Stack {
    client: aws_sdk_dynamodb::Client,
    table: String,
    usage: Arc<DynamoDbUsageStore>,
    billing: DynamoDbBillingStore,
    topup: DynamoDbTopupStore,
}

/// A free account with `credits`, its customer's default card, and auto top-up of the small
/// pack (1,000 for 1,000,000 credits) below `threshold`, within `cap` a month.
async fn stack(test: &str, credits: u64, threshold: u64, cap: u64) -> Stack {
    let calls = testkit::CountRequests::default();
    let client = calls.client().await;
    let table = testkit::billing_table(&client, test).await;
    testkit::put_account(
        &client,
        &table,
        ACCOUNT,
        "free",
        0,
        vec![
            ("credits", AttributeValue::N(credits.to_string())),
            ("customer_id", AttributeValue::S("cus_topup".into())),
            ("customer_card", AttributeValue::S("pm_saved".into())),
        ],
    )
    .await;
    let s = Stack {
        usage: Arc::new(DynamoDbUsageStore::new(client.clone(), &table)),
        billing: DynamoDbBillingStore::new(client.clone(), &table),
        topup: DynamoDbTopupStore::new(client.clone(), &table),
        client,
        table,
    };
    s.topup
        .configure(&account(), Some(&settings(threshold, cap)))
        .await
        .unwrap();
    s
}

fn account() -> AccountId {
    AccountId::parse(ACCOUNT).unwrap()
}

fn settings(threshold: u64, cap: u64) -> TopupSettings {
    TopupSettings {
        threshold,
        pack: "credits_small".into(),
        amount: 1_000,
        credits: 1_000_000,
        monthly_cap: cap,
    }
}

fn track(request: &str, units: u64) -> Value {
    json!({"action":"track","account_id":ACCOUNT,"request_id":request,"model":"unlisted-model","input_tokens":units,"output_tokens":0})
}

impl Stack {
    fn instances(&self, n: usize) -> Vec<Arc<Handler>> {
        (0..n)
            .map(|_| {
                Arc::new(UsageHandler::new(
                    self.usage.clone(),
                    Catalog::embedded().unwrap(),
                ))
            })
            .collect()
    }

    /// Every claim written for the account, by sequence number.
    async fn claims(&self) -> Vec<HashMap<String, AttributeValue>> {
        let page = self
            .client
            .scan()
            .table_name(&self.table)
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        let mut claims: Vec<_> = page
            .items()
            .iter()
            .filter(|i| i["sk"].as_s().is_ok_and(|sk| sk == "TOPUP"))
            .cloned()
            .collect();
        claims.sort_by_key(|c| c["seq"].as_n().unwrap().parse::<u64>().unwrap());
        claims
    }

    /// Stripe's `payment_intent.succeeded` for claim `seq`, as the processor applies it.
    async fn paid(&self, seq: u64) {
        let record = EventRecord {
            event_id: StripeEventId::parse(&format!("evt_topup_{seq}")).unwrap(),
            event_type: "payment_intent.succeeded".into(),
            created: JAN_31,
            account: Some(account()),
            processed_at: JAN_31,
        };
        let writes = [
            Write::GrantCredits {
                grant_id: format!("pi_topup_{seq}"),
                pack_id: "credits_small".into(),
                credits: 1_000_000,
                amount_paid: 1_000,
                refunded_before: None,
            },
            Write::EndTopupClaim { seq },
        ];
        let applied = self
            .billing
            .apply(&record, "applied", &writes, WriteMode::Newer)
            .await
            .unwrap();
        assert_eq!(applied, ApplyResult::Applied);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn twenty_uses_racing_across_the_threshold_claim_one_top_up() {
    // 1,000 credits; 20 uses of 30 on 4 instances cross below 500 once; the rest stay below.
    let s = stack("topup-race", 1_000, 500, 10_000).await;
    let instances = s.instances(4);
    let calls = (0..20)
        .map(|i| {
            (
                instances[i % 4].clone(),
                track(&format!("r{i}"), 30),
                JAN_31,
            )
        })
        .collect();
    let answers = run_all(calls).await;
    assert!(answers.iter().all(|a| a["status"] == "recorded"));
    let claims = s.claims().await;
    assert_eq!(claims.len(), 1, "{claims:?}");
    let c = &claims[0];
    assert_eq!(c["seq"].as_n().unwrap(), "1");
    assert_eq!(c["status"].as_s().unwrap(), "pending");
    assert_eq!(c["card"].as_s().unwrap(), "pm_saved");
    assert_eq!(c["customer"].as_s().unwrap(), "cus_topup");
    assert_eq!(c["amount"].as_n().unwrap(), "1000");

    // A second crossing while the first payment is in flight claims nothing.
    let h = &instances[0];
    h.handle(&track("more", 300), JAN_31).await.unwrap();
    assert_eq!(s.claims().await.len(), 1);

    // The payment's grant ends the claim: the next use below the threshold claims again.
    s.paid(1).await;
    let b = h
        .handle(&json!({"action":"balance","account_id":ACCOUNT}), JAN_31)
        .await
        .unwrap();
    assert_eq!(b["credits"], 1_000 - 20 * 30 - 300 + 1_000_000);
    h.handle(&track("big", 1_000_000), JAN_31).await.unwrap();
    let claims = s.claims().await;
    assert_eq!(claims.len(), 2);
    assert_eq!(claims[1]["seq"].as_n().unwrap(), "2");
}

#[tokio::test]
async fn the_monthly_cap_holds_until_the_calendar_month_turns() {
    // A cap of two packs a month: the third claim waits for February.
    let s = stack("topup-cap", 100, 500, 2_000).await;
    let h = &s.instances(1)[0];
    for seq in 1..=2 {
        h.handle(&track(&format!("jan{seq}"), 1_000_000), JAN_31)
            .await
            .unwrap();
        assert_eq!(s.claims().await.len() as u64, seq);
        s.paid(seq).await;
    }
    h.handle(&track("jan3", 2_000_000), JAN_31 + 86_399)
        .await
        .unwrap();
    assert_eq!(s.claims().await.len(), 2, "the cap holds in January");
    h.handle(&track("feb1", 10), FEB_1).await.unwrap();
    let claims = s.claims().await;
    assert_eq!(claims.len(), 3, "February has its own cap");
}

#[tokio::test]
async fn an_idle_account_below_its_threshold_is_never_charged() {
    // Already below the threshold when top-up is turned on: reads and checks claim nothing;
    // only a use that credits pay for does.
    let s = stack("topup-idle", 100, 500, 10_000).await;
    let h = &s.instances(1)[0];
    h.handle(&json!({"action":"balance","account_id":ACCOUNT}), JAN_31)
        .await
        .unwrap();
    h.handle(
        &json!({"action":"check","account_id":ACCOUNT,"model":"m","input_tokens":10,"output_tokens":0}),
        JAN_31,
    )
    .await
    .unwrap();
    assert!(s.claims().await.is_empty());
    h.handle(&track("first", 1), JAN_31).await.unwrap();
    assert_eq!(s.claims().await.len(), 1);
}

#[tokio::test]
async fn a_declined_card_disarms_until_the_customers_card_changes() {
    let s = stack("topup-declined", 100, 500, 10_000).await;
    let h = &s.instances(1)[0];
    h.handle(&track("first", 1), JAN_31).await.unwrap();
    let note = shared::store::usage::Notification {
        id: format!("credits.topup_failed:{ACCOUNT}:1"),
        name: "credits.topup_failed",
        detail: "{}".into(),
    };
    let settled = s
        .topup
        .declined(&account(), 1, "pm_saved", "402 card_declined", &note)
        .await
        .unwrap();
    assert_eq!(settled, shared::store::topup::Settled::Now);
    // Again (a repeated stream record): nothing more.
    let again = s
        .topup
        .declined(&account(), 1, "pm_saved", "402 card_declined", &note)
        .await
        .unwrap();
    assert_eq!(again, shared::store::topup::Settled::Before);
    h.handle(&track("second", 1), JAN_31).await.unwrap();
    assert_eq!(
        s.claims().await.len(),
        1,
        "disarmed while the card is the same"
    );

    // The customer adds a card (the processor's `customer.updated`).
    let record = EventRecord {
        event_id: StripeEventId::parse("evt_card").unwrap(),
        event_type: "customer.updated".into(),
        created: JAN_31,
        account: Some(account()),
        processed_at: JAN_31,
    };
    let write = Write::CustomerProfile {
        customer_id: "cus_topup".into(),
        email: None,
        name: None,
        deleted: false,
        card: Some("pm_new".into()),
    };
    s.billing
        .apply(&record, "applied", &[write], WriteMode::Newer)
        .await
        .unwrap();
    h.handle(&track("third", 1), JAN_31).await.unwrap();
    let claims = s.claims().await;
    assert_eq!(claims.len(), 2);
    assert_eq!(claims[1]["card"].as_s().unwrap(), "pm_new");
    assert_eq!(claims[0]["status"].as_s().unwrap(), "declined");
}
