//! The usage function over DynamoDB Local, through the real SDK: concurrent callers on several
//! handler instances (each with its own memory of accounts, as Lambda instances have), exact
//! totals, and round trips counted exactly.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};
use shared::catalog::Catalog;
use shared::store::DynamoDbUsageStore;
use shared::store::usage::UsageStore;
use usage::handler::UsageHandler;

mod support;
use support::run_all;

const NOW: i64 = 1_767_225_600 + 3_600;

type Handler = UsageHandler<Arc<DynamoDbUsageStore>>;

struct Table {
    client: aws_sdk_dynamodb::Client,
    name: String,
    store: Arc<DynamoDbUsageStore>,
    calls: testkit::CountRequests,
}

async fn table(test: &str) -> Table {
    let calls = testkit::CountRequests::default();
    let client = calls.client().await;
    let name = testkit::billing_table(&client, test).await;
    calls.take();
    Table {
        store: Arc::new(DynamoDbUsageStore::new(client.clone(), &name)),
        client,
        name,
        calls,
    }
}

impl Table {
    /// `n` instances of the function over this table.
    fn instances(&self, n: usize) -> Vec<Arc<Handler>> {
        (0..n)
            .map(|_| {
                Arc::new(UsageHandler::new(
                    self.store.clone(),
                    Catalog::embedded().unwrap(),
                ))
            })
            .collect()
    }

    /// The account as the processor leaves it: a plan, its allowance, and credits.
    async fn account(&self, account: &str, plan: &str, included: u64, credits: u64) {
        testkit::put_account(
            &self.client,
            &self.name,
            account,
            plan,
            included,
            vec![("credits", AttributeValue::N(credits.to_string()))],
        )
        .await;
        self.calls.take();
    }

    /// Every usage record of the account (a scan: fine for a private test table).
    async fn records(&self, account: &str) -> Vec<HashMap<String, AttributeValue>> {
        let prefix = format!("USAGE#{account}#");
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.name)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap();
            out.extend(
                page.items()
                    .iter()
                    .filter(|i| i["pk"].as_s().is_ok_and(|pk| pk.starts_with(&prefix)))
                    .cloned(),
            );
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                break;
            }
        }
        self.calls.take();
        out
    }
}

fn num(item: &HashMap<String, AttributeValue>, k: &str) -> u64 {
    item[k].as_n().unwrap().parse().unwrap()
}

fn track(account: &str, request: &str, units: u64) -> Value {
    json!({"action":"track","account_id":account,"request_id":request,"model":"unlisted-model","input_tokens":units,"output_tokens":0})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn a_hundred_concurrent_tracks_against_ten_units_cover_exactly_ten() {
    let t = table("usage-hundred").await;
    t.account("acct_hot", "free", 10, 0).await;
    let instances = t.instances(8);
    let calls = (0..100)
        .map(|i| {
            (
                instances[i % 8].clone(),
                track("acct_hot", &format!("req_{i}"), 1),
                NOW,
            )
        })
        .collect();
    let answers = run_all(calls).await;
    let sum = |bucket: &str| {
        answers
            .iter()
            .map(|a| a["covered"][bucket].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(
        (
            sum("included"),
            sum("credits"),
            sum("overage"),
            sum("uncovered")
        ),
        (10, 0, 0, 90)
    );
    assert!(answers.iter().all(|a| a["status"] == "recorded"));

    let balance = instances[0]
        .handle(&json!({"action":"balance","account_id":"acct_hot"}), NOW)
        .await
        .unwrap();
    assert_eq!(
        (
            balance["included_remaining"].as_u64(),
            balance["credits"].as_u64()
        ),
        (Some(0), Some(0))
    );
    assert_eq!(
        (
            balance["uncovered_units"].as_u64(),
            balance["allowed"].as_bool()
        ),
        (Some(90), Some(false))
    );

    // The per-model totals agree with the records, unit for unit.
    let records = t.records("acct_hot").await;
    assert_eq!(records.len(), 100);
    let rec = |k: &str| records.iter().map(|r| num(r, k)).sum::<u64>();
    let totals = t
        .store
        .totals(&shared::ids::AccountId::parse("acct_hot").unwrap())
        .await
        .unwrap();
    assert_eq!(totals.len(), 1);
    let m = &totals[0];
    assert_eq!((m.requests, m.units), (100, rec("units")));
    assert_eq!(
        (m.covered.included, m.covered.uncovered),
        (rec("c_included"), rec("c_uncovered"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn one_request_id_twenty_times_at_once_and_later_is_charged_once() {
    let t = table("usage-duplicates").await;
    t.account("acct_dup", "pro", 1_000, 0).await;
    let instances = t.instances(8);
    let calls = (0..20)
        .map(|i| {
            (
                instances[i % 8].clone(),
                track("acct_dup", "req_same", 7),
                NOW,
            )
        })
        .collect();
    let answers = run_all(calls).await;
    let recorded = answers.iter().filter(|a| a["status"] == "recorded").count();
    assert_eq!(recorded, 1, "{answers:?}");
    for a in &answers {
        assert_eq!(
            (a["units"].as_u64(), a["covered"]["included"].as_u64()),
            (Some(7), Some(7))
        );
    }
    // A day later, on a fresh instance.
    let fresh = &t.instances(1)[0];
    let late = fresh
        .handle(&track("acct_dup", "req_same", 7), NOW + 86_400)
        .await
        .unwrap();
    assert_eq!(late["status"], "duplicate");
    assert_eq!(late["covered"], answers[0]["covered"]);
    let balance = fresh
        .handle(&json!({"action":"balance","account_id":"acct_dup"}), NOW)
        .await
        .unwrap();
    assert_eq!(balance["included_remaining"], 1_000 - 7);
    assert_eq!(t.records("acct_dup").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn fifty_concurrent_reserves_never_hold_more_than_is_available_and_expire() {
    let t = table("usage-reserves").await;
    t.account("acct_res", "free", 60, 40).await;
    let instances = t.instances(8);
    let calls = (0..50)
        .map(|i| {
            let payload = json!({"action":"reserve","account_id":"acct_res","request_id":format!("q{i}"),"model":"unlisted-model","input_tokens":3,"output_tokens":0,"ttl_seconds":30});
            (instances[i % 8].clone(), payload, NOW)
        })
        .collect();
    let answers = run_all(calls).await;
    let reserved = answers.iter().filter(|a| a["status"] == "reserved").count();
    let refused = answers.iter().filter(|a| a["status"] == "refused").count();
    // 100 units available, 3 per hold: 33 fit, and the refusals say why.
    assert_eq!((reserved, refused), (33, 17), "{answers:?}");
    assert!(
        answers
            .iter()
            .filter(|a| a["status"] == "refused")
            .all(|a| a["reason"] == "insufficient_balance")
    );
    let at = |now: i64| {
        let h = instances[0].clone();
        async move {
            h.handle(&json!({"action":"balance","account_id":"acct_res"}), now)
                .await
                .unwrap()
        }
    };
    assert_eq!(at(NOW + 29).await["reserved"], 99);
    let expired = at(NOW + 30).await;
    assert_eq!(
        (
            expired["reserved"].as_u64(),
            expired["included_remaining"].as_u64(),
            expired["credits"].as_u64()
        ),
        (Some(0), Some(60), Some(40))
    );
}

#[tokio::test]
async fn round_trips_are_one_call_each_on_a_warm_instance() {
    let t = table("usage-round-trips").await;
    t.account("acct_rt", "pro", 1_000, 0).await;
    let h = &t.instances(1)[0];
    // A cold instance guesses, and the failed commit brings the account: two calls, no read.
    h.handle(&track("acct_rt", "r0", 1), NOW).await.unwrap();
    assert_eq!(t.calls.take(), ["TransactWriteItems", "TransactWriteItems"]);
    h.handle(&track("acct_rt", "r1", 1), NOW).await.unwrap();
    assert_eq!(t.calls.take(), ["TransactWriteItems"], "track");
    h.handle(&track("acct_rt", "r1", 1), NOW).await.unwrap();
    assert_eq!(t.calls.take(), ["TransactWriteItems"], "duplicate");
    let r = h
        .handle(&json!({"action":"reserve","account_id":"acct_rt","request_id":"q","model":"m","input_tokens":5,"output_tokens":0,"ttl_seconds":60}), NOW)
        .await
        .unwrap();
    assert_eq!(t.calls.take(), ["TransactWriteItems"], "reserve");
    h.handle(
        &json!({"action":"release","account_id":"acct_rt","reservation_id":r["reservation_id"]}),
        NOW,
    )
    .await
    .unwrap();
    assert_eq!(t.calls.take(), ["TransactWriteItems"], "release");
    h.handle(&json!({"action":"check","account_id":"acct_rt","model":"m","input_tokens":5,"output_tokens":0}), NOW).await.unwrap();
    assert_eq!(t.calls.take(), ["GetItem"], "check");
    h.handle(&json!({"action":"balance","account_id":"acct_rt"}), NOW)
        .await
        .unwrap();
    assert_eq!(t.calls.take(), ["GetItem"], "balance");
    // An account never written: the guess is right the first time.
    h.handle(&track("acct_new", "r0", 1), NOW).await.unwrap();
    assert_eq!(t.calls.take(), ["TransactWriteItems"], "new account");
}

/// Credits are spent oldest pack first, so a refund of a pack that usage already spent takes
/// nothing from a newer pack's credits (the processor's clawback, after real usage).
#[tokio::test]
async fn a_refund_of_a_spent_pack_never_takes_a_newer_packs_credits() {
    use shared::billing::Write;
    use shared::ids::StripeEventId;
    use shared::store::{ApplyResult, BillingStore, DynamoDbBillingStore, EventRecord, WriteMode};

    let t = table("usage-refund-spent-pack").await;
    t.account("acct_packs", "free", 0, 0).await;
    let billing = DynamoDbBillingStore::new(t.client.clone(), &t.name);
    let account = shared::ids::AccountId::parse("acct_packs").unwrap();
    let apply = |id: &str, created: i64, write: Write| {
        let record = EventRecord {
            event_id: StripeEventId::parse(id).unwrap(),
            event_type: "test.event".into(),
            created,
            account: Some(account.clone()),
            processed_at: NOW,
        };
        let billing = &billing;
        async move {
            billing
                .apply(&record, "applied", &[write], WriteMode::Newer)
                .await
                .unwrap()
        }
    };
    let grant = |pi: &str| Write::GrantCredits {
        grant_id: pi.into(),
        pack_id: "credits_small".into(),
        credits: 1_000,
        amount_paid: 1_000,
        refunded_before: None,
    };
    assert_eq!(
        apply("evt_pack_a", 10, grant("pi_a")).await,
        ApplyResult::Applied
    );
    assert_eq!(
        apply("evt_pack_b", 20, grant("pi_b")).await,
        ApplyResult::Applied
    );

    let h = &t.instances(1)[0];
    let spent = h
        .handle(&track("acct_packs", "burn", 1_500), NOW)
        .await
        .unwrap();
    assert_eq!(spent["covered"]["credits"], 1_500);

    // Pack A is spent; its full refund is written off, and B's 500 stay.
    let refund = |pi: &str| Write::ClawBack {
        grant_id: pi.into(),
        amount_refunded: 1_000,
    };
    assert_eq!(
        apply("evt_refund_a", 30, refund("pi_a")).await,
        ApplyResult::Applied
    );
    let balance = h
        .handle(&json!({"action":"balance","account_id":"acct_packs"}), NOW)
        .await
        .unwrap();
    assert_eq!(balance["credits"], 500);
    // Pack B's refund takes what is left of it.
    assert_eq!(
        apply("evt_refund_b", 40, refund("pi_b")).await,
        ApplyResult::Applied
    );
    let balance = h
        .handle(&json!({"action":"balance","account_id":"acct_packs"}), NOW)
        .await
        .unwrap();
    assert_eq!(balance["credits"], 0);
}

#[tokio::test]
async fn another_accounts_reservation_cannot_be_released() {
    let t = table("usage-foreign-hold").await;
    let h = &t.instances(1)[0];
    let r = h
        .handle(&json!({"action":"reserve","account_id":"acct_a","request_id":"q","model":"m","input_tokens":1,"output_tokens":0,"ttl_seconds":60}), NOW)
        .await
        .unwrap();
    let e = h
        .handle(
            &json!({"action":"release","account_id":"acct_b","reservation_id":r["reservation_id"]}),
            NOW,
        )
        .await
        .unwrap_err();
    assert_eq!(e.error_type(), "ValidationError");
    let mine = h
        .handle(
            &json!({"action":"release","account_id":"acct_a","reservation_id":r["reservation_id"]}),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(mine["status"], "released");
}
