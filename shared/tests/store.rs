//! One suite, two stores: the in-memory store and DynamoDB (the local AWS endpoint, real SDK)
//! must give the same answers to the same writes.

use shared::billing::{
    DunningChange, InvoiceRecord, SubscriptionState, SubscriptionStatus, Verdict, Write,
};
use shared::catalog::Catalog;
use shared::ids::{AccountId, StripeEventId};
use shared::store::{
    ApplyResult, BillingStore, DynamoDbBillingStore, EventRecord, InMemoryBillingStore, ParkResult,
    WriteMode,
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
        card: None,
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
        refunded_before: None,
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
            card: None,
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

/// An ended subscription never becomes current again, even through a late event that arrives
/// after another subscription ended too (the account would get the plan for free).
async fn ended_subscriptions_never_return(store: &impl BillingStore, account: &AccountId) {
    use SubscriptionStatus::*;
    let a = account;
    let apply = |id: &'static str, t: i64, w: Vec<Write>| async move {
        store
            .apply(&event(id, t, a), "applied", &w, WriteMode::Newer)
            .await
            .unwrap()
    };
    let ended = |id: &str| Write::SubscriptionEnded {
        subscription_id: id.into(),
    };
    // sub_a deleted (t=60) applies before its own `active` (t=50), which failed delivery.
    assert_eq!(
        apply(
            "evt_e1",
            60,
            vec![ended("sub_a"), sub("sub_a", Canceled, "pro")]
        )
        .await,
        ApplyResult::Applied
    );
    assert_eq!(
        apply("evt_e2", 100, vec![sub("sub_b", Active, "pro")]).await,
        ApplyResult::Applied
    );
    assert_eq!(
        apply(
            "evt_e3",
            300,
            vec![ended("sub_b"), sub("sub_b", Canceled, "pro")]
        )
        .await,
        ApplyResult::Applied
    );
    // Stripe's retry of sub_a's t=50 `active`: stale, the account stays free.
    assert_eq!(
        apply("evt_e4", 50, vec![sub("sub_a", Active, "pro")]).await,
        ApplyResult::Conflict {
            index: 0,
            verdict: Verdict::Stale
        }
    );
    let view = store.account(a).await.unwrap().unwrap();
    assert_eq!(view.plan, "free");
    assert_eq!(view.subscription.unwrap().subscription_id, "sub_b");
    // The end of a subscription that is not current: the slot refuses it, its end is kept.
    assert_eq!(
        apply("evt_e5", 400, vec![sub("sub_c", Active, "enterprise")]).await,
        ApplyResult::Applied
    );
    assert_eq!(
        apply(
            "evt_e6",
            500,
            vec![ended("sub_d"), sub("sub_d", Canceled, "pro")]
        )
        .await,
        ApplyResult::Conflict {
            index: 1,
            verdict: Verdict::Stale
        }
    );
    assert_eq!(
        apply("evt_e7", 500, vec![ended("sub_d")]).await,
        ApplyResult::Applied
    );
    assert_eq!(
        apply("evt_e8", 450, vec![sub("sub_d", Active, "pro")]).await,
        ApplyResult::Conflict {
            index: 0,
            verdict: Verdict::Stale
        }
    );
    assert_eq!(store.account(a).await.unwrap().unwrap().plan, "enterprise");
}

/// An upgrade left `incomplete` (3-D Secure abandoned) never drops a paying account to free.
async fn a_subscription_without_a_plan_never_displaces_a_paying_one(
    store: &impl BillingStore,
    account: &AccountId,
) {
    use SubscriptionStatus::*;
    let a = account;
    let apply = |id: &'static str, t: i64, w: Vec<Write>| async move {
        store
            .apply(&event(id, t, a), "applied", &w, WriteMode::Newer)
            .await
            .unwrap()
    };
    assert_eq!(
        apply("evt_i1", 100, vec![sub("sub_a", Active, "pro")]).await,
        ApplyResult::Applied
    );
    assert_eq!(
        apply("evt_i2", 200, vec![sub("sub_b", Incomplete, "enterprise")]).await,
        ApplyResult::Conflict {
            index: 0,
            verdict: Verdict::Stale
        }
    );
    let ended = Write::SubscriptionEnded {
        subscription_id: "sub_b".into(),
    };
    assert_eq!(
        apply(
            "evt_i3",
            300,
            vec![ended, sub("sub_b", IncompleteExpired, "enterprise")]
        )
        .await,
        ApplyResult::Conflict {
            index: 1,
            verdict: Verdict::Stale
        }
    );
    let view = store.account(a).await.unwrap().unwrap();
    assert_eq!(
        (
            view.plan.as_str(),
            view.subscription.unwrap().subscription_id.as_str()
        ),
        ("pro", "sub_a")
    );
    // A completed upgrade does replace it.
    assert_eq!(
        apply("evt_i4", 400, vec![sub("sub_e", Active, "enterprise")]).await,
        ApplyResult::Applied
    );
    assert_eq!(store.account(a).await.unwrap().unwrap().plan, "enterprise");
}

/// A refund applied before its grant (the grant was dead-lettered, or came in another message
/// group) is remembered: the grant adds only the unrefunded share, and later refunds continue
/// from it.
async fn a_refund_before_its_grant_is_honoured(store: &impl BillingStore, account: &AccountId) {
    let a = account;
    let apply = |id: &'static str, w: Write| async move {
        store
            .apply(&event(id, 10, a), "applied", &[w], WriteMode::Newer)
            .await
            .unwrap()
    };
    let refund = |total| Write::ClawBack {
        grant_id: "pi_9".into(),
        amount_refunded: total,
    };
    let grant = |refunded_before| Write::GrantCredits {
        grant_id: "pi_9".into(),
        pack_id: "credits_small".into(),
        credits: 1_000_000,
        amount_paid: 1000,
        refunded_before,
    };
    assert_eq!(apply("evt_r1", refund(400)).await, ApplyResult::Applied);
    // An older running total changes nothing.
    assert_eq!(
        apply("evt_r2", refund(100)).await,
        ApplyResult::Conflict {
            index: 0,
            verdict: Verdict::Stale
        }
    );
    assert_eq!(
        apply("evt_g1", grant(None)).await,
        ApplyResult::Conflict {
            index: 0,
            verdict: Verdict::RefundedBeforeGrant {
                amount_refunded: 400
            }
        }
    );
    assert_eq!(
        apply("evt_g1", grant(Some(400))).await,
        ApplyResult::Applied
    );
    assert_eq!(store.account(a).await.unwrap().unwrap().credits, 600_000);
    assert_eq!(apply("evt_r3", refund(1000)).await, ApplyResult::Applied);
    assert_eq!(store.account(a).await.unwrap().unwrap().credits, 0);
}

/// A checkout names the account's customer and email with its grant, in one transaction (two
/// writes on the account item, merged into one operation).
async fn checkout_names_the_customer_with_its_grant(
    store: &impl BillingStore,
    account: &AccountId,
) {
    let writes = [
        Write::LinkCustomer {
            customer_id: "cus_k".into(),
        },
        Write::AccountCustomer {
            customer_id: "cus_k".into(),
            email: Some("ada@example.com".into()),
        },
        Write::GrantCredits {
            grant_id: "pi_k".into(),
            pack_id: "credits_small".into(),
            credits: 1_000_000,
            amount_paid: 1000,
            refunded_before: None,
        },
    ];
    assert_eq!(
        store
            .apply(
                &event("evt_k1", 10, account),
                "applied",
                &writes,
                WriteMode::Newer
            )
            .await
            .unwrap(),
        ApplyResult::Applied
    );
    let view = store.account(account).await.unwrap().unwrap();
    assert_eq!(view.customer_id.as_deref(), Some("cus_k"));
    assert_eq!(view.email.as_deref(), Some("ada@example.com"));
    assert_eq!(view.credits, 1_000_000);
    // A later checkout never overwrites what is known; the versioned profile does.
    let again = [Write::AccountCustomer {
        customer_id: "cus_other".into(),
        email: Some("someone@example.com".into()),
    }];
    store
        .apply(
            &event("evt_k2", 11, account),
            "applied",
            &again,
            WriteMode::Newer,
        )
        .await
        .unwrap();
    let profile = [Write::CustomerProfile {
        customer_id: "cus_k".into(),
        email: Some("billing@example.com".into()),
        name: None,
        deleted: false,
        card: None,
    }];
    store
        .apply(
            &event("evt_k3", 12, account),
            "applied",
            &profile,
            WriteMode::Newer,
        )
        .await
        .unwrap();
    let view = store.account(account).await.unwrap().unwrap();
    assert_eq!(view.customer_id.as_deref(), Some("cus_k"));
    assert_eq!(view.email.as_deref(), Some("billing@example.com"));
}

/// Events of a customer with no account yet are parked under it; the link is refused while any
/// are parked (so the processor applies them first); `no_account` markers never block.
async fn events_wait_for_their_customers_link(store: &impl BillingStore, account: &AccountId) {
    let customer = format!("cus_{account}").replace([':', '.', '-'], "_");
    let unlinked = |id: &str, created| EventRecord {
        account: None,
        ..event(id, created, account)
    };
    assert_eq!(
        store
            .park(&unlinked("evt_w1", 5), &customer, b"{\"one\":1}")
            .await
            .unwrap(),
        ParkResult::Parked
    );
    assert_eq!(
        store
            .park(&unlinked("evt_w2", 4), &customer, b"{\"two\":2}")
            .await
            .unwrap(),
        ParkResult::Parked
    );
    let link = [Write::LinkCustomer {
        customer_id: customer.clone(),
    }];
    assert_eq!(
        store
            .apply(
                &event("evt_w3", 6, account),
                "applied",
                &link,
                WriteMode::Newer
            )
            .await
            .unwrap(),
        ApplyResult::Conflict {
            index: 0,
            verdict: Verdict::ParkedEvents
        }
    );
    store.link(&customer, account).await.unwrap();
    let parked = store.parked(&customer).await.unwrap();
    let ids: Vec<_> = parked
        .iter()
        .map(|p| p.event_id.as_str().to_owned())
        .collect();
    assert_eq!(ids, ["evt_w2", "evt_w1"], "oldest first");
    assert_eq!(parked[0].raw.as_deref(), Some(&b"{\"two\":2}"[..]));
    // A parked event's `no_account` marker does not block it once it can apply.
    let profile = [Write::CustomerProfile {
        customer_id: customer.clone(),
        email: Some("ada@example.com".into()),
        name: None,
        deleted: false,
        card: None,
    }];
    assert_eq!(
        store
            .apply(
                &event("evt_w1", 5, account),
                "applied",
                &profile,
                WriteMode::Newer
            )
            .await
            .unwrap(),
        ApplyResult::Applied
    );
    assert_eq!(
        store
            .apply(
                &event("evt_w1", 5, account),
                "applied",
                &profile,
                WriteMode::Newer
            )
            .await
            .unwrap(),
        ApplyResult::Duplicate
    );
    for p in &parked {
        store.unpark(&customer, &p.event_id).await.unwrap();
    }
    assert!(store.parked(&customer).await.unwrap().is_empty());
    assert_eq!(
        store
            .apply(
                &event("evt_w3", 6, account),
                "applied",
                &link,
                WriteMode::Newer
            )
            .await
            .unwrap(),
        ApplyResult::Applied
    );
    // Once linked, nothing more is parked: the processor looks the account up again.
    assert_eq!(
        store
            .park(&unlinked("evt_w4", 7), &customer, b"{}")
            .await
            .unwrap(),
        ParkResult::Linked
    );
    assert_eq!(
        store
            .event_outcome(&StripeEventId::parse("evt_w4").unwrap())
            .await
            .unwrap(),
        None
    );
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
    customers_are_linked,
    ended_subscriptions_never_return,
    a_subscription_without_a_plan_never_displaces_a_paying_one,
    a_refund_before_its_grant_is_honoured,
    checkout_names_the_customer_with_its_grant,
    events_wait_for_their_customers_link
);

mod support {
    use super::*;

    /// One table for the whole property run (each case uses its own account).
    pub async fn shared_dynamodb_store() -> (DynamoDbBillingStore, ()) {
        static TABLE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let client = testkit::dynamodb().await;
        let table = match TABLE.get() {
            Some(t) => t.clone(),
            None => {
                let t = testkit::billing_table(&client, "same-rules").await;
                TABLE.get_or_init(|| t).clone()
            }
        };
        (DynamoDbBillingStore::new(client, table), ())
    }

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

/// Random sequences of subscription and invoice writes, duplicated and out of order, applied
/// to both stores: every answer and the final state agree, so the DynamoDB conditions restate
/// the pure rules exactly.
mod same_rules {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug, Clone)]
    enum Step {
        Sub(usize, usize),
        Invoice(usize, usize),
    }

    const SUBS: [&str; 3] = ["sub_a", "sub_b", "sub_c"];
    const STATUSES: [SubscriptionStatus; 8] = [
        SubscriptionStatus::Incomplete,
        SubscriptionStatus::IncompleteExpired,
        SubscriptionStatus::Trialing,
        SubscriptionStatus::Active,
        SubscriptionStatus::PastDue,
        SubscriptionStatus::Canceled,
        SubscriptionStatus::Unpaid,
        SubscriptionStatus::Paused,
    ];

    fn writes(step: &Step) -> Vec<Write> {
        match step {
            Step::Sub(id, status) => {
                let status = STATUSES[*status];
                let mut w = Vec::new();
                if status.is_terminal() {
                    w.push(Write::SubscriptionEnded {
                        subscription_id: SUBS[*id].into(),
                    });
                }
                w.push(sub(SUBS[*id], status, "pro"));
                w
            }
            Step::Invoice(id, kind) => {
                let id = ["in_1", "in_2"][*id];
                vec![match kind {
                    0 => invoice(id, "open", DunningChange::None),
                    1 => invoice(
                        id,
                        "open",
                        DunningChange::Failed {
                            attempt_count: 1,
                            next_payment_attempt: Some(5),
                        },
                    ),
                    2 => invoice(id, "paid", DunningChange::Closed { reason: "paid" }),
                    _ => invoice(id, "void", DunningChange::Closed { reason: "voided" }),
                }]
            }
        }
    }

    fn step() -> impl Strategy<Value = (Step, i64)> {
        (
            prop_oneof![
                (0..3usize, 0..8usize).prop_map(|(a, b)| Step::Sub(a, b)),
                (0..2usize, 0..4usize).prop_map(|(a, b)| Step::Invoice(a, b)),
            ],
            1..6i64,
        )
    }

    static CASE: AtomicUsize = AtomicUsize::new(0);

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
        #[test]
        fn both_stores_agree(steps in proptest::collection::vec(step(), 1..12)) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let (dynamo, _) = support::shared_dynamodb_store().await;
                let memory = InMemoryBillingStore::new();
                let case = CASE.fetch_add(1, Ordering::SeqCst);
                let account = AccountId::parse(&format!("acct_rules_{case}")).unwrap();
                for (i, (step, t)) in steps.iter().enumerate() {
                    // Each step is a new event; a step may repeat an earlier one's content.
                    let e = event(&format!("evt_p{case}_{i}"), *t, &account);
                    let w = writes(step);
                    let m = memory.apply(&e, "applied", &w, WriteMode::Newer).await.unwrap();
                    let d = dynamo.apply(&e, "applied", &w, WriteMode::Newer).await.unwrap();
                    assert_eq!(m, d, "step {i}: {step:?} at {t}");
                }
                assert_eq!(memory.account(&account).await.unwrap(), dynamo.account(&account).await.unwrap());
                assert_eq!(memory.invoices(&account).await.unwrap(), dynamo.invoices(&account).await.unwrap());
            });
        }
    }
}
