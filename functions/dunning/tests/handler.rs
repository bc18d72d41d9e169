//! The dunning run in-process, against the in-memory store and a fake Stripe: each step at its
//! boundary and not one scheduled run early, once across overlapping and repeated runs and
//! across a crash between the Stripe call and the write; payment before, during and after each
//! step; the card trap. (The same rules against DynamoDB Local, with truly concurrent runs, are
//! in `dynamodb_local.rs`.)

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use dunning::handler::{Dunning, RunSummary, scheduled_time};
use lambda_runtime::{Context, LambdaEvent};
use shared::billing::dunning::{DunningPolicy, Step, Steps};
use shared::ids::AccountId;
use shared::store::dunning::{Cards, CaseRecord, DunningStore, Recorded, Restriction};
use shared::store::{InMemoryDunningStore, StoreError};
use shared::stripe::dunning::FakeDunningStripe;

const T0: i64 = 1_767_225_600;
const RUN: i64 = 15 * 60;
const DAY: i64 = 86_400;

fn account() -> AccountId {
    AccountId::parse("acct_dunning").unwrap()
}

fn failed(failures: u32, next_payment_attempt: Option<i64>) -> CaseRecord {
    CaseRecord {
        account: account(),
        invoice_id: "in_1".into(),
        subscription_id: Some("sub_1".into()),
        status: "open".into(),
        failures,
        first_failed_at: T0,
        next_payment_attempt,
        taken: Steps::default(),
        cards_tried: BTreeSet::new(),
        amount_remaining: 2_900,
        currency: "usd".into(),
        hosted_invoice_url: Some("https://invoice.stripe.com/i/in_1".into()),
    }
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(600)
}

type Run = Dunning<std::sync::Arc<InMemoryDunningStore>, std::sync::Arc<FakeDunningStripe>>;

fn setup() -> (
    Run,
    std::sync::Arc<InMemoryDunningStore>,
    std::sync::Arc<FakeDunningStripe>,
) {
    let store = std::sync::Arc::new(InMemoryDunningStore::default());
    let stripe = std::sync::Arc::new(FakeDunningStripe::default());
    (
        Dunning::new(store.clone(), stripe.clone(), DunningPolicy::default()),
        store,
        stripe,
    )
}

fn steps(summary: &RunSummary) -> Vec<Step> {
    summary.taken.iter().map(|(_, s)| *s).collect()
}

fn what(stripe: &FakeDunningStripe) -> Vec<(&'static str, Option<String>)> {
    stripe
        .effects()
        .into_iter()
        .map(|c| (c.what, c.card))
        .collect()
}

#[tokio::test]
async fn the_sample_scheduled_event_gives_the_runs_now() {
    let event: LambdaEvent<serde_json::Value> = LambdaEvent::new(
        serde_json::from_str(include_str!("../../../events/dunning.json")).unwrap(),
        Context::default(),
    );
    assert_eq!(scheduled_time(&event.payload), Some(1_795_608_000));
    assert_eq!(scheduled_time(&serde_json::json!({})), None);
}

#[tokio::test]
async fn the_retry_fires_at_its_boundary_and_not_one_scheduled_run_early() {
    let (run, store, stripe) = setup();
    store.fail(failed(1, None));
    let early = run.run(T0 + DAY - RUN, far()).await.unwrap();
    assert_eq!(steps(&early), vec![]);
    assert!(stripe.calls().is_empty());
    let due = run.run(T0 + DAY, far()).await.unwrap();
    assert_eq!(steps(&due), vec![Step::RetryPayment]);
    assert_eq!(what(&stripe), vec![("pay", None)]);
    assert_eq!(stripe.calls()[0].key, "dunning:in_1:retry");
    // The next run takes nothing more.
    let again = run.run(T0 + DAY + RUN, far()).await.unwrap();
    assert_eq!(steps(&again), vec![]);
    assert_eq!(stripe.calls().len(), 1);
}

#[tokio::test]
async fn stripes_own_scheduled_retry_is_followed_instead_of_doubled() {
    let (run, store, stripe) = setup();
    store.fail(failed(1, Some(T0 + 3 * DAY)));
    let summary = run.run(T0 + 2 * DAY, far()).await.unwrap();
    assert_eq!(steps(&summary), vec![]);
    assert!(stripe.calls().is_empty());
}

#[tokio::test]
async fn the_second_failure_emails_the_third_downgrades_and_fourteen_days_suspend() {
    let (run, store, stripe) = setup();
    store.fail(failed(2, Some(T0 + 3 * DAY)));
    let second = run.run(T0 + 3 * DAY, far()).await.unwrap();
    assert_eq!(steps(&second), vec![Step::NotifyPaymentFailed]);
    assert_eq!(
        store.outbox(),
        vec![("payment.failed:in_1".into(), "payment.failed".into())]
    );

    store.fail(failed(3, Some(T0 + 6 * DAY)));
    let third = run.run(T0 + 6 * DAY, far()).await.unwrap();
    assert_eq!(steps(&third), vec![Step::Downgrade]);
    assert!(store.restricted(&account(), Restriction::Downgraded));
    assert!(!store.restricted(&account(), Restriction::Suspended));
    assert_eq!(what(&stripe), vec![("pause", None)]);
    assert_eq!(stripe.calls()[0].key, "dunning:in_1:downgrade");

    let early = run.run(T0 + 14 * DAY - RUN, far()).await.unwrap();
    assert_eq!(steps(&early), vec![]);
    let suspend = run.run(T0 + 14 * DAY, far()).await.unwrap();
    assert_eq!(steps(&suspend), vec![Step::Suspend]);
    assert!(store.restricted(&account(), Restriction::Suspended));
    let names: Vec<String> = store.outbox().into_iter().map(|(_, n)| n).collect();
    assert_eq!(
        names,
        vec!["payment.failed", "account.downgraded", "account.suspended"]
    );
}

#[tokio::test]
async fn overlapping_and_repeated_runs_take_each_step_once() {
    let (run, store, stripe) = setup();
    store.fail(failed(3, None));
    let now = T0 + 14 * DAY;
    let (a, b) = tokio::join!(run.run(now, far()), run.run(now, far()));
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut all = steps(&a);
    all.extend(steps(&b));
    all.sort();
    assert_eq!(
        all,
        vec![Step::NotifyPaymentFailed, Step::Downgrade, Step::Suspend]
    );
    run.run(now + RUN, far()).await.unwrap();
    assert_eq!(store.outbox().len(), 3);
    // Both runs may call Stripe; the key makes it one pause.
    assert_eq!(what(&stripe), vec![("pause", None)]);
}

#[tokio::test]
async fn a_crash_between_the_stripe_call_and_the_write_neither_pays_nor_emails_twice() {
    let (run, store, stripe) = setup();
    store.fail(failed(1, None));
    store.fail_records(1);
    let crashed = run.run(T0 + DAY, far()).await.unwrap();
    assert_eq!(crashed.left, 1);
    assert_eq!(steps(&crashed), vec![]);
    let again = run.run(T0 + DAY + RUN, far()).await.unwrap();
    assert_eq!(steps(&again), vec![Step::RetryPayment]);
    // Two calls, one key: Stripe paid (or declined) once.
    assert_eq!(stripe.calls().len(), 2);
    assert_eq!(stripe.effects().len(), 1);

    store.fail(failed(2, None));
    store.fail_records(1);
    run.run(T0 + 2 * DAY, far()).await.unwrap();
    run.run(T0 + 2 * DAY + RUN, far()).await.unwrap();
    run.run(T0 + 2 * DAY + 2 * RUN, far()).await.unwrap();
    assert_eq!(
        store.outbox(),
        vec![("payment.failed:in_1".into(), "payment.failed".into())]
    );
}

#[tokio::test]
async fn payment_before_the_first_step_takes_nothing_and_closes_the_case() {
    let (run, store, stripe) = setup();
    store.fail(failed(3, None));
    store.close(&account(), "in_1", "paid");
    let summary = run.run(T0 + 14 * DAY, far()).await.unwrap();
    assert_eq!(steps(&summary), vec![]);
    assert_eq!(summary.settled, 1);
    // Three failures: a downgrade was due, so collection is resumed for certain.
    assert_eq!(what(&stripe), vec![("resume", None)]);
    assert!(store.outbox().is_empty());
    assert!(
        !store.case(&account(), "in_1").unwrap().1,
        "out of the index"
    );
    let next = run.run(T0 + 14 * DAY + RUN, far()).await.unwrap();
    assert_eq!(next.cases, 0);
}

/// A store that lets the invoice be paid between a step's Stripe call and its write.
struct PaidDuring {
    inner: std::sync::Arc<InMemoryDunningStore>,
    at: Step,
}

impl DunningStore for PaidDuring {
    async fn cases(&self) -> Result<Vec<CaseRecord>, StoreError> {
        self.inner.cases().await
    }
    async fn cards(&self, account: &AccountId) -> Result<Cards, StoreError> {
        self.inner.cards(account).await
    }
    async fn record_step(
        &self,
        case: &CaseRecord,
        step: Step,
        now: i64,
    ) -> Result<Recorded, StoreError> {
        if step == self.at {
            self.inner.close(&case.account, &case.invoice_id, "paid");
        }
        self.inner.record_step(case, step, now).await
    }
    async fn record_card(&self, case: &CaseRecord, card: &str) -> Result<Recorded, StoreError> {
        self.inner.record_card(case, card).await
    }
    async fn settle(&self, case: &CaseRecord) -> Result<bool, StoreError> {
        self.inner.settle(case).await
    }
}

#[tokio::test]
async fn payment_during_a_step_leaves_it_unrecorded_and_undoes_its_stripe_call() {
    for at in [Step::NotifyPaymentFailed, Step::Downgrade, Step::Suspend] {
        let inner = std::sync::Arc::new(InMemoryDunningStore::default());
        let stripe = std::sync::Arc::new(FakeDunningStripe::default());
        let run = Dunning::new(
            PaidDuring {
                inner: inner.clone(),
                at,
            },
            stripe.clone(),
            DunningPolicy::default(),
        );
        inner.fail(failed(3, None));
        let summary = run.run(T0 + 14 * DAY, far()).await.unwrap();
        assert!(!steps(&summary).contains(&at), "{at:?}: {summary:?}");
        // Whatever was recorded before the payment stays; nothing after it is taken.
        let next = run.run(T0 + 14 * DAY + RUN, far()).await.unwrap();
        assert!(
            !inner.restricted(&account(), Restriction::Suspended),
            "{at:?}"
        );
        assert!(
            !inner.restricted(&account(), Restriction::Downgraded),
            "{at:?}"
        );
        // A pause Stripe may have made is resumed.
        assert!(what(&stripe).contains(&("resume", None)), "{at:?}");
        let (case, indexed) = inner.case(&account(), "in_1").unwrap();
        assert!(!indexed, "{at:?}: settled");
        let reactivated = case.taken.contains(Step::Reactivate);
        assert_eq!(
            reactivated,
            at == Step::Suspend,
            "{at:?}: reactivated only if the case had restricted the account: {next:?}"
        );
    }
}

#[tokio::test]
async fn payment_after_suspension_reactivates_once_and_resumes_the_plan() {
    let (run, store, stripe) = setup();
    store.fail(failed(3, None));
    run.run(T0 + 14 * DAY, far()).await.unwrap();
    assert!(store.restricted(&account(), Restriction::Suspended));
    // The processor applies invoice.paid: restrictions lift at once, the case closes.
    store.close(&account(), "in_1", "paid");
    assert!(!store.restricted(&account(), Restriction::Suspended));
    assert!(!store.restricted(&account(), Restriction::Downgraded));
    let (a, b) = tokio::join!(
        run.run(T0 + 14 * DAY + RUN, far()),
        run.run(T0 + 14 * DAY + RUN, far())
    );
    let mut taken = steps(&a.unwrap());
    taken.extend(steps(&b.unwrap()));
    assert_eq!(taken, vec![Step::Reactivate]);
    let names: Vec<String> = store.outbox().into_iter().map(|(_, n)| n).collect();
    assert_eq!(
        names,
        vec![
            "payment.failed",
            "account.downgraded",
            "account.suspended",
            "account.reactivated"
        ]
    );
    assert_eq!(what(&stripe), vec![("pause", None), ("resume", None)]);
    assert_eq!(run.run(T0 + 15 * DAY, far()).await.unwrap().cases, 0);
}

#[tokio::test]
async fn a_written_off_invoice_ends_the_case_without_lifting_the_suspension() {
    let (run, store, _stripe) = setup();
    store.fail(failed(3, None));
    run.run(T0 + 14 * DAY, far()).await.unwrap();
    store.close(&account(), "in_1", "uncollectible");
    let summary = run.run(T0 + 14 * DAY + RUN, far()).await.unwrap();
    assert_eq!(summary.settled, 1);
    assert!(store.restricted(&account(), Restriction::Suspended));
    assert!(
        !store
            .outbox()
            .iter()
            .any(|(_, n)| n == "account.reactivated")
    );
}

#[tokio::test]
async fn the_card_trap_a_new_default_card_is_charged_next_and_once() {
    let (run, store, stripe) = setup();
    store.fail(failed(2, Some(T0 + 3 * DAY)));
    store.set_cards(
        &account(),
        Cards {
            customer: Some("pm_old".into()),
            subscription: Some("pm_old".into()),
        },
    );
    run.run(T0 + DAY, far()).await.unwrap();
    assert!(
        stripe.calls().is_empty(),
        "the failing card is not retried by us"
    );

    // The customer adds a card in the portal: it becomes the customer's default only.
    store.set_cards(
        &account(),
        Cards {
            customer: Some("pm_new".into()),
            subscription: Some("pm_old".into()),
        },
    );
    let summary = run.run(T0 + DAY + RUN, far()).await.unwrap();
    assert_eq!(summary.paid, 1);
    assert_eq!(
        what(&stripe),
        vec![
            ("card_first", Some("pm_new".into())),
            ("pay", Some("pm_new".into()))
        ]
    );
    // Until the payment's event closes the case, later runs do not charge the card again.
    run.run(T0 + DAY + 2 * RUN, far()).await.unwrap();
    assert_eq!(stripe.effects().len(), 2);
}

#[tokio::test]
async fn a_declined_new_card_is_recorded_and_the_policy_goes_on() {
    let (run, store, stripe) = setup();
    stripe.decline("pm_new");
    store.fail(failed(3, None));
    store.set_cards(
        &account(),
        Cards {
            customer: Some("pm_new".into()),
            subscription: Some("pm_old".into()),
        },
    );
    let summary = run.run(T0 + 6 * DAY, far()).await.unwrap();
    assert_eq!(summary.paid, 0);
    assert_eq!(
        steps(&summary),
        vec![Step::NotifyPaymentFailed, Step::Downgrade]
    );
    let case = store.case(&account(), "in_1").unwrap().0;
    assert!(case.cards_tried.contains("pm_new"));
}

#[tokio::test]
async fn stripe_unreachable_leaves_the_case_for_the_next_run_with_nothing_recorded() {
    let (run, store, stripe) = setup();
    store.fail(failed(3, None));
    stripe.set_failing(true);
    let summary = run.run(T0 + 6 * DAY, far()).await.unwrap();
    // The email needs no Stripe call; the downgrade's pause did not happen, so it waits.
    assert_eq!(steps(&summary), vec![Step::NotifyPaymentFailed]);
    assert_eq!(summary.left, 1);
    assert!(!store.restricted(&account(), Restriction::Downgraded));
    stripe.set_failing(false);
    let next = run.run(T0 + 6 * DAY + RUN, far()).await.unwrap();
    assert_eq!(steps(&next), vec![Step::Downgrade]);
}

#[tokio::test]
async fn a_run_near_its_deadline_starts_no_case() {
    let (run, store, stripe) = setup();
    store.fail(failed(3, None));
    let summary = run
        .run(T0 + 6 * DAY, Instant::now() + Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(summary.left, 1);
    assert!(stripe.calls().is_empty());
    assert!(store.outbox().is_empty());
}
