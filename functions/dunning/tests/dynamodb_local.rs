//! Dunning over DynamoDB Local, with the processor's own writes and the usage function on the
//! same table: cases found through the index (never a scan), each step recorded once by
//! truly concurrent runs, a payment lifting the restrictions in the processor's transaction, a
//! stale `payment_failed` never reopening a paid case, and the usage function refusing a
//! suspended account while recording its usage, with credits kept through a downgrade.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use dunning::handler::Dunning;
use serde_json::json;
use shared::billing::dunning::{DunningPolicy, Step};
use shared::billing::{DunningChange, InvoiceRecord, SubscriptionState, SubscriptionStatus, Write};
use shared::catalog::Catalog;
use shared::ids::{AccountId, StripeEventId};
use shared::store::dunning::DunningStore;
use shared::store::{
    ApplyResult, BillingStore, DynamoDbBillingStore, DynamoDbDunningStore, DynamoDbUsageStore,
    EventRecord, WriteMode,
};
use shared::stripe::dunning::FakeDunningStripe;

const T0: i64 = 1_767_225_600;
const DAY: i64 = 86_400;
const RUN: i64 = 900;

fn far() -> Instant {
    Instant::now() + Duration::from_secs(120)
}

fn event(id: &str, created: i64, account: &AccountId) -> EventRecord {
    EventRecord {
        event_id: StripeEventId::parse(id).unwrap(),
        event_type: "invoice.test".into(),
        created,
        account: Some(account.clone()),
        processed_at: created,
    }
}

fn invoice(status: &str, dunning: DunningChange) -> Write {
    Write::Invoice(
        InvoiceRecord {
            invoice_id: "in_dun".into(),
            number: Some("INV-0042".into()),
            status: status.into(),
            amount_due: 2_900,
            amount_paid: if status == "paid" { 2_900 } else { 0 },
            amount_remaining: if status == "paid" { 0 } else { 2_900 },
            currency: "usd".into(),
            hosted_invoice_url: Some("https://invoice.stripe.com/i/in_dun".into()),
            invoice_pdf: None,
            period_start: T0,
            period_end: T0 + 30 * DAY,
            subscription_id: Some("sub_dun".into()),
        },
        dunning,
    )
}

fn failed(attempt_count: u32) -> Write {
    invoice(
        "open",
        DunningChange::Failed {
            attempt_count,
            next_payment_attempt: None,
        },
    )
}

struct Setup {
    client: aws_sdk_dynamodb::Client,
    table: String,
    account: AccountId,
    billing: DynamoDbBillingStore,
    usage: usage::handler::UsageHandler<DynamoDbUsageStore>,
}

impl Setup {
    /// A pro account with 5,000 prepaid credits, whose subscription invoice just failed once.
    async fn new(test: &str) -> Self {
        let client = testkit::dynamodb().await;
        let table = testkit::billing_table(&client, test).await;
        let account = AccountId::parse("acct_dunning").unwrap();
        let billing = DynamoDbBillingStore::new(client.clone(), &table);
        let catalog = Catalog::embedded().unwrap();
        let pro = catalog.plan("pro").unwrap();
        let sub = Write::Subscription(SubscriptionState {
            subscription_id: "sub_dun".into(),
            status: SubscriptionStatus::Active,
            plan: pro.id.clone(),
            period_start: T0,
            period_end: T0 + 30 * DAY,
            cancel_at_period_end: false,
            effective_plan: pro.id.clone(),
            included_units: pro.included_units,
            card: Some("pm_old".into()),
        });
        let s = Self {
            usage: usage::handler::UsageHandler::new(
                DynamoDbUsageStore::new(client.clone(), &table),
                catalog,
            ),
            client,
            table,
            account,
            billing,
        };
        s.apply("evt_sub", T0 - 10, sub).await;
        s.client
            .update_item()
            .table_name(&s.table)
            .key("pk", AttributeValue::S("ACCOUNT#acct_dunning".into()))
            .key("sk", AttributeValue::S("ACCOUNT".into()))
            .update_expression("SET credits = :c, last_topup = :c")
            .expression_attribute_values(":c", AttributeValue::N("5000".into()))
            .send()
            .await
            .unwrap();
        s.apply("evt_fail_1", T0, failed(1)).await;
        s
    }

    async fn apply(&self, id: &str, created: i64, write: Write) -> ApplyResult {
        self.billing
            .apply(
                &event(id, created, &self.account),
                "applied",
                &[write],
                WriteMode::Newer,
            )
            .await
            .unwrap()
    }

    fn store(&self) -> DynamoDbDunningStore {
        DynamoDbDunningStore::new(self.client.clone(), &self.table)
    }

    async fn outbox(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression("begins_with(pk, :o)")
            .expression_attribute_values(":o", AttributeValue::S("OUTBOX#".into()))
            .send()
            .await
            .unwrap()
            .items()
            .iter()
            .filter_map(|i| i.get("id")?.as_s().ok().cloned())
            .filter(|id| id.ends_with(":in_dun"))
            .collect();
        ids.sort();
        ids
    }

    async fn usage(&self, action: serde_json::Value, now: i64) -> serde_json::Value {
        self.usage.handle(&action, now).await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_runs_take_each_step_once_and_a_payment_brings_the_account_back() {
    let s = Setup::new("dunning-steps").await;
    let cases = s.store().cases().await.unwrap();
    assert_eq!(cases.len(), 1);
    assert_eq!(
        (
            cases[0].invoice_id.as_str(),
            cases[0].failures,
            cases[0].first_failed_at
        ),
        ("in_dun", 1, T0)
    );
    s.apply("evt_fail_2", T0 + 3 * DAY, failed(2)).await;
    s.apply("evt_fail_3", T0 + 6 * DAY, failed(3)).await;

    // Eight runs at once, as overlapping scheduled invocations would be.
    let stripe = Arc::new(FakeDunningStripe::default());
    let runs: Vec<_> = (0..8)
        .map(|_| {
            let run = Dunning::new(s.store(), stripe.clone(), DunningPolicy::default());
            tokio::spawn(async move { run.run(T0 + 14 * DAY, far()).await.unwrap() })
        })
        .collect();
    let mut taken = Vec::new();
    for r in runs {
        taken.extend(r.await.unwrap().taken.into_iter().map(|(_, step)| step));
    }
    taken.sort();
    assert_eq!(
        taken,
        vec![Step::NotifyPaymentFailed, Step::Downgrade, Step::Suspend]
    );
    assert_eq!(
        s.outbox().await,
        vec![
            "account.downgraded:in_dun",
            "account.suspended:in_dun",
            "payment.failed:in_dun"
        ]
    );
    assert_eq!(stripe.effects().len(), 1, "one pause, whatever the runs");

    // Suspended and downgraded: usage is recorded, never allowed; credits are kept.
    let account = s.billing.account(&s.account).await.unwrap().unwrap();
    assert_eq!(
        (account.plan.as_str(), account.suspended, account.downgraded),
        ("free", true, true)
    );
    assert_eq!(account.credits, 5_000);
    let now = T0 + 14 * DAY + 60;
    let check = s
        .usage(json!({"action":"check","account_id":"acct_dunning","model":"unlisted","input_tokens":10,"output_tokens":0}), now)
        .await;
    assert_eq!(check["allowed"], false, "{check}");
    let reserve = s
        .usage(json!({"action":"reserve","account_id":"acct_dunning","request_id":"r_hold","model":"unlisted","input_tokens":10,"output_tokens":0,"ttl_seconds":60}), now)
        .await;
    assert_eq!(reserve["status"], "refused", "{reserve}");
    let track = s
        .usage(json!({"action":"track","account_id":"acct_dunning","request_id":"r_1","model":"unlisted","input_tokens":100,"output_tokens":0}), now)
        .await;
    assert_eq!(
        (track["status"].as_str(), track["allowed"].as_bool()),
        (Some("recorded"), Some(false)),
        "{track}"
    );
    assert_eq!(track["units"], 100);
    assert_eq!(track["balance"]["plan"], "free");

    // The invoice is paid: the processor's transaction lifts both restrictions at once.
    s.apply(
        "evt_paid",
        T0 + 14 * DAY + 120,
        invoice("paid", DunningChange::Closed { reason: "paid" }),
    )
    .await;
    let account = s.billing.account(&s.account).await.unwrap().unwrap();
    assert_eq!(
        (account.plan.as_str(), account.suspended, account.downgraded),
        ("pro", false, false)
    );
    let back = s
        .usage(json!({"action":"check","account_id":"acct_dunning","model":"unlisted","input_tokens":10,"output_tokens":0}), now + 180)
        .await;
    assert_eq!(back["allowed"], true, "{back}");
    assert_eq!(back["balance"]["plan"], "pro");
    assert!(back["balance"]["included_remaining"].as_u64().unwrap() > 4_000_000);

    // A stale failure (Stripe's retry of an older event) does not reopen the paid case.
    assert!(matches!(
        s.apply("evt_fail_late", T0 + 6 * DAY + 1, failed(3)).await,
        ApplyResult::Conflict { .. }
    ));

    // The next runs reactivate once (emailing and emitting it) and settle the case.
    let one = Dunning::new(s.store(), stripe.clone(), DunningPolicy::default());
    let other = Dunning::new(s.store(), stripe.clone(), DunningPolicy::default());
    let (a, b) = tokio::join!(
        one.run(T0 + 14 * DAY + RUN, far()),
        other.run(T0 + 14 * DAY + RUN, far())
    );
    let mut after: Vec<Step> = a.unwrap().taken.into_iter().map(|(_, x)| x).collect();
    after.extend(b.unwrap().taken.into_iter().map(|(_, x)| x));
    assert_eq!(after, vec![Step::Reactivate]);
    assert!(
        s.outbox()
            .await
            .contains(&"account.reactivated:in_dun".into())
    );
    assert!(s.store().cases().await.unwrap().is_empty(), "settled");
    let calls: Vec<&str> = stripe.effects().iter().map(|c| c.what).collect();
    assert_eq!(calls, vec!["pause", "resume"]);
}

#[tokio::test]
async fn a_new_card_from_the_portal_is_charged_first_by_the_next_run() {
    let s = Setup::new("dunning-card").await;
    let stripe = Arc::new(FakeDunningStripe::default());
    let run = Dunning::new(s.store(), stripe.clone(), DunningPolicy::default());
    // One failure, a day before our retry: nothing is due yet.
    run.run(T0 + RUN, far()).await.unwrap();
    assert!(stripe.calls().is_empty());
    // customer.updated: the portal made pm_new the customer's default.
    let profile = Write::CustomerProfile {
        customer_id: "cus_dun".into(),
        email: Some("ada@example.com".into()),
        name: None,
        deleted: false,
        card: Some("pm_new".into()),
    };
    s.apply("evt_card", T0 + 2 * RUN, profile).await;
    let summary = run.run(T0 + 3 * RUN, far()).await.unwrap();
    assert_eq!(summary.paid, 1);
    let calls: Vec<(&str, Option<String>)> = stripe
        .effects()
        .into_iter()
        .map(|c| (c.what, c.card))
        .collect();
    assert_eq!(
        calls,
        vec![
            ("card_first", Some("pm_new".into())),
            ("pay", Some("pm_new".into()))
        ]
    );
    // The case remembers the card: no second charge before the payment's event arrives.
    run.run(T0 + 4 * RUN, far()).await.unwrap();
    assert_eq!(stripe.effects().len(), 2);
    assert!(
        s.store().cases().await.unwrap()[0]
            .cards_tried
            .contains("pm_new")
    );
}

#[tokio::test]
async fn a_one_off_invoice_that_fails_is_recorded_but_not_chased() {
    let s = Setup::new("dunning-one-off").await;
    let mut one_off = failed(1);
    if let Write::Invoice(record, _) = &mut one_off {
        record.invoice_id = "in_once".into();
        record.subscription_id = None;
    }
    s.apply("evt_once", T0 + 5, one_off).await;
    let ids: Vec<String> = s
        .store()
        .cases()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.invoice_id)
        .collect();
    assert_eq!(ids, vec!["in_dun"]);
}
