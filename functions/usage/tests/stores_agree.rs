//! Random interleavings of track, reserve, settle, release, grant, clawback and period rollover,
//! played against the in-memory store and DynamoDB Local (two instances taking turns, so their
//! memories of the account go stale): every answer is the same on both, and the money adds up.
//! Grants and clawbacks on DynamoDB go through the processor's own writes.

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use proptest::prelude::*;
use serde_json::{Value, json};
use shared::billing::Write;
use shared::catalog::Catalog;
use shared::ids::{AccountId, StripeEventId};
use shared::store::usage::StoredTerms;
use shared::store::{
    ApplyResult, BillingStore, DynamoDbBillingStore, DynamoDbUsageStore, EventRecord,
    InMemoryUsageStore,
};
use shared::usage::period::{Period, add_months};
use usage::handler::UsageHandler;

const T0: i64 = 1_767_225_600;

#[derive(Debug, Clone)]
enum Op {
    Track { units: u64, back: i64 },
    Reserve { n: usize, units: u64, ttl: u64 },
    Settle { n: usize, units: u64 },
    Release { n: usize },
    Replay { k: usize },
    Grant { credits: u64 },
    ClawBackNewest,
    Wait { secs: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u64..40, 0i64..200).prop_map(|(units, back)| Op::Track { units, back }),
        2 => (0usize..5, 0u64..40, 1u64..300).prop_map(|(n, units, ttl)| Op::Reserve { n, units, ttl }),
        2 => (0usize..5, 0u64..50).prop_map(|(n, units)| Op::Settle { n, units }),
        1 => (0usize..5).prop_map(|n| Op::Release { n }),
        1 => (0usize..50).prop_map(|k| Op::Replay { k }),
        1 => (1u64..100).prop_map(|credits| Op::Grant { credits }),
        1 => Just(Op::ClawBackNewest),
        2 => prop_oneof![0i64..120, 500_000i64..1_500_000].prop_map(|secs| Op::Wait { secs }),
    ]
}

struct Dynamo {
    client: aws_sdk_dynamodb::Client,
    table: String,
    billing: DynamoDbBillingStore,
    instances: Vec<UsageHandler<Arc<DynamoDbUsageStore>>>,
}

async fn dynamo() -> Dynamo {
    let client = testkit::dynamodb().await;
    let table = testkit::billing_table(&client, "usage-stores-agree").await;
    let store = Arc::new(DynamoDbUsageStore::new(client.clone(), &table));
    Dynamo {
        billing: DynamoDbBillingStore::new(client.clone(), &table),
        instances: (0..2)
            .map(|_| UsageHandler::new(store.clone(), Catalog::embedded().unwrap()))
            .collect(),
        client,
        table,
    }
}

/// What each store answered, as comparable text (an error by its type and message).
fn outcome(r: Result<Value, usage::handler::UsageError>) -> Result<Value, String> {
    r.map_err(|e| format!("{}: {e}", e.error_type()))
}

async fn play(d: &Dynamo, case: usize, included: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let account = format!("acct_{case}");
    let id = AccountId::parse(&account).unwrap();
    // A Stripe event of this account, as the processor records it.
    let event = |event_id: &str, event_type: &str, created: i64| EventRecord {
        event_id: StripeEventId::parse(event_id).unwrap(),
        event_type: event_type.into(),
        created,
        account: Some(id.clone()),
        processed_at: created,
    };
    let period = Period {
        start: T0,
        end: add_months(T0, 1),
    };
    // The processor's subscription on both: pro, with `included` units, this month.
    let memory = Arc::new(InMemoryUsageStore::default());
    memory.set_terms(
        &id,
        StoredTerms {
            plan: Some("pro".into()),
            included_units: Some(included),
            period: Some(period),
            suspended: false,
        },
    );
    testkit::put_account(
        &d.client,
        &d.table,
        &account,
        "pro",
        included,
        vec![
            ("sub_status", AttributeValue::S("active".into())),
            ("period_start", AttributeValue::N(period.start.to_string())),
            ("period_end", AttributeValue::N(period.end.to_string())),
        ],
    )
    .await;
    let mem = UsageHandler::new(memory.clone(), Catalog::embedded().unwrap());

    let mut now = T0 + 60;
    let mut tracks: Vec<(Value, Value)> = Vec::new();
    let mut grants: Vec<(String, u64, bool)> = Vec::new();
    let (mut granted, mut spent, mut clawed) = (0u64, 0u64, 0u64);
    for (step, op) in ops.into_iter().enumerate() {
        let reservation = |n: usize| {
            shared::ids::ReservationId::for_request(
                &id,
                &shared::ids::RequestId::parse(&format!("hold_{n}")).unwrap(),
            )
        };
        let payload = match &op {
            Op::Track { units, back } => Some(
                json!({"action":"track","account_id":account,"request_id":format!("t{step}"),"model":"m","input_tokens":units,"output_tokens":0,"timestamp":now - back}),
            ),
            Op::Reserve { n, units, ttl } => Some(
                json!({"action":"reserve","account_id":account,"request_id":format!("hold_{n}"),"model":"m","input_tokens":units,"output_tokens":0,"ttl_seconds":ttl}),
            ),
            Op::Settle { n, units } => Some(
                json!({"action":"track","account_id":account,"request_id":format!("s{step}"),"model":"m","input_tokens":units,"output_tokens":0,"reservation_id":reservation(*n).as_str()}),
            ),
            Op::Release { n } => Some(
                json!({"action":"release","account_id":account,"reservation_id":reservation(*n).as_str()}),
            ),
            Op::Replay { k } if !tracks.is_empty() => Some(tracks[k % tracks.len()].0.clone()),
            _ => None,
        };
        if let Some(payload) = payload {
            let on_memory = outcome(mem.handle(&payload, now).await);
            let on_dynamodb = outcome(d.instances[step % 2].handle(&payload, now).await);
            prop_assert_eq!(&on_memory, &on_dynamodb, "step {} {:?}", step, op);
            if let Ok(answer) = on_memory {
                match op {
                    Op::Replay { k } => {
                        let first = &tracks[k % tracks.len()].1;
                        prop_assert_eq!(&answer["status"], "duplicate");
                        prop_assert_eq!(&answer["covered"], &first["covered"]);
                        prop_assert_eq!(&answer["balance"], &first["balance"]);
                    }
                    Op::Track { units, .. } | Op::Settle { units, .. }
                        if answer["status"] == "recorded" =>
                    {
                        let c = &answer["covered"];
                        let sum: u64 = ["included", "credits", "overage", "uncovered"]
                            .iter()
                            .map(|b| c[b].as_u64().unwrap())
                            .sum();
                        prop_assert_eq!(sum, units);
                        spent += c["credits"].as_u64().unwrap();
                        tracks.push((payload, answer.clone()));
                    }
                    _ => {}
                }
            }
        }
        match op {
            Op::Grant { credits } => {
                let grant_id = format!("pi_{case}_{step}");
                memory.grant(&id, credits);
                let record = event(
                    &format!("evt_{case}_{step}"),
                    "checkout.session.completed",
                    now + step as i64,
                );
                let write = Write::GrantCredits {
                    grant_id: grant_id.clone(),
                    pack_id: "credits_small".into(),
                    credits,
                    amount_paid: 1000,
                    refunded_before: None,
                };
                let applied = d
                    .billing
                    .apply(
                        &record,
                        "applied",
                        &[write],
                        shared::store::WriteMode::Newer,
                    )
                    .await
                    .unwrap();
                prop_assert_eq!(applied, ApplyResult::Applied);
                grants.push((grant_id, credits, false));
                granted += credits;
            }
            Op::ClawBackNewest => {
                if let Some(g) = grants.iter_mut().rev().find(|g| !g.2) {
                    g.2 = true;
                    clawed += memory.claw_back(&id, g.1);
                    let record = event(
                        &format!("evt_{case}_{step}_refund"),
                        "charge.refunded",
                        now + step as i64,
                    );
                    let write = Write::ClawBack {
                        grant_id: g.0.clone(),
                        amount_refunded: 1000,
                    };
                    d.billing
                        .apply(
                            &record,
                            "applied",
                            &[write],
                            shared::store::WriteMode::Newer,
                        )
                        .await
                        .unwrap();
                }
            }
            Op::Wait { secs } => now += secs,
            _ => {}
        }
        // Balances agree, and credits are what was granted less what usage and refunds took.
        let ask = json!({"action":"balance","account_id":account});
        let b_mem = mem.handle(&ask, now).await.unwrap();
        let b_dyn = d.instances[0].handle(&ask, now).await.unwrap();
        prop_assert_eq!(&b_mem, &b_dyn, "balance after step {}", step);
        prop_assert_eq!(b_mem["credits"].as_u64().unwrap(), granted - spent - clawed);
    }
    Ok(())
}

#[test]
fn memory_and_dynamodb_give_the_same_answers() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let d = rt.block_on(dynamo());
    let case = std::sync::atomic::AtomicUsize::new(0);
    proptest!(ProptestConfig::with_cases(16), |(included in 0u64..120, ops in proptest::collection::vec(op(), 1..30))| {
        let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        rt.block_on(play(&d, case, included, ops))?;
    });
}
