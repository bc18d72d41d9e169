//! The meter reporter's side of the table, on DynamoDB Local: usage with overage marks the
//! account due on a sparse index; claims and confirmations are conditional; the due mark comes
//! off only when nothing arrived since it was read.

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::json;
use shared::catalog::Catalog;
use shared::ids::AccountId;
use shared::metering::{Report, next_report};
use shared::store::metering::MeteringStore;
use shared::store::{DynamoDbMeteringStore, DynamoDbUsageStore};
use usage::handler::UsageHandler;

const NOW: i64 = 1_767_225_600 + 3_600;

#[tokio::test]
async fn overage_is_found_claimed_once_confirmed_once_and_cleared_only_when_nothing_is_new() {
    let client = testkit::dynamodb().await;
    let table = testkit::billing_table(&client, "metering").await;
    for (account, included) in [("acct_over", 10u64), ("acct_within", 1_000)] {
        let customer = AttributeValue::S(format!("cus_{account}"));
        testkit::put_account(
            &client,
            &table,
            account,
            "pro",
            included,
            vec![("customer_id", customer)],
        )
        .await;
    }
    let usage = UsageHandler::new(
        Arc::new(DynamoDbUsageStore::new(client.clone(), &table)),
        Catalog::embedded().unwrap(),
    );
    let track = |account: &str, request: &str, units: u64| json!({"action":"track","account_id":account,"request_id":request,"model":"unlisted-model","input_tokens":units,"output_tokens":0});
    usage
        .handle(&track("acct_over", "r1", 25), NOW)
        .await
        .unwrap();
    usage
        .handle(&track("acct_within", "r1", 25), NOW)
        .await
        .unwrap();

    let store = DynamoDbMeteringStore::new(client.clone(), &table);
    let over = AccountId::parse("acct_over").unwrap();
    assert_eq!(
        store.due_accounts().await.unwrap(),
        vec![over.clone()],
        "only the account with overage"
    );

    let input = store.report_input(&over, NOW - 40 * 86_400).await.unwrap();
    assert_eq!(input.customer_id.as_deref(), Some("cus_acct_over"));
    let [period] = input.periods.as_slice() else {
        panic!("{input:?}")
    };
    assert_eq!(period.overage, 15);
    let Report::Claim(claim) =
        next_report(&over, period.period, &period.state, period.overage, NOW)
    else {
        panic!()
    };
    assert!(
        store
            .claim(&over, period.period, &period.state, &claim)
            .await
            .unwrap()
    );
    // Another run that read the same state loses: one claim per state.
    assert!(
        !store
            .claim(&over, period.period, &period.state, &claim)
            .await
            .unwrap()
    );

    // A crash before confirming: the next run finds the claim and resends it unchanged.
    let again = store.report_input(&over, NOW - 40 * 86_400).await.unwrap();
    let state = &again.periods[0].state;
    assert_eq!(
        next_report(&over, period.period, state, 15, NOW + 60),
        Report::Resend(claim.clone())
    );
    store.confirm(&over, period.period, &claim).await.unwrap();
    store.confirm(&over, period.period, &claim).await.unwrap();
    let after = store.report_input(&over, NOW - 40 * 86_400).await.unwrap();
    assert_eq!(
        (
            after.periods[0].state.confirmed,
            after.periods[0].state.in_flight.clone()
        ),
        (15, None)
    );
    assert_eq!(
        next_report(&over, period.period, &after.periods[0].state, 15, NOW + 60),
        Report::UpToDate
    );

    // Usage after the read keeps the account due; a fresh read lets it go.
    usage
        .handle(&track("acct_over", "r2", 1), NOW)
        .await
        .unwrap();
    assert!(!store.clear_due(&over, &after).await.unwrap());
    let latest = store.report_input(&over, NOW - 40 * 86_400).await.unwrap();
    assert_eq!(latest.periods[0].overage, 16);
    assert!(store.clear_due(&over, &latest).await.unwrap());
    assert!(store.due_accounts().await.unwrap().is_empty());
    // The next overage marks it again.
    usage
        .handle(&track("acct_over", "r3", 1), NOW)
        .await
        .unwrap();
    assert_eq!(store.due_accounts().await.unwrap(), vec![over]);
}
