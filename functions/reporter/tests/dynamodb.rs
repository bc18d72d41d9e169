//! The reporter over DynamoDB Local and a fake meter (which keeps the first value of each
//! identifier, as Stripe does): overage from real usage tracks reaches the meter once, whatever
//! crashes, retries and overlapping runs happen.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use reporter::handler::Reporter;
use serde_json::json;
use shared::catalog::Catalog;
use shared::ids::AccountId;
use shared::metering::{Report, next_report};
use shared::store::metering::MeteringStore;
use shared::store::{DynamoDbMeteringStore, DynamoDbUsageStore};
use shared::stripe::meter::{FakeMeter, MeterConfig, MeterError};
use usage::handler::UsageHandler;

const NOW: i64 = 1_767_225_600 + 3_600;

struct Setup {
    client: aws_sdk_dynamodb::Client,
    table: String,
    usage: Arc<UsageHandler<Arc<DynamoDbUsageStore>>>,
}

async fn setup(test: &str, accounts: usize) -> Setup {
    let client = testkit::dynamodb().await;
    let table = testkit::billing_table(&client, test).await;
    for i in 0..accounts {
        let customer = AttributeValue::S(format!("cus_{i}"));
        testkit::put_account(
            &client,
            &table,
            &format!("acct_{i}"),
            "pro",
            0,
            vec![("customer_id", customer)],
        )
        .await;
    }
    let usage = Arc::new(UsageHandler::new(
        Arc::new(DynamoDbUsageStore::new(client.clone(), &table)),
        Catalog::embedded().unwrap(),
    ));
    Setup {
        client,
        table,
        usage,
    }
}

impl Setup {
    async fn track(&self, account: usize, request: &str, units: u64) {
        let payload = json!({"action":"track","account_id":format!("acct_{account}"),"request_id":request,"model":"unlisted-model","input_tokens":units,"output_tokens":0});
        self.usage.handle(&payload, NOW).await.unwrap();
    }

    fn store(&self) -> DynamoDbMeteringStore {
        DynamoDbMeteringStore::new(self.client.clone(), &self.table)
    }

    fn reporter(&self, meter: Arc<FakeMeter>) -> Reporter<DynamoDbMeteringStore, Arc<FakeMeter>> {
        Reporter::new(self.store(), meter, config()).with_retry_base(Duration::from_millis(1))
    }
}

fn config() -> MeterConfig {
    MeterConfig {
        event_name: "llm_overage_units".into(),
        customer_key: "stripe_customer_id".into(),
    }
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(120)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_overage_tracks_over_fifty_accounts_are_fifty_meter_calls() {
    let s = setup("reporter-thousand", 50).await;
    // Twenty tracks per account, the accounts' callers at once.
    let mut callers = tokio::task::JoinSet::new();
    for account in 0..50usize {
        let usage = s.usage.clone();
        callers.spawn(async move {
            let mut total = 0u64;
            for k in 0..20usize {
                let units = ((account + k) % 7 + 1) as u64;
                let payload = json!({"action":"track","account_id":format!("acct_{account}"),"request_id":format!("r{k}"),"model":"unlisted-model","input_tokens":units,"output_tokens":0});
                usage.handle(&payload, NOW).await.unwrap();
                total += units;
            }
            (account, total)
        });
    }
    let mut expected = vec![0u64; 50];
    while let Some(done) = callers.join_next().await {
        let (account, total) = done.unwrap();
        expected[account] = total;
    }
    let meter = Arc::new(FakeMeter::default());
    let summary = s.reporter(meter.clone()).run(NOW, far()).await.unwrap();
    assert_eq!(
        (
            summary.accounts,
            summary.sent,
            summary.confirmed,
            summary.cleared
        ),
        (50, 50, 50, 50)
    );
    assert_eq!(meter.calls(), 50);
    for (i, units) in expected.iter().enumerate() {
        assert_eq!(meter.total(&format!("cus_{i}")), *units, "account {i}");
    }
    // Nothing is due any more: the next run makes no call.
    assert_eq!(
        s.reporter(meter.clone())
            .run(NOW, far())
            .await
            .unwrap()
            .accounts,
        0
    );
    assert_eq!(meter.calls(), 50);
}

#[tokio::test]
async fn a_crash_after_the_claim_or_after_stripe_accepted_leaves_stripe_equal_to_the_local_total() {
    let s = setup("reporter-crashes", 2).await;
    s.track(0, "a", 40).await;
    s.track(1, "b", 30).await;
    let store = s.store();
    let meter = Arc::new(FakeMeter::default());
    // Account 0: a run claimed and crashed before calling Stripe.
    let a0 = AccountId::parse("acct_0").unwrap();
    let input = store.report_input(&a0, 0).await.unwrap();
    let p = &input.periods[0];
    let Report::Claim(claim0) = next_report(&a0, p.period, &p.state, p.overage, NOW) else {
        panic!()
    };
    assert!(store.claim(&a0, p.period, &p.state, &claim0).await.unwrap());
    // Account 1: a run claimed, Stripe accepted, and it crashed before recording it.
    let a1 = AccountId::parse("acct_1").unwrap();
    let input = store.report_input(&a1, 0).await.unwrap();
    let p = &input.periods[0];
    let Report::Claim(claim1) = next_report(&a1, p.period, &p.state, p.overage, NOW) else {
        panic!()
    };
    assert!(store.claim(&a1, p.period, &p.state, &claim1).await.unwrap());
    use shared::stripe::meter::MeterApi;
    meter.send(&config(), "cus_1", &claim1).await.unwrap();

    // More usage meanwhile; then runs until nothing is due.
    s.track(0, "a2", 5).await;
    let reporter = s.reporter(meter.clone());
    for _ in 0..3 {
        reporter.run(NOW, far()).await.unwrap();
    }
    assert_eq!((meter.total("cus_0"), meter.total("cus_1")), (45, 30));
    assert!(store.due_accounts().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_429_storm_delays_but_never_doubles() {
    let s = setup("reporter-storm", 1).await;
    s.track(0, "a", 12).await;
    let meter = Arc::new(FakeMeter::default());
    meter.fail_next(5, MeterError::Retryable("429".into()));
    let summary = s.reporter(meter.clone()).run(NOW, far()).await.unwrap();
    assert_eq!((summary.confirmed, summary.pending), (1, 0));
    assert_eq!((meter.calls(), meter.total("cus_0")), (6, 12));
    // A storm longer than a run's attempts leaves the claim for the next run, unchanged.
    s.track(0, "b", 3).await;
    meter.fail_next(6, MeterError::Retryable("503".into()));
    let summary = s.reporter(meter.clone()).run(NOW, far()).await.unwrap();
    assert_eq!((summary.confirmed, summary.pending), (0, 1));
    s.reporter(meter.clone()).run(NOW, far()).await.unwrap();
    assert_eq!(meter.total("cus_0"), 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_overlapping_runs_send_one_event_per_claim() {
    let s = setup("reporter-overlap", 10).await;
    for i in 0..10usize {
        s.track(i, &format!("r{i}"), 9).await;
    }
    let meter = Arc::new(FakeMeter::default());
    let (a, b) = (s.reporter(meter.clone()), s.reporter(meter.clone()));
    let (ra, rb) = tokio::join!(a.run(NOW, far()), b.run(NOW, far()));
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    for _ in 0..2 {
        a.run(NOW, far()).await.unwrap();
    }
    for i in 0..10 {
        assert_eq!(meter.total(&format!("cus_{i}")), 9, "account {i}");
    }
    // Each claim was written once: the runs together claimed each account's overage once, and a
    // resend of the same claim counts once at the meter.
    assert!(ra.sent + rb.sent >= 10);
}

#[tokio::test]
async fn a_refused_event_and_an_account_without_customer_need_attention() {
    let s = setup("reporter-refused", 1).await;
    s.track(0, "a", 5).await;
    let meter = Arc::new(FakeMeter::default());
    meter.fail_next(1, MeterError::Rejected("400: bad".into()));
    let summary = s.reporter(meter.clone()).run(NOW, far()).await.unwrap();
    assert_eq!(summary.refused, 1);
    assert!(summary.needs_attention());
    // An account with overage but no customer is never silently cleared.
    s.client
        .update_item()
        .table_name(&s.table)
        .key("pk", AttributeValue::S("ACCOUNT#acct_0".into()))
        .key("sk", AttributeValue::S("ACCOUNT".into()))
        .update_expression("REMOVE customer_id")
        .send()
        .await
        .unwrap();
    let summary = s.reporter(meter.clone()).run(NOW, far()).await.unwrap();
    assert_eq!((summary.no_customer, summary.cleared), (1, 0));
}

#[tokio::test]
async fn overage_confirmed_after_the_periods_invoice_was_finalised_needs_a_person() {
    let s = setup("reporter-after-invoice", 1).await;
    s.track(0, "a", 12).await;
    let period_end = s
        .usage
        .handle(&json!({"action":"balance","account_id":"acct_0"}), NOW)
        .await
        .unwrap()["period_end"]
        .as_i64()
        .unwrap();
    let meter = Arc::new(FakeMeter::default());
    // Within minutes of the period's end: on time for its invoice.
    let on_time = s
        .reporter(meter.clone())
        .run(period_end + 120, far())
        .await
        .unwrap();
    assert_eq!((on_time.confirmed, on_time.after_invoice), (1, 0));
    assert!(!on_time.needs_attention());
    // Usage of that period reported two hours after it ended (the reporter was down, say).
    s.usage
        .handle(&json!({"action":"track","account_id":"acct_0","request_id":"late","model":"unlisted-model","input_tokens":5,"output_tokens":0,"timestamp":period_end - 10}), period_end + 7_200)
        .await
        .unwrap();
    let late = s
        .reporter(meter.clone())
        .run(period_end + 7_200, far())
        .await
        .unwrap();
    assert_eq!((late.confirmed, late.after_invoice), (1, 1));
    assert!(late.needs_attention());
    assert_eq!(meter.total("cus_0"), 17);
}
