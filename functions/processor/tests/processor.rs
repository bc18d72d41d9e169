//! The processor in-process, over the in-memory store and a fake Stripe.

mod support;

use std::sync::Arc;

use lambda_runtime::{Context, LambdaEvent};
use processor::handler::Outcome;
use proptest::prelude::*;
use serde_json::json;
use shared::ids::{AccountId, StripeEventId};
use shared::store::BillingStore;
use shared::stripe::api::ObjectKind;
use support::*;

fn account() -> AccountId {
    AccountId::parse(ACCOUNT).unwrap()
}

#[tokio::test]
async fn the_sample_batch_is_applied() {
    let p = processor();
    let sample: aws_lambda_events::event::sqs::SqsEvent =
        serde_json::from_str(include_str!("../../../events/processor.json")).unwrap();
    let event = LambdaEvent::new(sample, Context::default());
    let response = p.handle_batch(&event.payload, NOW).await;
    assert!(response.batch_item_failures.is_empty());
    let view = p
        .store()
        .account(&AccountId::parse("acct_demo_1").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.plan, "pro");
    assert_eq!(view.subscription.unwrap().status, "active");
}

#[tokio::test]
async fn a_subscription_sets_plan_period_and_allowance_and_deletion_returns_to_free() {
    let p = processor();
    let created = event(
        "evt_1",
        "customer.subscription.created",
        100,
        subscription("sub_1", "active", "price_pro_monthly"),
    );
    assert_eq!(p.apply(&created, NOW).await.unwrap(), Outcome::Applied);
    let view = p.store().account(&account()).await.unwrap().unwrap();
    assert_eq!(
        (view.plan.as_str(), view.included_units),
        ("pro", Some(5_000_000))
    );
    let sub = view.subscription.unwrap();
    assert_eq!((sub.period_start, sub.period_end), (NOW, NOW + 30 * 86_400));
    assert_eq!(
        p.store().customer_account(CUSTOMER).await.unwrap(),
        Some(account())
    );

    let deleted = event(
        "evt_2",
        "customer.subscription.deleted",
        200,
        subscription("sub_1", "canceled", "price_pro_monthly"),
    );
    assert_eq!(p.apply(&deleted, NOW).await.unwrap(), Outcome::Applied);
    let view = p.store().account(&account()).await.unwrap().unwrap();
    assert_eq!(
        (view.plan.as_str(), view.included_units),
        ("free", Some(100_000))
    );

    // A stale update cannot bring the canceled subscription back.
    let stale = event(
        "evt_3",
        "customer.subscription.updated",
        300,
        subscription("sub_1", "active", "price_pro_monthly"),
    );
    assert_eq!(p.apply(&stale, NOW).await.unwrap(), Outcome::Stale);
    assert_eq!(
        p.store().account(&account()).await.unwrap().unwrap().plan,
        "free"
    );
}

#[tokio::test]
async fn invoices_open_and_close_the_dunning_case() {
    let p = processor();
    let failed = |id, t, n| event(id, "invoice.payment_failed", t, invoice("in_1", "open", n));
    assert_eq!(
        p.apply(&failed("evt_f1", 100, 1), NOW).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        p.apply(&failed("evt_f2", 200, 2), NOW).await.unwrap(),
        Outcome::Applied
    );
    let invoices = p.store().invoices(&account()).await.unwrap();
    let case = invoices[0].dunning.clone().unwrap();
    assert_eq!(
        (case.status.as_str(), case.failures, case.first_failed_at),
        ("open", 2, 100)
    );
    assert_eq!(case.next_payment_attempt, Some(NOW + 3 * 86_400));

    let paid = event("evt_p", "invoice.paid", 300, invoice("in_1", "paid", 3));
    assert_eq!(p.apply(&paid, NOW).await.unwrap(), Outcome::Applied);
    // Stripe's late redelivery of an earlier failure does not reopen it.
    assert_eq!(
        p.apply(&failed("evt_f3", 250, 3), NOW).await.unwrap(),
        Outcome::Stale
    );
    let invoice = &p.store().invoices(&account()).await.unwrap()[0];
    assert_eq!(invoice.record.status, "paid");
    assert_eq!(invoice.dunning.as_ref().unwrap().status, "paid");
}

#[tokio::test]
async fn credit_grant_and_refund_are_exact_under_duplication() {
    let p = processor();
    let credits = || async {
        p.store()
            .account(&account())
            .await
            .unwrap()
            .map_or(0, |a| a.credits)
    };
    let completed = event(
        "evt_c1",
        "checkout.session.completed",
        100,
        credit_checkout("cs_1", "pi_1", true),
    );
    let succeeded = event(
        "evt_c2",
        "checkout.session.async_payment_succeeded",
        101,
        credit_checkout("cs_1", "pi_1", true),
    );
    for _ in 0..3 {
        p.apply(&completed, NOW).await.unwrap();
        p.apply(&succeeded, NOW).await.unwrap();
    }
    assert_eq!(
        credits().await,
        1_000_000,
        "one grant per payment, whatever the deliveries"
    );

    let partial = event(
        "evt_r1",
        "charge.refunded",
        200,
        refunded_charge("pi_1", 400),
    );
    let full = event(
        "evt_r2",
        "charge.refunded",
        300,
        refunded_charge("pi_1", 1000),
    );
    for _ in 0..3 {
        p.apply(&partial, NOW).await.unwrap();
    }
    assert_eq!(credits().await, 600_000);
    p.apply(&full, NOW).await.unwrap();
    p.apply(&partial, NOW).await.unwrap();
    assert_eq!(credits().await, 0);
}

#[tokio::test]
async fn an_unpaid_checkout_grants_nothing_until_the_payment_succeeds() {
    let p = processor();
    let unpaid = event(
        "evt_u1",
        "checkout.session.completed",
        100,
        credit_checkout("cs_2", "pi_2", false),
    );
    p.apply(&unpaid, NOW).await.unwrap();
    assert_eq!(
        p.store()
            .account(&account())
            .await
            .unwrap()
            .map_or(0, |a| a.credits),
        0
    );
    let paid = event(
        "evt_u2",
        "checkout.session.async_payment_succeeded",
        200,
        credit_checkout("cs_2", "pi_2", true),
    );
    assert_eq!(p.apply(&paid, NOW).await.unwrap(), Outcome::Applied);
    assert_eq!(
        p.store()
            .account(&account())
            .await
            .unwrap()
            .unwrap()
            .credits,
        1_000_000
    );
}

#[tokio::test]
async fn unhandled_types_and_unknown_customers_are_recorded_and_acknowledged() {
    let p = processor();
    let other = event("evt_o", "product.created", 100, resource("product"));
    assert_eq!(p.apply(&other, NOW).await.unwrap(), Outcome::Recorded);
    assert_eq!(p.apply(&other, NOW).await.unwrap(), Outcome::Duplicate);
    let mut stranger = resource("customer");
    stranger["id"] = json!("cus_Stranger");
    stranger["metadata"] = json!({});
    let e = event("evt_s", "customer.updated", 100, stranger);
    assert_eq!(p.apply(&e, NOW).await.unwrap(), Outcome::NoAccount);
    assert_eq!(
        p.store()
            .event_outcome(&StripeEventId::parse("evt_s").unwrap())
            .await
            .unwrap()
            .as_deref(),
        Some("no_account")
    );
}

#[tokio::test]
async fn a_same_second_tie_is_settled_by_stripes_current_object() {
    let p = processor();
    let a = event(
        "evt_t1",
        "customer.subscription.updated",
        100,
        subscription("sub_1", "active", "price_pro_monthly"),
    );
    let b = event(
        "evt_t2",
        "customer.subscription.updated",
        100,
        subscription("sub_1", "past_due", "price_pro_monthly"),
    );
    // Stripe says the subscription is past due now.
    p.stripe().put_object(
        ObjectKind::Subscription,
        "sub_1",
        subscription("sub_1", "past_due", "price_pro_monthly"),
    );
    assert_eq!(p.apply(&a, NOW).await.unwrap(), Outcome::Applied);
    assert_eq!(p.apply(&b, NOW).await.unwrap(), Outcome::TieResolved);
    assert_eq!(p.stripe().calls(), 1);
    let sub = p
        .store()
        .account(&account())
        .await
        .unwrap()
        .unwrap()
        .subscription
        .unwrap();
    assert_eq!(sub.status, "past_due");

    // The other order ends in the same state.
    let q = processor();
    q.stripe().put_object(
        ObjectKind::Subscription,
        "sub_1",
        subscription("sub_1", "past_due", "price_pro_monthly"),
    );
    q.apply(&b, NOW).await.unwrap();
    q.apply(&a, NOW).await.unwrap();
    assert_eq!(
        q.store()
            .account(&account())
            .await
            .unwrap()
            .unwrap()
            .subscription
            .unwrap()
            .status,
        "past_due"
    );
}

#[tokio::test]
async fn a_poison_message_fails_its_group_only() {
    let p = processor();
    let good_a = event(
        "evt_ga",
        "customer.subscription.created",
        100,
        subscription("sub_1", "active", "price_pro_monthly"),
    );
    let good_b = event("evt_gb", "invoice.paid", 100, invoice("in_9", "paid", 1));
    let batch = batch(vec![
        message("m1", "cus_A", b"{ not json"),
        message("m2", "cus_A", &good_a),
        message("m3", "cus_B", &good_b),
    ]);
    let response = p.handle_batch(&batch, NOW).await;
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    // The poison message and the later message of its group fail, in order; the other group is applied.
    assert_eq!(failed, ["m1", "m2"]);
    assert_eq!(p.store().invoices(&account()).await.unwrap().len(), 1);
    assert!(
        p.store()
            .account(&account())
            .await
            .unwrap()
            .and_then(|a| a.subscription)
            .is_none()
    );
}

#[tokio::test]
async fn a_reference_is_fetched_from_stripe_and_a_failed_fetch_is_retried_without_effect() {
    let p = processor();
    let body = event(
        "evt_big",
        "checkout.session.completed",
        100,
        credit_checkout("cs_3", "pi_3", true),
    );
    p.stripe().put_event("evt_big", body);
    let m = reference_message("m1", "evt_big", "checkout.session.completed");

    p.stripe().set_failing(true);
    let response = p.handle_batch(&batch(vec![m.clone()]), NOW).await;
    assert_eq!(
        response.batch_item_failures.len(),
        1,
        "Stripe down: the message is retried"
    );
    assert_eq!(p.store().account(&account()).await.unwrap(), None);

    p.stripe().set_failing(false);
    assert!(
        p.handle_batch(&batch(vec![m.clone()]), NOW)
            .await
            .batch_item_failures
            .is_empty()
    );
    // The batch response was lost after the write: SQS delivers it again, nothing doubles.
    assert!(
        p.handle_batch(&batch(vec![m]), NOW)
            .await
            .batch_item_failures
            .is_empty()
    );
    assert_eq!(
        p.store()
            .account(&account())
            .await
            .unwrap()
            .unwrap()
            .credits,
        1_000_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_deliveries_are_one_effect() {
    let p = Arc::new(processor());
    let body = Arc::new(event(
        "evt_50",
        "checkout.session.completed",
        100,
        credit_checkout("cs_50", "pi_50", true),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (p, body) = (Arc::clone(&p), Arc::clone(&body));
        tasks.spawn(async move { p.apply(&body, NOW).await.unwrap() });
    }
    let mut applied = 0;
    while let Some(outcome) = tasks.join_next().await {
        if outcome.unwrap() == Outcome::Applied {
            applied += 1;
        }
    }
    assert_eq!(applied, 1);
    assert_eq!(
        p.store()
            .account(&account())
            .await
            .unwrap()
            .unwrap()
            .credits,
        1_000_000
    );
}

/// A subscription's life: created incomplete, activated, upgraded, past due, recovered, canceled.
fn lifecycle() -> Vec<(i64, &'static str, &'static str, &'static str)> {
    vec![
        (
            100,
            "customer.subscription.created",
            "incomplete",
            "price_pro_monthly",
        ),
        (
            110,
            "customer.subscription.updated",
            "active",
            "price_pro_monthly",
        ),
        (
            120,
            "customer.subscription.updated",
            "active",
            "price_enterprise_monthly",
        ),
        (
            130,
            "customer.subscription.updated",
            "past_due",
            "price_enterprise_monthly",
        ),
        (
            140,
            "customer.subscription.updated",
            "active",
            "price_enterprise_monthly",
        ),
        (
            150,
            "customer.subscription.deleted",
            "canceled",
            "price_enterprise_monthly",
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any order, any duplication, any prefix of the life: the account ends in the state of the
    /// latest event delivered.
    #[test]
    fn every_permutation_with_duplicates_leaves_the_latest_state(
        len in 1usize..=6,
        picks in proptest::collection::vec(0usize..6, 0..10),
        seed in any::<u64>(),
    ) {
        let life: Vec<_> = lifecycle().into_iter().take(len).collect();
        let mut deliveries: Vec<usize> = (0..life.len()).collect();
        deliveries.extend(picks.into_iter().filter(|i| *i < life.len()));
        // A deterministic shuffle from the seed.
        let mut state = seed | 1;
        for i in (1..deliveries.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            deliveries.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let p = processor();
        for i in &deliveries {
            let (t, kind, status, price) = life[*i];
            let body = event(&format!("evt_life{i}"), kind, t, subscription("sub_life", status, price));
            rt.block_on(p.apply(&body, NOW)).unwrap();
        }
        let (_, _, status, price) = *life.last().unwrap();
        let view = rt.block_on(p.store().account(&account())).unwrap().unwrap();
        let sub = view.subscription.unwrap();
        prop_assert_eq!(sub.status.as_str(), status);
        let plan = if price == "price_pro_monthly" { "pro" } else { "enterprise" };
        prop_assert_eq!(sub.plan.as_str(), plan);
        let effective = if status == "canceled" || status == "incomplete" { "free" } else { plan };
        prop_assert_eq!(view.plan.as_str(), effective);
    }
}

/// A store whose next `apply` fails as a throttled DynamoDB would (nothing written), or, with
/// `lose_next_answer`, commits and then reports a failure (the answer lost on the way back).
struct FlakyStore {
    inner: shared::store::InMemoryBillingStore,
    fail_next: std::sync::atomic::AtomicBool,
    lose_next_answer: std::sync::atomic::AtomicBool,
}

impl BillingStore for FlakyStore {
    async fn apply(
        &self,
        event: &shared::store::EventRecord,
        outcome: &'static str,
        writes: &[shared::billing::Write],
        mode: shared::store::WriteMode,
    ) -> Result<shared::store::ApplyResult, shared::store::StoreError> {
        if self
            .fail_next
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(shared::store::StoreError::Retryable(anyhow::anyhow!(
                "injected throttling"
            )));
        }
        let result = self.inner.apply(event, outcome, writes, mode).await;
        if self
            .lose_next_answer
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(shared::store::StoreError::Retryable(anyhow::anyhow!(
                "injected: committed, then the answer was lost"
            )));
        }
        result
    }
    async fn customer_account(
        &self,
        c: &str,
    ) -> Result<Option<AccountId>, shared::store::StoreError> {
        self.inner.customer_account(c).await
    }
    async fn event_outcome(
        &self,
        e: &StripeEventId,
    ) -> Result<Option<String>, shared::store::StoreError> {
        self.inner.event_outcome(e).await
    }
    async fn account(
        &self,
        a: &AccountId,
    ) -> Result<Option<shared::store::AccountView>, shared::store::StoreError> {
        self.inner.account(a).await
    }
    async fn invoices(
        &self,
        a: &AccountId,
    ) -> Result<Vec<shared::store::InvoiceView>, shared::store::StoreError> {
        self.inner.invoices(a).await
    }
    async fn park(
        &self,
        e: &shared::store::EventRecord,
        c: &str,
        raw: &[u8],
    ) -> Result<shared::store::ParkResult, shared::store::StoreError> {
        self.inner.park(e, c, raw).await
    }
    async fn parked(
        &self,
        c: &str,
    ) -> Result<Vec<shared::store::ParkedEvent>, shared::store::StoreError> {
        self.inner.parked(c).await
    }
    async fn unpark(&self, c: &str, e: &StripeEventId) -> Result<(), shared::store::StoreError> {
        self.inner.unpark(c, e).await
    }
    async fn link(&self, c: &str, a: &AccountId) -> Result<(), shared::store::StoreError> {
        self.inner.link(c, a).await
    }
    async fn stripe_prices(
        &self,
    ) -> Result<Option<shared::store::StripePrices>, shared::store::StoreError> {
        self.inner.stripe_prices().await
    }
}

#[tokio::test]
async fn a_failure_between_the_stripe_fetch_and_the_write_never_doubles_an_effect() {
    let store = FlakyStore {
        inner: shared::store::InMemoryBillingStore::new(),
        fail_next: std::sync::atomic::AtomicBool::new(true),
        lose_next_answer: std::sync::atomic::AtomicBool::new(false),
    };
    let p = processor::handler::Processor::new(
        store,
        shared::stripe::api::FakeStripe::new(),
        shared::catalog::Catalog::embedded().unwrap(),
    );
    p.stripe().put_event(
        "evt_flaky",
        event(
            "evt_flaky",
            "checkout.session.completed",
            100,
            credit_checkout("cs_f", "pi_f", true),
        ),
    );
    let m = reference_message("m1", "evt_flaky", "checkout.session.completed");

    // Fetched from Stripe, then the write fails: the message is reported failed, nothing written.
    assert_eq!(
        p.handle_batch(&batch(vec![m.clone()]), NOW)
            .await
            .batch_item_failures
            .len(),
        1
    );
    assert_eq!(p.stripe().calls(), 1);
    assert_eq!(p.store().account(&account()).await.unwrap(), None);
    // SQS redelivers it: fetched again, applied once; a further redelivery is a duplicate.
    assert!(
        p.handle_batch(&batch(vec![m.clone()]), NOW)
            .await
            .batch_item_failures
            .is_empty()
    );
    assert!(
        p.handle_batch(&batch(vec![m]), NOW)
            .await
            .batch_item_failures
            .is_empty()
    );
    assert_eq!(
        p.store()
            .account(&account())
            .await
            .unwrap()
            .unwrap()
            .credits,
        1_000_000
    );
}

/// The write commits but its answer is lost (the processor sees a failure, SQS redelivers): the
/// redelivery is a duplicate and the grant happened once.
#[tokio::test]
async fn a_commit_whose_answer_is_lost_is_a_duplicate_when_retried() {
    let store = FlakyStore {
        inner: shared::store::InMemoryBillingStore::new(),
        fail_next: std::sync::atomic::AtomicBool::new(false),
        lose_next_answer: std::sync::atomic::AtomicBool::new(true),
    };
    let p = processor::handler::Processor::new(
        store,
        shared::stripe::api::FakeStripe::new(),
        shared::catalog::Catalog::embedded().unwrap(),
    );
    let body = event(
        "evt_lost",
        "checkout.session.completed",
        100,
        credit_checkout("cs_l", "pi_l", true),
    );
    let m = message("m1", CUSTOMER, &body);
    let failed = p.handle_batch(&batch(vec![m.clone()]), NOW).await;
    assert_eq!(failed.batch_item_failures.len(), 1);
    assert_eq!(p.apply(&body, NOW).await.unwrap(), Outcome::Duplicate);
    let credits = p
        .store()
        .account(&account())
        .await
        .unwrap()
        .unwrap()
        .credits;
    assert_eq!(credits, 1_000_000);
}

/// A same-second `payment_failed` and `marked_uncollectible` (or `paid`): whichever is applied
/// first, the tie is settled by the invoice Stripe returns, and the case ends as that invoice
/// says, never left open by the type of the event that lost the tie.
#[tokio::test]
async fn a_dunning_tie_ends_as_the_fetched_invoice_says_in_either_order() {
    for (closing_type, status) in [
        ("invoice.marked_uncollectible", "uncollectible"),
        ("invoice.paid", "paid"),
    ] {
        let failed = event(
            "evt_tf",
            "invoice.payment_failed",
            100,
            invoice("in_1", "open", 1),
        );
        let closed = event("evt_tc", closing_type, 100, invoice("in_1", status, 1));
        for order in [[&failed, &closed], [&closed, &failed]] {
            let p = processor();
            p.stripe()
                .put_object(ObjectKind::Invoice, "in_1", invoice("in_1", status, 1));
            for e in order {
                p.apply(e, NOW).await.unwrap();
            }
            let invoice = &p.store().invoices(&account()).await.unwrap()[0];
            assert_eq!(invoice.record.status, status, "{closing_type}");
            // Closed when a failure had opened it, never opened when the closing came first:
            // in no order does a case stay open on a settled invoice.
            let case = invoice.dunning.as_ref().map(|d| d.status.as_str());
            assert!(
                case.is_none() || case == Some(status),
                "{closing_type}: case {case:?}"
            );
        }
    }
}

/// A tie on an invoice Stripe no longer has (a deleted draft): the event is stale, recorded and
/// acknowledged, not dead-lettered as poison.
#[tokio::test]
async fn a_tie_on_a_deleted_invoice_is_stale_not_poison() {
    let p = processor();
    let created = event(
        "evt_d1",
        "invoice.created",
        100,
        invoice("in_draft", "draft", 0),
    );
    let finalized = event(
        "evt_d2",
        "invoice.finalized",
        100,
        invoice("in_draft", "open", 0),
    );
    assert_eq!(p.apply(&created, NOW).await.unwrap(), Outcome::Applied);
    // FakeStripe has no `in_draft`: the tie's fetch is a 404.
    let response = p
        .handle_batch(&batch(vec![message("m1", CUSTOMER, &finalized)]), NOW)
        .await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(p.stripe().calls(), 1);
    let id = StripeEventId::parse("evt_d2").unwrap();
    assert_eq!(
        p.store().event_outcome(&id).await.unwrap().as_deref(),
        Some("stale")
    );
}

/// An enterprise deal: a price created in Stripe for one customer, whose metadata names the
/// catalog plan and the allowance, works the moment its subscription event arrives. A change
/// of price mid-period applies from the event that makes it; an older event cannot undo it.
#[tokio::test]
async fn a_deal_price_sets_its_allowance_from_the_event_that_brings_it() {
    let p = processor();
    let allowance = async || {
        let view = p.store().account(&account()).await.unwrap().unwrap();
        (view.plan, view.included_units)
    };
    let first = deal_subscription("sub_d", "price_acme_v1", "enterprise", "80000000");
    let e = event(
        "evt_d1",
        "customer.subscription.created",
        100,
        first.clone(),
    );
    assert_eq!(p.apply(&e, NOW).await.unwrap(), Outcome::Applied);
    assert_eq!(allowance().await, ("enterprise".into(), Some(80_000_000)));

    // Sales move the customer to a new price with a larger allowance.
    let second = deal_subscription("sub_d", "price_acme_v2", "enterprise", "120000000");
    let e = event("evt_d2", "customer.subscription.updated", 200, second);
    assert_eq!(p.apply(&e, NOW).await.unwrap(), Outcome::Applied);
    assert_eq!(allowance().await, ("enterprise".into(), Some(120_000_000)));

    // A late delivery of an update from before the change does not take it back.
    let late = event("evt_d3", "customer.subscription.updated", 150, first);
    assert_eq!(p.apply(&late, NOW).await.unwrap(), Outcome::Stale);
    assert_eq!(allowance().await, ("enterprise".into(), Some(120_000_000)));
}

/// A deal price whose metadata does not make sense is never guessed at: the event fails
/// permanently (dead-lettered with the reason) and the account keeps what it had.
#[tokio::test]
async fn an_inconsistent_deal_price_is_dead_lettered_with_its_reason() {
    for (plan, units, reason) in [
        (
            "platinum",
            "5",
            "names plan `platinum`, which is not in the catalog",
        ),
        ("enterprise", "lots", "`included_units` = `lots`"),
        ("free", "5", "names the free plan"),
    ] {
        let p = processor();
        let s = deal_subscription("sub_d", "price_acme", plan, units);
        let e = event("evt_bad", "customer.subscription.created", 100, s);
        let err = p.apply(&e, NOW).await.unwrap_err();
        assert!(err.permanent(), "{plan}/{units}");
        assert!(err.to_string().contains(reason), "{err}");
        assert!(p.store().account(&account()).await.unwrap().is_none());
        let id = StripeEventId::parse("evt_bad").unwrap();
        assert_eq!(p.store().event_outcome(&id).await.unwrap(), None);
    }
}

/// An auto top-up's payment grants its pack once and ends its claim; a payment that is not a
/// top-up's (Checkout's own) grants nothing here; one that paid the wrong amount is
/// dead-lettered with the reason.
#[tokio::test]
async fn a_top_up_payment_grants_its_pack_once_and_ends_its_claim() {
    let p = processor();
    let e = event(
        "evt_t1",
        "payment_intent.succeeded",
        100,
        topup_payment("pi_t1", "3", 1000),
    );
    assert_eq!(p.apply(&e, NOW).await.unwrap(), Outcome::Applied);
    let again = event(
        "evt_t1b",
        "payment_intent.succeeded",
        101,
        topup_payment("pi_t1", "3", 1000),
    );
    p.apply(&again, NOW).await.unwrap();
    let view = p.store().account(&account()).await.unwrap().unwrap();
    assert_eq!(view.credits, 1_000_000);
    assert_eq!(p.store().topups_ended(&account()), vec![3]);

    let mut checkout_payment = topup_payment("pi_checkout", "1", 1000);
    checkout_payment["metadata"] = json!({ "account_id": ACCOUNT, "credit_pack": "credits_small" });
    let e = event("evt_t2", "payment_intent.succeeded", 102, checkout_payment);
    p.apply(&e, NOW).await.unwrap();
    assert_eq!(
        p.store()
            .account(&account())
            .await
            .unwrap()
            .unwrap()
            .credits,
        1_000_000
    );

    for (seq, amount, reason) in [("4", 999, "costs 1000 usd"), ("four", 1000, "`four`")] {
        let e = event(
            "evt_bad",
            "payment_intent.succeeded",
            103,
            topup_payment("pi_bad", seq, amount),
        );
        let err = p.apply(&e, NOW).await.unwrap_err();
        assert!(err.permanent() && err.to_string().contains(reason), "{err}");
    }
    assert_eq!(p.store().topups_ended(&account()), vec![3]);
}

/// A credit pack is granted only when the session paid its price in the catalog's currency;
/// otherwise the event fails permanently (dead-lettered with the reason) and grants nothing.
#[tokio::test]
async fn a_credit_grant_needs_the_packs_price_in_the_catalog_currency() {
    for (field, value) in [
        ("amount_total", json!(1)),
        ("amount_total", json!(null)),
        ("currency", json!("eur")),
    ] {
        let p = processor();
        let mut session = credit_checkout("cs_x", "pi_x", true);
        session[field] = value.clone();
        let e = event("evt_x", "checkout.session.completed", 100, session);
        let err = p.apply(&e, NOW).await.unwrap_err();
        assert!(err.permanent(), "{field}={value}");
        assert!(err.to_string().contains("credits_small"), "{err}");
        let credits = p
            .store()
            .account(&account())
            .await
            .unwrap()
            .map_or(0, |a| a.credits);
        assert_eq!(credits, 0, "{field}={value}");
        let id = StripeEventId::parse("evt_x").unwrap();
        assert_eq!(p.store().event_outcome(&id).await.unwrap(), None);
    }
}

/// Near the invocation's deadline no message is started: each is reported failed for SQS to
/// redeliver, and nothing is written.
#[tokio::test]
async fn no_message_is_started_too_close_to_the_deadline() {
    let p = processor();
    let e = event("evt_late", "invoice.paid", 100, invoice("in_9", "paid", 1));
    let batch = batch(vec![message("m1", "cus_A", &e), message("m2", "cus_B", &e)]);
    let soon = std::time::Instant::now() + std::time::Duration::from_secs(1);
    let response = p.handle_batch_before(&batch, NOW, Some(soon)).await;
    let failed: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["m1", "m2"]);
    assert!(p.store().invoices(&account()).await.unwrap().is_empty());

    let later = std::time::Instant::now() + std::time::Duration::from_secs(600);
    let response = p.handle_batch_before(&batch, NOW, Some(later)).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(p.store().invoices(&account()).await.unwrap().len(), 1);
}

async fn plan_and_subscription(p: &support::TestProcessor) -> (String, Option<String>) {
    let view = p.store().account(&account()).await.unwrap().unwrap();
    (view.plan, view.subscription.map(|s| s.subscription_id))
}

/// `sub_a` active (t=50) fails delivery; `sub_a` deleted (t=60) applies; `sub_b` starts and
/// ends (t=300); then Stripe's retry of the t=50 event arrives. The account stays free.
#[tokio::test]
async fn an_ended_subscription_never_returns_through_another_one() {
    let p = processor();
    let e = |id, t, ty, s, status| event(id, ty, t, subscription(s, status, "price_pro_monthly"));
    let deleted = "customer.subscription.deleted";
    let updated = "customer.subscription.updated";
    assert_eq!(
        p.apply(&e("evt_a60", 60, deleted, "sub_a", "canceled"), NOW)
            .await
            .unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        p.apply(
            &e(
                "evt_b100",
                100,
                "customer.subscription.created",
                "sub_b",
                "active"
            ),
            NOW
        )
        .await
        .unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        plan_and_subscription(&p).await,
        ("pro".into(), Some("sub_b".into()))
    );
    assert_eq!(
        p.apply(&e("evt_b300", 300, deleted, "sub_b", "canceled"), NOW)
            .await
            .unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        p.apply(&e("evt_a50", 50, updated, "sub_a", "active"), NOW)
            .await
            .unwrap(),
        Outcome::Stale
    );
    assert_eq!(
        plan_and_subscription(&p).await,
        ("free".into(), Some("sub_b".into()))
    );
    // A subscription that ends while another is current: its end is still remembered.
    assert_eq!(
        p.apply(
            &e(
                "evt_c400",
                400,
                "customer.subscription.created",
                "sub_c",
                "active"
            ),
            NOW
        )
        .await
        .unwrap(),
        Outcome::Applied
    );
    assert_eq!(
        p.apply(&e("evt_d500", 500, deleted, "sub_d", "canceled"), NOW)
            .await
            .unwrap(),
        Outcome::Stale
    );
    assert_eq!(
        p.apply(&e("evt_d450", 450, updated, "sub_d", "active"), NOW)
            .await
            .unwrap(),
        Outcome::Stale
    );
    assert_eq!(
        plan_and_subscription(&p).await,
        ("pro".into(), Some("sub_c".into()))
    );
}

/// An upgrade whose payment is abandoned (`incomplete`, then `incomplete_expired`) leaves the
/// paying subscription in place; a completed one replaces it.
#[tokio::test]
async fn an_abandoned_upgrade_keeps_the_paid_plan() {
    let p = processor();
    let e = |id, t, ty, s, status, price| event(id, ty, t, subscription(s, status, price));
    let created = "customer.subscription.created";
    p.apply(
        &e(
            "evt_a",
            100,
            created,
            "sub_a",
            "active",
            "price_pro_monthly",
        ),
        NOW,
    )
    .await
    .unwrap();
    assert_eq!(
        p.apply(
            &e(
                "evt_b1",
                200,
                created,
                "sub_b",
                "incomplete",
                "price_enterprise_monthly"
            ),
            NOW
        )
        .await
        .unwrap(),
        Outcome::Stale
    );
    assert_eq!(
        plan_and_subscription(&p).await,
        ("pro".into(), Some("sub_a".into()))
    );
    assert_eq!(
        p.apply(
            &e(
                "evt_b2",
                300,
                "customer.subscription.updated",
                "sub_b",
                "incomplete_expired",
                "price_enterprise_monthly"
            ),
            NOW
        )
        .await
        .unwrap(),
        Outcome::Stale
    );
    assert_eq!(
        plan_and_subscription(&p).await,
        ("pro".into(), Some("sub_a".into()))
    );
    p.apply(
        &e(
            "evt_c",
            400,
            created,
            "sub_c",
            "active",
            "price_enterprise_monthly",
        ),
        NOW,
    )
    .await
    .unwrap();
    assert_eq!(
        plan_and_subscription(&p).await,
        ("enterprise".into(), Some("sub_c".into()))
    );
    p.apply(
        &e(
            "evt_a_end",
            410,
            "customer.subscription.deleted",
            "sub_a",
            "canceled",
            "price_pro_monthly",
        ),
        NOW,
    )
    .await
    .unwrap();
    assert_eq!(
        plan_and_subscription(&p).await,
        ("enterprise".into(), Some("sub_c".into()))
    );
}

/// `charge.refunded` processed before the grant it refunds: the grant adds only what was not
/// refunded, and a later full refund takes the rest.
#[tokio::test]
async fn a_refund_processed_before_its_grant_is_honoured() {
    let p = processor();
    let credits = || async {
        p.store()
            .account(&account())
            .await
            .unwrap()
            .map_or(0, |a| a.credits)
    };
    let refund = |id, t, amount| event(id, "charge.refunded", t, refunded_charge("pi_9", amount));
    assert_eq!(
        p.apply(&refund("evt_r1", 200, 400), NOW).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(credits().await, 0);
    let grant = event(
        "evt_g",
        "checkout.session.completed",
        100,
        credit_checkout("cs_9", "pi_9", true),
    );
    assert_eq!(p.apply(&grant, NOW).await.unwrap(), Outcome::Applied);
    assert_eq!(credits().await, 600_000);
    assert_eq!(p.apply(&grant, NOW).await.unwrap(), Outcome::Duplicate);
    assert_eq!(
        p.apply(&refund("evt_r2", 300, 1000), NOW).await.unwrap(),
        Outcome::Applied
    );
    assert_eq!(credits().await, 0);
}

/// The account names its customer and billing email as soon as Checkout links them, before
/// any `customer.*` event.
#[tokio::test]
async fn a_checkout_names_the_accounts_customer() {
    let p = processor();
    let e = event(
        "evt_k",
        "checkout.session.completed",
        100,
        credit_checkout("cs_k", "pi_k", false),
    );
    assert_eq!(p.apply(&e, NOW).await.unwrap(), Outcome::Applied);
    let view = p
        .store()
        .account(&account())
        .await
        .unwrap()
        .expect("the account exists once linked");
    assert_eq!(view.customer_id.as_deref(), Some(CUSTOMER));
    assert_eq!(view.email.as_deref(), Some("example@example.com"));
    // A subscription event names it too.
    let q = processor();
    q.apply(
        &event(
            "evt_s",
            "customer.subscription.created",
            100,
            subscription("sub_1", "active", "price_pro_monthly"),
        ),
        NOW,
    )
    .await
    .unwrap();
    let view = q.store().account(&account()).await.unwrap().unwrap();
    assert_eq!(view.customer_id.as_deref(), Some(CUSTOMER));
}

/// Events of a customer that arrive before the event naming its account (Checkout creates the
/// customer without our metadata, so `customer.created` comes first) are parked, not lost: the
/// link applies them, and a later delivery of one is a duplicate.
#[tokio::test]
async fn events_before_the_customers_link_are_applied_once_it_is_linked() {
    let p = processor();
    let mut customer = resource("customer");
    customer["id"] = json!(CUSTOMER);
    customer["email"] = json!("ada@example.com");
    customer["name"] = json!("Ada");
    customer["metadata"] = json!({});
    let profile = event("evt_cu", "customer.updated", 90, customer);
    let mut one_off = invoice("in_oneoff", "paid", 1);
    one_off["parent"] = json!(null);
    let paid = event("evt_ip", "invoice.paid", 95, one_off);
    assert_eq!(p.apply(&profile, NOW).await.unwrap(), Outcome::NoAccount);
    assert_eq!(p.apply(&paid, NOW).await.unwrap(), Outcome::NoAccount);
    // A redelivery while still unlinked parks it again (same key): nothing is doubled.
    assert_eq!(p.apply(&paid, NOW).await.unwrap(), Outcome::NoAccount);
    assert_eq!(p.store().account(&account()).await.unwrap(), None);

    let link = event(
        "evt_cs",
        "checkout.session.completed",
        100,
        credit_checkout("cs_l", "pi_l", false),
    );
    assert_eq!(p.apply(&link, NOW).await.unwrap(), Outcome::Applied);
    let view = p.store().account(&account()).await.unwrap().unwrap();
    assert_eq!(view.email.as_deref(), Some("ada@example.com"));
    assert_eq!(view.name.as_deref(), Some("Ada"));
    let invoices = p.store().invoices(&account()).await.unwrap();
    assert_eq!(invoices.len(), 1);
    assert_eq!(invoices[0].record.invoice_id, "in_oneoff");
    for id in ["evt_cu", "evt_ip"] {
        let id = StripeEventId::parse(id).unwrap();
        assert_eq!(
            p.store().event_outcome(&id).await.unwrap().as_deref(),
            Some("applied")
        );
    }
    assert!(p.store().parked(CUSTOMER).await.unwrap().is_empty());
    // Stripe's resend of a parked event, now applied: a duplicate.
    assert_eq!(p.apply(&paid, NOW).await.unwrap(), Outcome::Duplicate);
}
