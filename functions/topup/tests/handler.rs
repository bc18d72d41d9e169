//! The top-up function in-process, over the in-memory store and a fake Stripe, fed the
//! `events/topup.json` sample as the stream delivers it.

use std::sync::Arc;

use lambda_runtime::{Context, LambdaEvent};
use shared::ids::AccountId;
use shared::store::InMemoryTopupStore;
use shared::store::topup::{ClaimStatus, TopupStore};
use shared::stripe::topup::{FakeTopupStripe, TopupCallError};
use shared::usage::topup::TopupSettings;
use topup::handler::{FAILED_NOTIFICATION, Summary, Topup};
use topup::stream::StreamEvent;

fn sample() -> StreamEvent {
    let event: StreamEvent =
        serde_json::from_str(include_str!("../../../events/topup.json")).unwrap();
    LambdaEvent::new(event, Context::default()).payload
}

fn account(id: &str) -> AccountId {
    AccountId::parse(id).unwrap()
}

type Function = Topup<Arc<InMemoryTopupStore>, Arc<FakeTopupStripe>>;

fn setup() -> (Function, Arc<InMemoryTopupStore>, Arc<FakeTopupStripe>) {
    let store = Arc::new(InMemoryTopupStore::default());
    store.claim(&account("acct_1"), 1);
    store.claim(&account("acct_2"), 4);
    let stripe = Arc::new(FakeTopupStripe::default());
    (
        Topup::new(store.clone(), stripe.clone(), "usd"),
        store,
        stripe,
    )
}

#[tokio::test]
async fn each_claim_in_the_sample_is_charged_once_even_when_delivered_again() {
    let (topup, store, stripe) = setup();
    let (response, summary) = topup.handle(sample()).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(summary.charged, 2);
    // The stream delivers the batch again: Stripe sees the same keys, the claims are settled.
    let (response, again) = topup.handle(sample()).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(
        again,
        Summary {
            settled_before: 2,
            ..Summary::default()
        }
    );
    assert_eq!(
        stripe.paid(),
        vec![("acct_1".to_owned(), 1), ("acct_2".to_owned(), 4)]
    );
    let state = store.state(&account("acct_1"));
    assert_eq!(state.claims[&1].0, ClaimStatus::Charged);
    // Still in flight: the credits (and the claim's end) come with Stripe's event.
    assert_eq!(state.in_flight, Some(1));
}

#[tokio::test]
async fn a_declined_card_ends_the_claim_disarms_and_notifies_once() {
    let (topup, store, stripe) = setup();
    stripe.decline("pm_1Qsaved0001");
    let (response, summary) = topup.handle(sample()).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!((summary.declined, summary.charged), (1, 1));
    topup.handle(sample()).await;
    let state = store.state(&account("acct_1"));
    assert_eq!(state.claims[&1].0, ClaimStatus::Declined);
    assert_eq!(state.in_flight, None);
    assert_eq!(state.declined_card.as_deref(), Some("pm_1Qsaved0001"));
    assert_eq!(state.outbox.len(), 1);
    assert_eq!(state.outbox[0].name, FAILED_NOTIFICATION);
    assert_eq!(state.outbox[0].id, "credits.topup_failed:acct_1:1");
    // Turning auto top-up on again forgets the declined card.
    store
        .configure(
            &account("acct_1"),
            Some(&TopupSettings {
                threshold: 100_000,
                pack: "credits_small".into(),
                amount: 1_000,
                credits: 1_000_000,
                monthly_cap: 5_000,
            }),
        )
        .await
        .unwrap();
    assert_eq!(store.state(&account("acct_1")).declined_card, None);
}

#[tokio::test]
async fn stripe_unavailable_fails_the_batch_from_that_record_and_a_redelivery_finishes_it() {
    let (topup, store, stripe) = setup();
    *stripe.fail_next.lock().unwrap() = Some(TopupCallError::Retryable("503".into()));
    let (response, summary) = topup.handle(sample()).await;
    assert_eq!(summary, Summary::default());
    assert_eq!(
        response.batch_item_failures[0].item_identifier,
        "111100000000012345678901"
    );
    assert_eq!(
        store.state(&account("acct_1")).claims[&1].0,
        ClaimStatus::Pending
    );
    let (response, summary) = topup.handle(sample()).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(summary.charged, 2);
    assert_eq!(stripe.paid().len(), 2);
}

#[tokio::test]
async fn a_refused_request_is_treated_as_a_decline_so_the_account_is_not_stuck() {
    let (topup, store, stripe) = setup();
    *stripe.fail_next.lock().unwrap() = Some(TopupCallError::Rejected(
        "400 resource_missing: No such PaymentMethod".into(),
    ));
    let (response, summary) = topup.handle(sample()).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(summary.declined, 1);
    let state = store.state(&account("acct_1"));
    assert_eq!(state.in_flight, None);
    assert!(state.claims[&1].1.contains("No such PaymentMethod"));
}

#[tokio::test]
async fn an_unreadable_record_is_passed_not_retried_forever() {
    let (topup, _store, stripe) = setup();
    let event: StreamEvent = serde_json::from_str(
        r#"{"Records":[{"dynamodb":{"SequenceNumber":"1","NewImage":{"account_id":{"S":"acct_1"}}}}]}"#,
    )
    .unwrap();
    let (response, _) = topup.handle(event).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(stripe.calls(), 0);
}
