//! The notifier over DynamoDB Local: entries written by real usage commits are delivered, the
//! delivered mark is conditional, and the DynamoDB calls per notification are counted.

use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use notifier::bus::FakeEventBus;
use notifier::handler::{Notifier, NotifierConfig, Outcome};
use notifier::mail::FakeMailer;
use notifier::stream::StreamEvent;
use serde_json::json;
use shared::catalog::Catalog;
use shared::notifications::{Links, NotificationId};
use shared::store::outbox::MailOutcome;
use shared::store::{DynamoDbOutboxStore, DynamoDbUsageStore};
use usage::handler::UsageHandler;

const NOW: i64 = 1_767_225_600 + 3_600;

/// An account with 1,000 credits from a 1,000-credit top-up, then a 900-unit track: the
/// usage function's commit writes `credits.low` to the outbox. Returns the entry's id.
async fn credits_low(client: &aws_sdk_dynamodb::Client, table: &str, account: &str) -> String {
    testkit::put_account(
        client,
        table,
        account,
        "free",
        0,
        vec![
            ("credits", AttributeValue::N("1000".into())),
            ("last_topup", AttributeValue::N("1000".into())),
            (
                "email",
                AttributeValue::S(format!("billing@{account}.example")),
            ),
        ],
    )
    .await;
    let usage = UsageHandler::new(
        DynamoDbUsageStore::new(client.clone(), table),
        Catalog::embedded().unwrap(),
    );
    let answer = usage
        .handle(
            &json!({"action":"track","account_id":account,"request_id":"req_1","model":"unlisted-model","input_tokens":900,"output_tokens":0}),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(answer["low_balance"], true, "{answer}");
    format!("credits.low:{account}:req_1")
}

fn record(id: &str, seq: &str) -> StreamEvent {
    serde_json::from_value(json!({"Records": [{
        "eventName": "INSERT",
        "dynamodb": {"Keys": {"pk": {"S": format!("OUTBOX#{id}")}, "sk": {"S": "OUTBOX"}}, "SequenceNumber": seq}
    }]}))
    .unwrap()
}

fn config() -> NotifierConfig {
    NotifierConfig {
        links: Links::default(),
        mail_enabled: true,
    }
}

async fn entry(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    id: &str,
) -> std::collections::HashMap<String, AttributeValue> {
    client
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(format!("OUTBOX#{id}")))
        .key("sk", AttributeValue::S("OUTBOX".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .expect("the outbox entry")
}

#[tokio::test]
async fn a_credits_low_entry_from_a_real_commit_is_delivered_in_four_calls_and_marked_once() {
    let counter = testkit::CountRequests::default();
    let client = counter.client().await;
    let table = testkit::billing_table(&client, "notifier-deliver").await;
    let id = credits_low(&client, &table, "acct_n1").await;
    counter.take();

    let n = Notifier::new(
        DynamoDbOutboxStore::new(client.clone(), &table),
        FakeEventBus::default(),
        FakeMailer::default(),
        config(),
    );
    let r = n.handle(record(&id, "1"), NOW).await;
    assert!(r.batch_item_failures.is_empty());
    // Read the entry, record the event as sent, read the address, mark delivered.
    assert_eq!(
        counter.take(),
        ["GetItem", "UpdateItem", "GetItem", "UpdateItem"]
    );

    let events = n.bus().events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].1["id"], id.as_str());
    assert_eq!(events[0].1["credits"], 100);
    assert_eq!(events[0].1["last_topup"], 1000);
    let sent = n.mailer().sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, "billing@acct_n1.example");
    assert!(
        sent[0].1.text.contains("100 credits left"),
        "{}",
        sent[0].1.text
    );

    let item = entry(&client, &table, &id).await;
    assert_eq!(item["status"].as_s().unwrap(), "delivered");
    assert_eq!(item["mail"].as_s().unwrap(), "sent");

    // A redelivered record costs one read and changes nothing.
    counter.take();
    assert!(
        n.handle(record(&id, "1"), NOW)
            .await
            .batch_item_failures
            .is_empty()
    );
    assert_eq!(counter.take(), ["GetItem"]);
    assert_eq!(n.bus().events().len(), 1);
    assert_eq!(n.mailer().sent().len(), 1);
}

#[tokio::test]
async fn failures_are_counted_on_the_entry_and_a_later_attempt_delivers_it() {
    let client = testkit::dynamodb().await;
    let table = testkit::billing_table(&client, "notifier-retry").await;
    let id = credits_low(&client, &table, "acct_n2").await;
    let n = Notifier::new(
        DynamoDbOutboxStore::new(client.clone(), &table),
        FakeEventBus::default(),
        FakeMailer::default(),
        config(),
    );
    *n.bus().fail_next.lock().unwrap() = 1;
    *n.mailer().fail_next.lock().unwrap() = 1;
    assert_eq!(
        n.handle(record(&id, "7"), NOW)
            .await
            .batch_item_failures
            .len(),
        1
    );
    assert_eq!(
        n.handle(record(&id, "7"), NOW)
            .await
            .batch_item_failures
            .len(),
        1
    );
    let item = entry(&client, &table, &id).await;
    assert_eq!(item["attempts"].as_n().unwrap(), "2");
    assert_eq!(item["status"].as_s().unwrap(), "pending");
    assert!(item["last_error"].as_s().unwrap().contains("mail service"));

    assert!(
        n.handle(record(&id, "7"), NOW)
            .await
            .batch_item_failures
            .is_empty()
    );
    assert_eq!(
        n.bus().events().len(),
        1,
        "the event went out once, before the mail failed"
    );
    assert_eq!(n.mailer().sent().len(), 1);
    assert_eq!(
        entry(&client, &table, &id).await["status"].as_s().unwrap(),
        "delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_deliveries_of_one_entry_exactly_one_marks_it_delivered() {
    let client = testkit::dynamodb().await;
    let table = testkit::billing_table(&client, "notifier-race").await;
    let id = credits_low(&client, &table, "acct_n3").await;
    let n = Arc::new(Notifier::new(
        DynamoDbOutboxStore::new(client.clone(), &table),
        FakeEventBus::default(),
        FakeMailer::default(),
        config(),
    ));
    let mut runs = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let n = n.clone();
        let id = NotificationId::parse(&id).unwrap();
        runs.spawn(async move { n.deliver(&id, NOW).await.unwrap() });
    }
    let outcomes = runs.join_all().await;
    let marked = outcomes
        .iter()
        .filter(|o| **o == Outcome::Delivered(MailOutcome::Sent))
        .count();
    assert_eq!(marked, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Delivered(_) | Outcome::AlreadyDelivered))
    );
    // At least once: racing deliveries may each send before one marks; none is lost.
    assert!(!n.mailer().sent().is_empty());
    assert_eq!(
        entry(&client, &table, &id).await["status"].as_s().unwrap(),
        "delivered"
    );
}
