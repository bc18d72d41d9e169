use lambda_runtime::{Context, LambdaEvent};
use shared::notifications::Links;
use shared::store::outbox::{InMemoryOutboxStore, StoredEntry};

use super::*;
use crate::bus::FakeEventBus;
use crate::mail::FakeMailer;

const SAMPLE: &str = include_str!("../../../../events/notifier.json");
const SAMPLE_ID: &str = "credits.low:acct_1:req_42";

fn notifier(mail: bool) -> Notifier<InMemoryOutboxStore, FakeEventBus, FakeMailer> {
    Notifier::new(
        InMemoryOutboxStore::default(),
        FakeEventBus::default(),
        FakeMailer::default(),
        NotifierConfig {
            links: Links {
                billing_page: Some("https://app.example.com/billing".into()),
            },
            mail_enabled: mail,
        },
    )
}

fn stored(name: &str, account: &str, detail: &str) -> StoredEntry {
    StoredEntry {
        name: Some(name.into()),
        account_id: Some(account.into()),
        detail: Some(detail.into()),
        status: Some("pending".into()),
        ..StoredEntry::default()
    }
}

fn sample_event() -> StreamEvent {
    let event: LambdaEvent<StreamEvent> =
        LambdaEvent::new(serde_json::from_str(SAMPLE).unwrap(), Context::default());
    event.payload
}

/// A batch of INSERT records for these ids, with sequence numbers `seq-0`, `seq-1`, …
fn batch(ids: &[&str]) -> StreamEvent {
    let records: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            serde_json::json!({
                "eventName": "INSERT",
                "dynamodb": {
                    "Keys": {"pk": {"S": format!("OUTBOX#{id}")}, "sk": {"S": "OUTBOX"}},
                    "SequenceNumber": format!("seq-{i}"),
                }
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": records })).unwrap()
}

fn failed(r: &BatchResponse) -> Vec<&str> {
    r.batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect()
}

#[tokio::test]
async fn the_sample_record_becomes_one_event_and_one_email_then_is_marked_delivered() {
    let n = notifier(true);
    n.store().put(
        SAMPLE_ID,
        stored(
            "credits.low",
            "acct_1",
            r#"{"account_id":"acct_1","credits":1800,"last_topup":10000}"#,
        ),
    );
    n.store().set_email("acct_1", "billing@customer.example");

    let r = n.handle(sample_event(), 1_764_000_100).await;

    assert!(r.batch_item_failures.is_empty());
    let events = n.bus().events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "credits.low");
    assert_eq!(events[0].1["id"], SAMPLE_ID);
    assert_eq!(events[0].1["credits"], 1800);
    let sent = n.mailer().sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, "billing@customer.example");
    assert!(sent[0].1.text.contains("1,800 credits left"));
    assert!(sent[0].1.html.contains("https://app.example.com/billing"));
    let e = n.store().entry(SAMPLE_ID).unwrap();
    assert_eq!(e.status.as_deref(), Some("delivered"));
    assert_eq!(e.mail.as_deref(), Some("sent"));
}

#[tokio::test]
async fn a_redelivered_record_changes_nothing() {
    let n = notifier(true);
    n.store()
        .put(SAMPLE_ID, stored("credits.low", "acct_1", "{}"));
    n.store().set_email("acct_1", "billing@customer.example");
    for _ in 0..3 {
        let r = n.handle(sample_event(), 1).await;
        assert!(r.batch_item_failures.is_empty());
    }
    assert_eq!(n.bus().events().len(), 1);
    assert_eq!(n.mailer().sent().len(), 1);
    assert_eq!(
        n.deliver(&NotificationId::parse(SAMPLE_ID).unwrap(), 2)
            .await
            .unwrap(),
        Outcome::AlreadyDelivered
    );
}

#[tokio::test]
async fn a_notification_whose_delivery_fails_twice_is_delivered_once_it_can_be() {
    let n = notifier(true);
    n.store().put(
        "usage.blocked:acct_1:r",
        stored("usage.blocked", "acct_1", "{}"),
    );
    n.store().set_email("acct_1", "billing@customer.example");
    *n.bus().fail_next.lock().unwrap() = 1;
    *n.mailer().fail_next.lock().unwrap() = 1;
    let event = || batch(&["usage.blocked:acct_1:r"]);

    // First the bus fails, then (event sent) the mail: each attempt is reported for retry.
    assert_eq!(failed(&n.handle(event(), 1).await), ["seq-0"]);
    assert_eq!(n.bus().events().len(), 0);
    assert_eq!(failed(&n.handle(event(), 2).await), ["seq-0"]);
    assert_eq!(n.bus().events().len(), 1);
    assert_eq!(n.mailer().sent().len(), 0);
    let e = n.store().entry("usage.blocked:acct_1:r").unwrap();
    assert_eq!(
        (e.attempts, e.event_sent, e.status.as_deref()),
        (2, true, Some("pending"))
    );
    assert!(e.last_error.unwrap().contains("mail service"));

    // The third attempt delivers the email, and the event is not put a second time.
    assert!(n.handle(event(), 3).await.batch_item_failures.is_empty());
    assert_eq!(n.bus().events().len(), 1);
    assert_eq!(n.mailer().sent().len(), 1);
    assert_eq!(
        n.store()
            .entry("usage.blocked:acct_1:r")
            .unwrap()
            .status
            .as_deref(),
        Some("delivered")
    );
}

#[tokio::test]
async fn a_batch_with_one_poison_record_reports_only_that_record_and_delivers_the_rest() {
    let n = notifier(true);
    n.store()
        .put("credits.low:a:1", stored("credits.low", "a", "{}"));
    n.store()
        .put("poison", stored("credits.low", "b", "not json"));
    n.store().put(
        "usage.threshold:c:1:80",
        stored("usage.threshold", "c", r#"{"percent":80}"#),
    );
    n.store().set_email("a", "a@customer.example");
    n.store().set_email("c", "c@customer.example");

    let r = n
        .handle(
            batch(&["credits.low:a:1", "poison", "usage.threshold:c:1:80"]),
            1,
        )
        .await;

    assert_eq!(failed(&r), ["seq-1"]);
    assert_eq!(n.bus().events().len(), 2);
    assert_eq!(n.mailer().sent().len(), 2);
    let poison = n.store().entry("poison").unwrap();
    assert_eq!(
        (poison.attempts, poison.status.as_deref()),
        (1, Some("pending"))
    );
    assert!(poison.last_error.unwrap().contains("detail"));

    // Lambda's retry resumes at the poison record: the rest are not delivered twice.
    let r = n
        .handle(batch(&["poison", "usage.threshold:c:1:80"]), 2)
        .await;
    assert_eq!(failed(&r), ["seq-0"]);
    assert_eq!(n.bus().events().len(), 2);
    assert_eq!(n.mailer().sent().len(), 2);
}

#[tokio::test]
async fn without_an_address_or_a_sender_the_event_still_goes_out_and_the_entry_says_why() {
    let n = notifier(true);
    n.store()
        .put("credits.low:x:1", stored("credits.low", "x", "{}"));
    n.handle(batch(&["credits.low:x:1"]), 1).await;
    assert_eq!(n.bus().events().len(), 1);
    assert_eq!(
        n.store().entry("credits.low:x:1").unwrap().mail.as_deref(),
        Some("no_address")
    );

    let quiet = notifier(false);
    quiet
        .store()
        .put("credits.low:x:1", stored("credits.low", "x", "{}"));
    quiet.store().set_email("x", "x@customer.example");
    quiet.handle(batch(&["credits.low:x:1"]), 1).await;
    assert_eq!(quiet.bus().events().len(), 1);
    assert!(quiet.mailer().sent().is_empty());
    assert_eq!(
        quiet
            .store()
            .entry("credits.low:x:1")
            .unwrap()
            .mail
            .as_deref(),
        Some("disabled")
    );
}

#[tokio::test]
async fn an_entry_no_person_reads_is_an_event_only_and_records_that_are_not_entries_are_skipped() {
    let n = notifier(true);
    n.store()
        .put("invoice.synced:a:1", stored("invoice.synced", "a", "{}"));
    n.store().set_email("a", "a@customer.example");
    let mut event = batch(&["invoice.synced:a:1"]);
    event.records.extend(
        serde_json::from_value::<StreamEvent>(serde_json::json!({"Records": [
            {"eventName": "MODIFY", "dynamodb": {"Keys": {"pk": {"S": "ACCOUNT#a"}, "sk": {"S": "ACCOUNT"}}, "SequenceNumber": "9"}}
        ]}))
        .unwrap()
        .records,
    );
    let r = n.handle(event, 1).await;
    assert!(r.batch_item_failures.is_empty());
    assert_eq!(n.bus().events().len(), 1);
    assert!(n.mailer().sent().is_empty());
    assert_eq!(
        n.store()
            .entry("invoice.synced:a:1")
            .unwrap()
            .mail
            .as_deref(),
        Some("not_for_a_person")
    );
}

#[tokio::test]
async fn an_expired_entry_is_nothing_to_deliver() {
    let n = notifier(true);
    let r = n.handle(batch(&["credits.low:gone:1"]), 1).await;
    assert!(r.batch_item_failures.is_empty());
    assert!(n.bus().events().is_empty());
}
