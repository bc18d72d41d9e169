//! Reconciliation over DynamoDB Local and a fake meter: overage tracked by the usage function and
//! reported by the reporter reconciles once its period has closed; a planted difference is
//! found and alarmed on every run until resolved; open periods cost no Stripe call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use reconciler::handler::Reconciler;
use reporter::handler::Reporter;
use serde_json::json;
use shared::catalog::Catalog;
use shared::metering::{SETTLE_SECS, summary_window};
use shared::store::metering::MeteringStore;
use shared::store::{DynamoDbMeteringStore, DynamoDbUsageStore};
use shared::stripe::meter::{FakeMeter, MeterConfig};
use shared::usage::period::Period;
use usage::handler::UsageHandler;

const NOW: i64 = 1_767_225_600 + 3_600;

fn config() -> MeterConfig {
    MeterConfig {
        event_name: "llm_overage_units".into(),
        customer_key: "stripe_customer_id".into(),
    }
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(120)
}

struct Setup {
    client: aws_sdk_dynamodb::Client,
    table: String,
    meter: Arc<FakeMeter>,
}

impl Setup {
    /// `accounts` pro accounts with a customer each, every one in overage by `10 + i` units,
    /// reported to the fake meter. Returns the period the usage fell in.
    async fn new(test: &str, accounts: usize) -> (Self, Period) {
        let client = testkit::dynamodb().await;
        let table = testkit::billing_table(&client, test).await;
        let usage = UsageHandler::new(
            DynamoDbUsageStore::new(client.clone(), &table),
            Catalog::embedded().unwrap(),
        );
        let mut period = None;
        for i in 0..accounts {
            let account = format!("acct_{i}");
            testkit::put_account(
                &client,
                &table,
                &account,
                "pro",
                0,
                vec![("customer_id", AttributeValue::S(format!("cus_{i}")))],
            )
            .await;
            let answer = usage
                .handle(&json!({"action":"track","account_id":account,"request_id":"r","model":"unlisted-model","input_tokens":10 + i,"output_tokens":0}), NOW)
                .await
                .unwrap();
            assert_eq!(answer["covered"]["overage"], 10 + i as u64, "{answer}");
            period = Some(Period {
                start: answer["balance"]["period_start"].as_i64().unwrap(),
                end: answer["balance"]["period_end"].as_i64().unwrap(),
            });
        }
        let meter = Arc::new(FakeMeter::default());
        let s = Self {
            client,
            table,
            meter,
        };
        let summary = Reporter::new(s.store(), s.meter.clone(), config())
            .with_retry_base(Duration::from_millis(1))
            .run(NOW, far())
            .await
            .unwrap();
        assert_eq!(summary.confirmed, accounts);
        (s, period.unwrap())
    }

    fn store(&self) -> DynamoDbMeteringStore {
        DynamoDbMeteringStore::new(self.client.clone(), &self.table)
    }

    fn reconciler(&self) -> Reconciler<DynamoDbMeteringStore, Arc<FakeMeter>> {
        Reconciler::new(self.store(), self.meter.clone(), config())
            .with_retry_base(Duration::from_millis(1))
    }
}

#[tokio::test]
async fn closed_periods_that_agree_are_compared_once_and_open_ones_cost_no_stripe_call() {
    let (s, period) = Setup::new("reconcile-agree", 5).await;
    assert_eq!(s.store().reconcile_due().await.unwrap().len(), 5);

    // The period is still open (and then not yet settled): nothing asked of Stripe.
    for now in [NOW + 60, period.end + SETTLE_SECS - 1] {
        let summary = s.reconciler().run(now, far()).await.unwrap();
        assert_eq!((summary.checked, summary.not_yet), (0, 5));
        assert_eq!(s.meter.summary_calls(), 0);
    }

    let after = period.end + SETTLE_SECS;
    let summary = s.reconciler().run(after, far()).await.unwrap();
    assert_eq!((summary.checked, summary.agreed), (5, 5));
    assert!(!summary.needs_attention(), "{summary:?}");
    assert_eq!(
        s.meter.summary_calls(),
        5,
        "one summary per account and period"
    );

    // Agreed periods leave the index: the next run reads nothing.
    assert!(s.store().reconcile_due().await.unwrap().is_empty());
    let again = s.reconciler().run(after + 86_400, far()).await.unwrap();
    assert_eq!(again.checked, 0);
    assert_eq!(s.meter.summary_calls(), 5);
}

#[tokio::test]
async fn a_planted_difference_is_found_with_its_figures_and_stays_until_resolved() {
    let (s, period) = Setup::new("reconcile-differ", 3).await;
    let (from, to) = summary_window(period);
    // Stripe counted a claim twice (resent after its deduplication window), for cus_1.
    s.meter.plant("ovg_resent_after_24h", "cus_1", 11, to - 1);
    // An event just outside the window (the next period) changes nothing for cus_2.
    s.meter.plant("ovg_next_period", "cus_2", 500, to);
    assert!(from >= period.start);

    let after = period.end + SETTLE_SECS;
    let summary = s.reconciler().run(after, far()).await.unwrap();
    assert!(summary.needs_attention());
    assert_eq!((summary.checked, summary.agreed), (3, 2));
    assert_eq!(summary.differences.len(), 1);
    let d = &summary.differences[0];
    assert_eq!(d.account.as_str(), "acct_1");
    assert_eq!(d.period, period);
    assert_eq!(
        (d.figures.recorded, d.figures.reported, d.figures.stripe),
        (11, 11, 22)
    );

    // Still due: the next run alarms again, and reads only that period.
    let next = s.reconciler().run(after + 86_400, far()).await.unwrap();
    assert_eq!((next.checked, next.differences.len()), (1, 1));
    assert_eq!(s.meter.summary_calls(), 4);
}

#[tokio::test]
async fn overage_recorded_but_never_reported_is_a_difference() {
    let (s, period) = Setup::new("reconcile-unreported", 1).await;
    // More overage lands on the account after the reporter's last run (say it stopped).
    let usage = UsageHandler::new(
        DynamoDbUsageStore::new(s.client.clone(), &s.table),
        Catalog::embedded().unwrap(),
    );
    usage
        .handle(&json!({"action":"track","account_id":"acct_0","request_id":"late","model":"unlisted-model","input_tokens":5,"output_tokens":0}), NOW + 10)
        .await
        .unwrap();
    let summary = s
        .reconciler()
        .run(period.end + SETTLE_SECS, far())
        .await
        .unwrap();
    assert_eq!(summary.differences.len(), 1);
    let f = summary.differences[0].figures;
    assert_eq!((f.recorded, f.reported, f.stripe), (15, 10, 10));
}

#[tokio::test]
async fn a_summary_stripe_refuses_is_flagged_and_the_other_periods_are_still_compared() {
    let (s, period) = Setup::new("reconcile-refused", 3).await;
    s.meter.fail_next(
        1,
        shared::stripe::meter::MeterError::Rejected("404: No such customer".into()),
    );
    let summary = s
        .reconciler()
        .run(period.end + SETTLE_SECS, far())
        .await
        .unwrap();
    assert_eq!(
        (summary.refused, summary.checked, summary.agreed),
        (1, 2, 2)
    );
    assert!(summary.needs_attention());
    // The refused one stays due; the next run compares it.
    assert_eq!(s.store().reconcile_due().await.unwrap().len(), 1);
    let next = s
        .reconciler()
        .run(period.end + SETTLE_SECS + 86_400, far())
        .await
        .unwrap();
    assert_eq!((next.refused, next.agreed), (0, 1));
}

#[tokio::test]
async fn figures_read_before_the_reporter_moved_the_report_are_not_recorded() {
    let (s, period) = Setup::new("reconcile-stale", 1).await;
    let account = shared::ids::AccountId::parse("acct_0").unwrap();
    let stale = shared::metering::PeriodFigures {
        recorded: 10,
        reported: 9,
        in_flight: false,
        stripe: 9,
    };
    let written = s
        .store()
        .mark_reconciled(
            &account,
            period.start,
            &stale,
            false,
            period.end + SETTLE_SECS,
        )
        .await
        .unwrap();
    assert!(!written, "the report's confirmed total is 10, not 9");
    assert_eq!(s.store().reconcile_due().await.unwrap().len(), 1);
}

/// The prices as `make stripe-setup` leaves them in Stripe, with `edit` applied to one.
fn stripe_prices(catalog: &Catalog, meter: &str) -> Vec<shared::catalog::StripePriceFacts> {
    catalog
        .price_definitions()
        .map(|d| shared::catalog::StripePriceFacts {
            id: format!("price_{}", d.lookup_key),
            lookup_key: d.lookup_key.clone(),
            active: true,
            currency: catalog.currency.clone(),
            kind: Some(d.kind),
            unit_amount: d.unit_amount,
            divide_by: d.divide_by,
            tiers_mode: d.tiers_mode.clone(),
            meter: (d.kind == shared::catalog::PriceKind::Metered).then(|| meter.to_owned()),
        })
        .collect()
}

#[tokio::test]
async fn the_daily_check_finds_a_pack_sold_below_its_grant_and_overage_on_another_meter() {
    let (s, _) = Setup::new("reconcile-catalog", 1).await;
    let catalog = Catalog::embedded().unwrap();
    let r = s.reconciler();
    // The fake's meter is `mtr_fake`: agreeing prices give nothing to report.
    s.meter.set_prices(stripe_prices(&catalog, "mtr_fake"));
    assert_eq!(r.check_catalog(&catalog, far()).await.unwrap(), vec![]);

    let mut prices = stripe_prices(&catalog, "mtr_fake");
    for p in &mut prices {
        match p.lookup_key.as_str() {
            "credits_1m" => p.unit_amount = Some(500),
            "enterprise_overage_volume" => p.meter = Some("mtr_retired".into()),
            _ => {}
        }
    }
    s.meter.set_prices(prices);
    let found: Vec<String> = r
        .check_catalog(&catalog, far())
        .await
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0].contains("`credits_1m`") && found[0].contains("unit_amount Some(500)"),
        "{found:?}"
    );
    assert!(
        found[1].contains("`enterprise_overage_volume`") && found[1].contains("mtr_retired"),
        "{found:?}"
    );
}
