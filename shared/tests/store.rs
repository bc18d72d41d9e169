//! One suite, two stores: the in-memory store and DynamoDB (the local AWS endpoint, real SDK)
//! must give the same answers to the same writes.

use shared::billing::{
    DunningChange, InvoiceRecord, SubscriptionState, SubscriptionStatus, Verdict, Write,
};
use shared::catalog::Catalog;
use shared::ids::{AccountId, StripeEventId};
use shared::store::{
    ApplyResult, BillingStore, DynamoDbBillingStore, EventRecord, InMemoryBillingStore, WriteMode,
};

fn event(id: &str, created: i64, account: &AccountId) -> EventRecord {
    EventRecord {
        event_id: StripeEventId::parse(id).unwrap(),
        event_type: "test.event".into(),
        created,
        account: Some(account.clone()),
        processed_at: 1_763_942_400,
    }
}

fn sub(id: &str, status: SubscriptionStatus, plan: &str) -> Write {
    let catalog = Catalog::embedded().unwrap();
    let p = catalog.plan(plan).unwrap();
    let effective = if status.grants_plan() {
        p
    } else {
        catalog.free_plan()
    };
    Write::Subscription(SubscriptionState {
        subscription_id: id.into(),
        status,
        plan: p.id.clone(),
        period_start: 1_763_942_400,
        period_end: 1_766_534_400,
        cancel_at_period_end: false,
        effective_plan: effective.id.clone(),
        included_units: effective.included_units,
    })
}

fn invoice(id: &str, status: &str, dunning: DunningChange) -> Write {
    Write::Invoice(
        InvoiceRecord {
            invoice_id: id.into(),
            number: Some("INV-0001".into()),
            status: status.into(),
            amount_due: 4900,
            amount_paid: if status == "paid" { 4900 } else { 0 },
            amount_remaining: if status == "paid" { 0 } else { 4900 },
            currency: "usd".into(),
            hosted_invoice_url: Some("https://invoice.stripe.com/i/test".into()),
            invoice_pdf: None,
            period_start: 1_763_942_400,
            period_end: 1_766_534_400,
            subscription_id: Some("sub_a".into()),
        },
        dunning,
    )
}

async fn subscription_ordering(store: &impl BillingStore, account: &AccountId) {
    use SubscriptionStatus::*;
    let a = account;
    let apply = |id: &'static str, t: i64, w: Write, mode| async move {
        store
            .apply(&event(id, t, a), "applied", &[w], mode)
            .await
            .unwrap()
    };
    assert_eq!(
        apply("evt_s1", 10, sub("sub_a", Active, "pro"), WriteMode::Newer).await,
        ApplyResult::Applied
    );
    assert_eq!(
        apply("evt_s1", 10, sub("sub_a", Active, "pro"), WriteMode::Newer).await,
        ApplyResult::Duplicate
    );
    assert_eq!(
        apply("evt_s2", 9, sub("sub_a", PastDue, "pro"), WriteMode::Newer).await,
        ApplyResult::Conflict {
            index: 0,
            verdict: Verdict::Stale
        }
    );
    assert_eq!(
        apply("evt_s3", 10, sub("sub_a", PastDue, "pro"), WriteMode::Newer).await,
        ApplyResult::Conflict {
            index: 0,
            verdict: Verdict::Tie
        }
    );
    assert_eq!(
        apply(
            "evt_s3",
            10,
            sub("sub_a", PastDue, "pro"),
            WriteMode::TieBreak
        )
        .await,
        ApplyResult::Applied
    );
    let view = store.account(a).await.unwrap().unwrap();
    assert_eq!(
        (
            view.plan.as_str(),
            view.subscription.unwrap().status.as_str()
        ),
        ("pro", "past_due")
    );

    assert_eq!(
        apply(
            "evt_s4",
            11,
            sub("sub_a", Canceled, "pro"),
            WriteMode::Newer
        )
        .await,
        ApplyResult::Applied
    );
    assert_eq!(
        apply("evt_s5", 12, sub("sub_a", Active, "pro"), WriteMode::Newer).await,
        ApplyResult::Conflict {
            index: 0,
            verdict: Verdict::Stale
        },
        "a canceled subscription never comes back"
    );
    let view = store.account(a).await.unwrap().unwrap();
    assert_eq!(view.plan, "free");
    assert_eq!(view.included_units, Some(100_000));

    // Subscribing again: a new live subscription replaces the ended one, even if created earlier.
    assert_eq!(
        apply(
            "evt_s6",
            5,
            sub("sub_b", Active, "enterprise"),
            WriteMode::Newer
        )
        .await,
        ApplyResult::Applied
    );
    assert_eq!(
        apply(
            "evt_s7",
            13,
            sub("sub_a", Canceled, "pro"),
            WriteMode::Newer
        )
        .await,
        ApplyResult::Conflict {
            index: 0,
            verdict: Verdict::Stale
        },
        "ending an old subscription does not end the current one"
    );
    let view = store.account(a).await.unwrap().unwrap();
    assert_eq!(view.plan, "enterprise");
    assert_eq!(
        store
            .event_outcome(&StripeEventId::parse("evt_s6").unwrap())
            .await
            .unwrap()
            .as_deref(),
        Some("applied")
    );
    assert_eq!(
        store
            .event_outcome(&StripeEventId::parse("evt_s2").unwrap())
            .await
            .unwrap(),
        None
    );
}

async fn invoices_and_dunning(store: &impl BillingStore, account: &AccountId) {
    let a = account;
    let apply = |id: &'static str, t: i64, w: Write| async move {
        store
            .apply(&event(id, t, a), "applied", &[w], WriteMode::Newer)
            .await
            .unwrap()
    };
    let failed = |n| DunningChange::Failed {
        attempt_count: n,
        next_payment_attempt: Some(2_000_000_000),
    };
    assert_eq!(
        apply("evt_i1", 10, invoice("in_1", "open", failed(1))).await,
        ApplyResult::Applied
    );
    assert_eq!(
        apply("evt_i2", 20, invoice("in_1", "open", failed(2))).await,
        ApplyResult::Applied
    );
    let inv = &store.invoices(a).await.unwrap()[0];
    let d = inv.dunning.as_ref().unwrap();
    assert_eq!(
        (d.status.as_str(), d.failures, d.first_failed_at),
        ("open", 2, 10)
    );
    assert_eq!(
        apply(
            "evt_i3",
            30,
            invoice("in_1", "paid", DunningChange::Closed { reason: "paid" })
        )
        .await,
        ApplyResult::Applied
    );
    // A late payment_failed from before the payment must not reopen the case.
    assert_eq!(
        apply("evt_i4", 25, invoice("in_1", "open", failed(3))).await,
        ApplyResult::Conflict {
            index: 0,
            verdict: Verdict::Stale
        }
    );
    assert_eq!(
        apply("evt_i5", 5, invoice("in_0", "paid", DunningChange::None)).await,
        ApplyResult::Applied
    );
    let invoices = store.invoices(a).await.unwrap();
    assert_eq!(invoices.len(), 2);
    let in1 = invoices
        .iter()
        .find(|i| i.record.invoice_id == "in_1")
        .unwrap();
    assert_eq!(in1.record.status, "paid");
    let d = in1.dunning.as_ref().unwrap();
    assert_eq!(
        (d.status.as_str(), d.failures, d.next_payment_attempt),
        ("paid", 2, None)
    );
    assert!(
        invoices
            .iter()
            .find(|i| i.record.invoice_id == "in_0")
            .unwrap()
            .dunning
            .is_none()
    );
}

async fn credits_granted_once_and_clawed_back_exactly(
    store: &impl BillingStore,
    account: &AccountId,
) {
    let a = account;
    let apply = |id: &'static str, w: Write| async move {
        store
            .apply(&event(id, 10, a), "applied", &[w], WriteMode::Newer)
            .await
            .unwrap()
    };
    let grant = || Write::GrantCredits {
        grant_id: "pi_1".into(),
        pack_id: "credits_small".into(),
        credits: 1_000_000,
        amount_paid: 1000,
    };
    let credits = || async { store.account(a).await.unwrap().unwrap().credits };
    assert_eq!(apply("evt_c1", grant()).await, ApplyResult::Applied);
    // The same payment seen through another event (async payment succeeded): no second grant.
    assert_eq!(
        apply("evt_c2", grant()).await,
        ApplyResult::Conflict {
            index: 0,
            verdict: Verdict::Stale
        }
    );
    assert_eq!(credits().await, 1_000_000);

    let refund = |total| Write::ClawBack {
        grant_id: "pi_1".into(),
        amount_refunded: total,
    };
    assert_eq!(apply("evt_c3", refund(250)).await, ApplyResult::Applied);
    assert_eq!(credits().await, 750_000);
    // The same running total again (another event id): nothing more is taken.
    assert_eq!(apply("evt_c4", refund(250)).await, ApplyResult::Applied);
    assert_eq!(credits().await, 750_000);
    assert_eq!(apply("evt_c5", refund(1000)).await, ApplyResult::Applied);
    assert_eq!(credits().await, 0);
    // A refund on a charge that bought no credits changes nothing.
    assert_eq!(
        apply(
            "evt_c6",
            Write::ClawBack {
                grant_id: "pi_other".into(),
                amount_refunded: 5
            }
        )
        .await,
        ApplyResult::Applied
    );
}

async fn customers_are_linked(store: &impl BillingStore, account: &AccountId) {
    let w = [
        Write::LinkCustomer {
            customer_id: format!("cus_{account}").replace([':', '.', '-'], "_"),
        },
        Write::CustomerProfile {
            customer_id: "cus_x".into(),
            email: Some("ada@example.com".into()),
            name: Some("Ada".into()),
            deleted: false,
        },
    ];
    assert_eq!(
        store
            .apply(
                &event("evt_u1", 10, account),
                "applied",
                &w,
                WriteMode::Newer
            )
            .await
            .unwrap(),
        ApplyResult::Applied
    );
    let linked = format!("cus_{account}").replace([':', '.', '-'], "_");
    assert_eq!(
        store.customer_account(&linked).await.unwrap().as_ref(),
        Some(account)
    );
    let view = store.account(account).await.unwrap().unwrap();
    assert_eq!(view.email.as_deref(), Some("ada@example.com"));
    assert_eq!(store.customer_account("cus_nobody").await.unwrap(), None);
}

macro_rules! both_stores {
    ($($name:ident),*) => {
        mod in_memory {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(&InMemoryBillingStore::new(), &AccountId::parse("acct_mem").unwrap()).await;
                }
            )*
        }
        mod dynamodb {
            use super::*;
            $(
                #[tokio::test]
                async fn $name() {
                    let (store, account) = support::dynamodb_store(stringify!($name)).await;
                    super::$name(&store, &account).await;
                }
            )*
        }
    };
}

both_stores!(
    subscription_ordering,
    invoices_and_dunning,
    credits_granted_once_and_clawed_back_exactly,
    customers_are_linked
);

mod support {
    use super::*;

    /// A fresh table shaped like template.yaml's, on DynamoDB Local.
    pub async fn dynamodb_store(test: &str) -> (DynamoDbBillingStore, AccountId) {
        let client = testkit::dynamodb().await;
        let table = testkit::billing_table(&client, test).await;
        (
            DynamoDbBillingStore::new(client, table),
            AccountId::parse(&format!("acct_{test}")).unwrap(),
        )
    }
}
