//! The usage function in-process over the in-memory store, with the events/ sample.

use std::sync::Arc;

use lambda_runtime::{Context, LambdaEvent};
use serde_json::{Value, json};
use shared::catalog::Catalog;
use shared::ids::{AccountId, RequestId};
use shared::store::InMemoryUsageStore;
use shared::store::usage::{StoredTerms, UsageStore};
use shared::usage::period::{Period, add_months};
use usage::handler::{UsageError, UsageHandler};

const NOW: i64 = 1_767_225_600 + 3_600; // 2026-01-01T01:00:00Z

type Store = Arc<InMemoryUsageStore>;

fn handler(store: &Store) -> UsageHandler<Store> {
    UsageHandler::new(store.clone(), Catalog::embedded().unwrap())
}

fn acct(id: &str) -> AccountId {
    AccountId::parse(id).unwrap()
}

/// The pro plan (5,000,000 included, overage) for the month from `start`, set with `included`.
fn pro(store: &Store, account: &str, start: i64, included: u64) {
    store.set_terms(
        &acct(account),
        StoredTerms {
            plan: Some("pro".into()),
            included_units: Some(included),
            period: Some(Period {
                start,
                end: add_months(start, 1),
            }),
            suspended: false,
        },
    );
}

async fn call(h: &UsageHandler<Store>, payload: Value) -> Value {
    let event = LambdaEvent::new(payload, Context::default());
    h.handle(&event.payload, NOW).await.unwrap()
}

async fn error(h: &UsageHandler<Store>, payload: Value) -> UsageError {
    h.handle(&payload, NOW).await.unwrap_err()
}

fn track(account: &str, request: &str, input: u64, output: u64) -> Value {
    json!({"action":"track","account_id":account,"request_id":request,"model":"gpt-4o-mini","input_tokens":input,"output_tokens":output})
}

#[tokio::test]
async fn the_sample_event_is_recorded_on_the_free_plan() {
    let store = Store::default();
    let h = handler(&store);
    let sample: Value = serde_json::from_str(include_str!("../../../events/usage.json")).unwrap();
    let answer = call(&h, sample.clone()).await;
    // gpt-4o: 1000 input × 2 + 200 output × 8.
    assert_eq!(answer["status"], "recorded");
    assert_eq!(answer["units"], 3_600);
    assert_eq!(
        answer["covered"],
        json!({"included":3600,"credits":0,"overage":0,"uncovered":0})
    );
    assert_eq!(answer["allowed"], true);
    assert_eq!(answer["low_balance"], false);
    let b = &answer["balance"];
    assert_eq!(
        (b["plan"].as_str(), b["status"].as_str()),
        (Some("free"), Some("active"))
    );
    assert_eq!(b["included_remaining"], 100_000 - 3_600);
    // The free plan's period is the calendar month.
    assert_eq!(
        (b["period_start"].as_i64(), b["period_end"].as_i64()),
        (Some(1_767_225_600), Some(1_769_904_000))
    );
    let record = store
        .record(&acct("acct_1"), &RequestId::parse("req_1").unwrap())
        .unwrap();
    assert_eq!(
        record.rate_card_version,
        Catalog::embedded().unwrap().rate_card_version()
    );
}

#[tokio::test]
async fn a_duplicate_answers_the_first_figures_and_changes_nothing() {
    let store = Store::default();
    let (a, b) = (handler(&store), handler(&store));
    let first = call(&a, track("acct_1", "req_1", 10, 5)).await;
    call(&a, track("acct_1", "req_2", 1, 0)).await;
    // Another instance, which never saw the account, and the same one again.
    for h in [&b, &a] {
        let again = call(h, track("acct_1", "req_1", 999, 999)).await;
        assert_eq!(again["status"], "duplicate");
        assert_eq!(again["units"], first["units"]);
        assert_eq!(again["covered"], first["covered"]);
        assert_eq!(again["balance"], first["balance"]);
    }
    let balance = call(&b, json!({"action":"balance","account_id":"acct_1"})).await;
    assert_eq!(balance["included_remaining"], 100_000 - 20 - 1);
}

#[tokio::test]
async fn usage_burns_down_allowance_credits_then_overage_and_totals_agree() {
    let store = Store::default();
    let h = handler(&store);
    pro(&store, "acct_1", NOW - 10, 100);
    store.grant(&acct("acct_1"), 50);
    let a = call(&h, track("acct_1", "r1", 120, 0)).await;
    assert_eq!(
        a["covered"],
        json!({"included":100,"credits":20,"overage":0,"uncovered":0})
    );
    let b = call(&h, json!({"action":"track","account_id":"acct_1","request_id":"r2","model":"gpt-4o","input_tokens":20,"output_tokens":0})).await;
    assert_eq!(
        b["covered"],
        json!({"included":0,"credits":30,"overage":10,"uncovered":0})
    );
    assert_eq!(b["balance"]["overage_units"], 10);
    assert_eq!(b["allowed"], true);
    let totals = store.totals(&acct("acct_1")).await.unwrap();
    assert_eq!(totals.len(), 2);
    let units: u64 = totals.iter().map(|t| t.units).sum();
    let covered: u64 = totals.iter().map(|t| t.covered.total()).sum();
    assert_eq!((units, covered), (160, 160));
}

#[tokio::test]
async fn without_overage_uncovered_usage_is_recorded_and_blocks_once() {
    let store = Store::default();
    let h = handler(&store);
    store.set_terms(
        &acct("acct_1"),
        StoredTerms {
            included_units: Some(10),
            ..StoredTerms::default()
        },
    );
    let a = call(&h, track("acct_1", "r1", 12, 0)).await;
    assert_eq!(
        a["covered"],
        json!({"included":10,"credits":0,"overage":0,"uncovered":2})
    );
    assert_eq!(a["allowed"], false);
    assert_eq!(a["balance"]["status"], "blocked");
    let check = call(&h, json!({"action":"check","account_id":"acct_1","model":"x","input_tokens":1,"output_tokens":0})).await;
    assert_eq!(
        (check["allowed"].as_bool(), check["reason"].as_str()),
        (Some(false), Some("insufficient_balance"))
    );
    call(&h, track("acct_1", "r2", 1, 0)).await;
    let names: Vec<_> = store.outbox().iter().map(|n| n.name).collect();
    assert_eq!(
        names.iter().filter(|n| **n == "usage.blocked").count(),
        1,
        "{names:?}"
    );
    assert!(names.contains(&"usage.threshold"));
    store.grant(&acct("acct_1"), 5);
    let after = call(&h, track("acct_1", "r3", 1, 0)).await;
    assert_eq!(after["covered"]["credits"], 1);
    assert_eq!(after["allowed"], true);
}

#[tokio::test]
async fn holds_settle_release_and_expire_with_their_statuses() {
    let store = Store::default();
    let h = handler(&store);
    store.set_terms(
        &acct("acct_1"),
        StoredTerms {
            included_units: Some(100),
            ..StoredTerms::default()
        },
    );
    let reserve = |request: &str, input: u64, ttl: u64| json!({"action":"reserve","account_id":"acct_1","request_id":request,"model":"m","input_tokens":input,"output_tokens":0,"ttl_seconds":ttl});
    let r1 = call(&h, reserve("q1", 60, 30)).await;
    assert_eq!(
        (r1["status"].as_str(), r1["units"].as_u64()),
        (Some("reserved"), Some(60))
    );
    assert_eq!(r1["expires_at"], NOW + 30);
    assert_eq!(r1["balance"]["reserved"], 60);
    let again = call(&h, reserve("q1", 60, 30)).await;
    assert_eq!(
        (again["status"].as_str(), again["reservation_id"].as_str()),
        (Some("duplicate"), r1["reservation_id"].as_str())
    );
    let refused = call(&h, reserve("q2", 41, 30)).await;
    assert_eq!(
        refused,
        json!({"status":"refused","allowed":false,"reason":"insufficient_balance","balance":refused["balance"].clone(),
               "rate":{"model":"default","rate_card":refused["rate"]["rate_card"].clone()}})
    );
    // Settle for less than held.
    let rid = r1["reservation_id"].as_str().unwrap();
    let mut settle = track("acct_1", "q1", 25, 0);
    settle["reservation_id"] = json!(rid);
    let settled = call(&h, settle).await;
    assert_eq!(settled["covered"]["included"], 25);
    assert_eq!(
        (
            settled["balance"]["reserved"].as_u64(),
            settled["balance"]["included_remaining"].as_u64()
        ),
        (Some(0), Some(75))
    );
    let release = |id: &str| json!({"action":"release","account_id":"acct_1","reservation_id":id});
    assert_eq!(call(&h, release(rid)).await["status"], "settled");
    let r3 = call(&h, reserve("q3", 10, 30)).await;
    let r3id = r3["reservation_id"].as_str().unwrap();
    assert_eq!(call(&h, release(r3id)).await["status"], "released");
    assert_eq!(call(&h, release(r3id)).await["status"], "already_released");
    let unknown = "rsv_00000000000000000000000000000000";
    assert_eq!(
        error(&h, release(unknown)).await.error_type(),
        "ValidationError"
    );
}

#[tokio::test]
async fn an_expired_hold_stops_counting_without_a_sweeper() {
    let store = Store::default();
    let h = handler(&store);
    store.set_terms(
        &acct("acct_1"),
        StoredTerms {
            included_units: Some(10),
            ..StoredTerms::default()
        },
    );
    let r = h
        .handle(&json!({"action":"reserve","account_id":"acct_1","request_id":"q","model":"m","input_tokens":10,"output_tokens":0,"ttl_seconds":5}), NOW)
        .await
        .unwrap();
    let b = h
        .handle(&json!({"action":"balance","account_id":"acct_1"}), NOW + 4)
        .await
        .unwrap();
    assert_eq!(
        (b["reserved"].as_u64(), b["allowed"].as_bool()),
        (Some(10), Some(false))
    );
    let b = h
        .handle(&json!({"action":"balance","account_id":"acct_1"}), NOW + 5)
        .await
        .unwrap();
    assert_eq!(
        (b["reserved"].as_u64(), b["allowed"].as_bool()),
        (Some(0), Some(true))
    );
    let released = h
        .handle(
            &json!({"action":"release","account_id":"acct_1","reservation_id":r["reservation_id"]}),
            NOW + 6,
        )
        .await
        .unwrap();
    assert_eq!(released["status"], "expired");
}

#[tokio::test]
async fn a_refusal_is_never_given_from_a_stale_memory() {
    let store = Store::default();
    let h = handler(&store);
    store.set_terms(
        &acct("acct_1"),
        StoredTerms {
            included_units: Some(0),
            ..StoredTerms::default()
        },
    );
    let reserve = json!({"action":"reserve","account_id":"acct_1","request_id":"q","model":"m","input_tokens":5,"output_tokens":0,"ttl_seconds":5});
    assert_eq!(call(&h, reserve.clone()).await["status"], "refused");
    // Credits bought meanwhile (another writer): this instance's memory is stale.
    store.grant(&acct("acct_1"), 5);
    assert_eq!(call(&h, reserve).await["status"], "reserved");
}

#[tokio::test]
async fn suspended_accounts_are_recorded_but_not_allowed() {
    let store = Store::default();
    let h = handler(&store);
    store.set_terms(
        &acct("acct_1"),
        StoredTerms {
            suspended: true,
            ..StoredTerms::default()
        },
    );
    let t = call(&h, track("acct_1", "r1", 5, 0)).await;
    assert_eq!(
        (t["status"].as_str(), t["allowed"].as_bool()),
        (Some("recorded"), Some(false))
    );
    assert_eq!(t["balance"]["status"], "suspended");
    let r = call(&h, json!({"action":"reserve","account_id":"acct_1","request_id":"q","model":"m","input_tokens":1,"output_tokens":0,"ttl_seconds":5})).await;
    assert_eq!(r["reason"], "account_suspended");
}

#[tokio::test]
async fn a_renewal_before_or_after_the_first_use_of_a_period_gives_one_allowance() {
    let end = add_months(NOW - 10, 1);
    for renewal_first in [false, true] {
        let store = Store::default();
        let h = handler(&store);
        pro(&store, "acct_1", NOW - 10, 100);
        h.handle(&track("acct_1", "old", 100, 0), end - 1)
            .await
            .unwrap();
        if renewal_first {
            pro(&store, "acct_1", end, 100);
        }
        let first = h
            .handle(&track("acct_1", "new1", 60, 0), end)
            .await
            .unwrap();
        assert_eq!(
            first["covered"]["included"], 60,
            "usage at period_end belongs to the next period"
        );
        if !renewal_first {
            pro(&store, "acct_1", end, 100);
        }
        let second = h
            .handle(&track("acct_1", "new2", 60, 0), end + 1)
            .await
            .unwrap();
        assert_eq!(
            second["covered"],
            json!({"included":40,"credits":0,"overage":20,"uncovered":0}),
            "renewal first: {renewal_first}"
        );
    }
}

#[tokio::test]
async fn bad_input_is_a_validation_error_naming_the_field_and_writes_nothing() {
    let store = Store::default();
    let h = handler(&store);
    let cases = [
        (
            json!({"action":"track","account_id":"acct_1","request_id":"r","model":"m","input_tokens":-1,"output_tokens":0}),
            "input_tokens",
        ),
        (
            json!({"action":"track","account_id":"acct_1","request_id":"r","model":"m","input_tokens":1,"output_tokens":1_000_000_001u64}),
            "output_tokens",
        ),
        (
            json!({"action":"track","account_id":"acct_1","request_id":"x".repeat(129),"model":"m","input_tokens":1,"output_tokens":1}),
            "request_id",
        ),
        (
            json!({"action":"track","account_id":"acct_1","request_id":"r","model":"m","input_tokens":1,"output_tokens":1,"timestamp":NOW - 40 * 86_400}),
            "timestamp",
        ),
        (
            json!({"action":"track","account_id":"acct_1","request_id":"r","model":"m","input_tokens":1,"output_tokens":1,"extra":1}),
            "extra",
        ),
        (
            json!({"action":"reserve","account_id":"acct_1","request_id":"r","model":"m","input_tokens":1,"output_tokens":1,"ttl_seconds":0}),
            "ttl_seconds",
        ),
        (
            json!({"action":"balance","account_id":"acct 1"}),
            "account_id",
        ),
    ];
    for (payload, field) in cases {
        let e = error(&h, payload).await;
        assert_eq!(e.error_type(), "ValidationError");
        assert!(e.to_string().starts_with(&format!("{field}:")), "{e}");
    }
    assert!(store.records(&acct("acct_1")).is_empty());
    assert_eq!(
        store.load(&acct("acct_1")).await.unwrap().version,
        0,
        "nothing written"
    );
}

#[tokio::test]
async fn another_accounts_reservation_is_not_found() {
    let store = Store::default();
    let h = handler(&store);
    let r = call(&h, json!({"action":"reserve","account_id":"acct_1","request_id":"q","model":"m","input_tokens":1,"output_tokens":0,"ttl_seconds":60})).await;
    let e = error(
        &h,
        json!({"action":"release","account_id":"acct_2","reservation_id":r["reservation_id"]}),
    )
    .await;
    assert_eq!(e.error_type(), "ValidationError");
    let mut settle = track("acct_2", "q", 1, 0);
    settle["reservation_id"] = r["reservation_id"].clone();
    assert_eq!(call(&h, settle).await["status"], "recorded");
    assert_eq!(
        store
            .hold(
                &shared::ids::ReservationId::parse(r["reservation_id"].as_str().unwrap()).unwrap()
            )
            .unwrap()
            .status
            .as_str(),
        "held"
    );
}

/// A table that takes its time: every commit waits `delay` before the memory store answers.
struct SlowStore {
    inner: InMemoryUsageStore,
    delay: std::time::Duration,
}

impl UsageStore for SlowStore {
    type Version = u64;

    fn never_written(&self) -> shared::store::usage::UsageAccount<u64> {
        self.inner.never_written()
    }

    async fn load(
        &self,
        account: &AccountId,
    ) -> Result<shared::store::usage::UsageAccount<u64>, shared::store::StoreError> {
        self.inner.load(account).await
    }

    async fn commit(
        &self,
        account: &AccountId,
        expected: &u64,
        ledger: &shared::usage::ledger::Ledger,
        change: &shared::store::usage::UsageChange,
        notifications: &[shared::store::usage::Notification],
    ) -> Result<shared::store::usage::Committed<u64>, shared::store::StoreError> {
        tokio::time::sleep(self.delay).await;
        self.inner
            .commit(account, expected, ledger, change, notifications)
            .await
    }

    async fn totals(
        &self,
        account: &AccountId,
    ) -> Result<Vec<shared::store::usage::ModelTotals>, shared::store::StoreError> {
        self.inner.totals(account).await
    }
}

/// A commit the table has not answered when the invocation's deadline nears is given up with
/// a retryable error, so the function answers instead of being timed out; the retry with the
/// same request id is then recorded once.
#[tokio::test(start_paused = true)]
async fn a_table_too_slow_for_the_deadline_gives_a_retryable_answer_in_time() {
    let slow = SlowStore {
        inner: InMemoryUsageStore::default(),
        delay: std::time::Duration::from_secs(60),
    };
    let h = UsageHandler::new(slow, Catalog::embedded().unwrap());
    let started = tokio::time::Instant::now();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let err = h
        .handle_before(&track("acct_slow", "r1", 10, 0), NOW, deadline)
        .await
        .unwrap_err();
    assert_eq!(err.error_type(), "RetryableError");
    assert!(err.to_string().contains("same request id"), "{err}");
    // Answered before the deadline, on the paused clock: nothing waited the full minute.
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn the_answer_says_which_rate_priced_the_call_and_an_unlisted_model_gets_the_default() {
    let store = Store::default();
    let h = handler(&store);
    let version = Catalog::embedded().unwrap().rate_card_version().to_owned();
    let listed = call(&h, track("acct_rates", "r1", 10, 10)).await;
    assert_eq!(
        listed["rate"],
        json!({"model": "gpt-4o-mini", "rate_card": version})
    );
    // gpt-4o-mini is 1 in / 2 out; an unlisted model costs the default 1 / 1.
    assert_eq!(listed["units"], 30);
    let unlisted = json!({"action":"track","account_id":"acct_rates","request_id":"r2","model":"brand-new-model","input_tokens":10,"output_tokens":10});
    let answer = call(&h, unlisted).await;
    assert_eq!(
        answer["rate"],
        json!({"model": "default", "rate_card": version})
    );
    assert_eq!(answer["units"], 20);
    let checked = call(&h, json!({"action":"check","account_id":"acct_rates","model":"brand-new-model","input_tokens":1,"output_tokens":0})).await;
    assert_eq!(checked["rate"]["model"], "default");
    // Calls that price nothing say nothing about rates.
    let balance = call(&h, json!({"action":"balance","account_id":"acct_rates"})).await;
    assert!(balance.get("rate").is_none(), "{balance}");
}
