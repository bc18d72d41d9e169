//! The processor over DynamoDB (DynamoDB Local, through the real SDK): concurrency and round
//! trips, counted exactly.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_dynamodb::error::BoxError;

use processor::handler::{Outcome, Processor};
use shared::catalog::Catalog;
use shared::ids::{AccountId, StripeEventId};
use shared::store::{BillingStore, DynamoDbBillingStore};
use shared::stripe::api::FakeStripe;
use support::*;

async fn processor_on_dynamodb(
    test: &str,
) -> (
    Processor<DynamoDbBillingStore, FakeStripe>,
    testkit::CountRequests,
) {
    let sdk = testkit::dynamodb_config().await;
    let plain = aws_sdk_dynamodb::Client::new(&sdk);
    let table = testkit::billing_table(&plain, test).await;
    let counter = testkit::CountRequests::default();
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .interceptor(counter.clone())
            .build(),
    );
    let p = Processor::new(
        DynamoDbBillingStore::new(client, table),
        FakeStripe::new(),
        Catalog::embedded().unwrap(),
    );
    (p, counter)
}

#[tokio::test]
async fn one_transaction_per_applied_event_and_per_duplicate_no_reads() {
    let (p, calls) = processor_on_dynamodb("round-trips").await;
    let created = event(
        "evt_rt1",
        "customer.subscription.created",
        100,
        subscription("sub_1", "active", "price_pro_monthly"),
    );
    assert_eq!(p.apply(&created, NOW).await.unwrap(), Outcome::Applied);
    assert_eq!(calls.take(), ["TransactWriteItems"]);
    assert_eq!(p.apply(&created, NOW).await.unwrap(), Outcome::Duplicate);
    assert_eq!(calls.take(), ["TransactWriteItems"]);

    let paid = event("evt_rt2", "invoice.paid", 100, invoice("in_1", "paid", 1));
    assert_eq!(p.apply(&paid, NOW).await.unwrap(), Outcome::Applied);
    assert_eq!(calls.take(), ["TransactWriteItems"]);

    let grant = event(
        "evt_rt3",
        "checkout.session.completed",
        100,
        credit_checkout("cs_1", "pi_1", true),
    );
    assert_eq!(p.apply(&grant, NOW).await.unwrap(), Outcome::Applied);
    assert_eq!(calls.take(), ["TransactWriteItems"]);

    // A stale event: the transaction is refused, the marker is recorded alone.
    let stale = event(
        "evt_rt4",
        "customer.subscription.updated",
        50,
        subscription("sub_1", "past_due", "price_pro_monthly"),
    );
    assert_eq!(p.apply(&stale, NOW).await.unwrap(), Outcome::Stale);
    // The refused transaction (its old image says why: no read), then the marker with the facts
    // that hold whatever the event's age (the customer's account).
    assert_eq!(calls.take(), ["TransactWriteItems", "TransactWriteItems"]);
    assert_eq!(
        p.store()
            .event_outcome(&StripeEventId::parse("evt_rt4").unwrap())
            .await
            .unwrap()
            .as_deref(),
        Some("stale")
    );
}

/// Turns the next response into a 500 once armed: DynamoDB committed, the answer was lost.
#[derive(Debug, Clone, Default)]
struct LoseNextAnswer(Arc<std::sync::atomic::AtomicBool>);

impl Intercept for LoseNextAnswer {
    fn name(&self) -> &'static str {
        "LoseNextAnswer"
    }

    fn modify_before_deserialization(
        &self,
        context: &mut aws_sdk_dynamodb::config::interceptors::BeforeDeserializationInterceptorContextMut<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if self.0.swap(false, Ordering::SeqCst) {
            *context.response_mut().status_mut() = 500u16.try_into()?;
        }
        Ok(())
    }
}

/// A transaction that commits but whose answer is lost (a 500 on the way back): the SDK retries
/// it with the same `ClientRequestToken`, which DynamoDB answers as the first attempt (for ten
/// minutes); nothing is applied twice. A later redelivery (a new token) finds the marker.
#[tokio::test]
async fn a_commit_whose_answer_is_lost_is_applied_once() {
    let sdk = testkit::dynamodb_config().await;
    let table = testkit::billing_table(&aws_sdk_dynamodb::Client::new(&sdk), "lost-answer").await;
    let lose = LoseNextAnswer::default();
    let counter = testkit::CountRequests::default();
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .interceptor(lose.clone())
            .interceptor(counter.clone())
            .build(),
    );
    let p = Processor::new(
        DynamoDbBillingStore::new(client, table),
        FakeStripe::new(),
        Catalog::embedded().unwrap(),
    );
    let grant = event(
        "evt_lost",
        "checkout.session.completed",
        100,
        credit_checkout("cs_lost", "pi_lost", true),
    );
    lose.0.store(true, Ordering::SeqCst);
    assert_eq!(p.apply(&grant, NOW).await.unwrap(), Outcome::Applied);
    assert_eq!(counter.take(), ["TransactWriteItems", "TransactWriteItems"]);
    assert_eq!(p.apply(&grant, NOW).await.unwrap(), Outcome::Duplicate);
    let account = AccountId::parse(ACCOUNT).unwrap();
    assert_eq!(
        p.store().account(&account).await.unwrap().unwrap().credits,
        1_000_000
    );
    assert_eq!(
        p.store()
            .event_outcome(&StripeEventId::parse("evt_lost").unwrap())
            .await
            .unwrap()
            .as_deref(),
        Some("applied")
    );
}

/// Many rounds of 50 concurrent deliveries of one grant, each round a new payment: exactly one
/// delivery per round applies and the balance is exact. This is the test an emulator without
/// DynamoDB's transaction isolation fails (moto's threaded server granted some payments 2–3 times).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_deliveries_of_one_grant_are_one_effect() {
    const ROUNDS: usize = 8;
    let (p, _) = processor_on_dynamodb("fifty").await;
    let p = Arc::new(p);
    for round in 0..ROUNDS {
        let body = Arc::new(event(
            &format!("evt_fifty_{round}"),
            "checkout.session.completed",
            100,
            credit_checkout(&format!("cs_50_{round}"), &format!("pi_50_{round}"), true),
        ));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let (p, body) = (Arc::clone(&p), Arc::clone(&body));
            tasks.spawn(async move { p.apply(&body, NOW).await });
        }
        let mut applied = 0;
        while let Some(result) = tasks.join_next().await {
            // A transaction conflict may surface as a retryable error after its retries: SQS
            // would redeliver; here the next delivery is a duplicate.
            if let Ok(Outcome::Applied) = result.unwrap() {
                applied += 1;
            }
        }
        assert_eq!(applied, 1, "round {round}");
        assert_eq!(p.apply(&body, NOW).await.unwrap(), Outcome::Duplicate);
        let account = AccountId::parse(ACCOUNT).unwrap();
        assert_eq!(
            p.store().account(&account).await.unwrap().unwrap().credits,
            1_000_000 * (round as u64 + 1),
            "round {round}"
        );
    }
}
