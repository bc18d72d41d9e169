//! Accounts, their customers and subscriptions.
//!
//! | item | pk | sk |
//! |---|---|---|
//! | account: customer, billing contact, current subscription, plan, allowance, credits | `ACCOUNT#{account}` | `ACCOUNT` |
//! | a subscription that ended (so that it never becomes current again) | `ACCOUNT#{account}` | `ENDED#{subscription}` |
//! | customer → account link | `CUSTOMER#{customer}` | `CUSTOMER` |
//!
//! The account item holds the current subscription itself, so that one read (or one
//! conditional write) sees the plan, period and allowance that apply.

use aws_sdk_dynamodb::types::AttributeValue;

use super::invoices::{DOWNGRADED_FOR, SUSPENDED_FOR};
use super::item::{
    Expr, Item, Judge, Op, account_key, cmp, ended_key, get_bool, get_n, get_s, link_key, n, s,
};
use super::usage::restricted;
use crate::billing::{SubscriptionState, SubscriptionStatus};
use crate::catalog::FREE_PLAN;
use crate::ids::AccountId;
use crate::store::{AccountView, SubscriptionView, WriteMode};

/// The customer → account link, unless events are parked under the customer: those are
/// applied first (`Judge::Parked`), so no event of the customer is lost to the race between its
/// first events and the one that names its account.
pub(super) fn link(account: &AccountId, customer_id: &str) -> Op {
    let mut e = Expr::default();
    e.set("account_id", s(account.as_str())).name("pending");
    Op::update(
        link_key(customer_id),
        e,
        Some("attribute_not_exists(#pending)".into()),
        Judge::Parked,
    )
}

/// Names the customer (and checkout's email) on the account unless a value is there already.
pub(super) fn account_customer(account: &AccountId, customer_id: &str, email: Option<&str>) -> Op {
    let mut e = Expr::default();
    e.set_if_absent("customer_id", s(customer_id));
    if let Some(email) = email {
        e.set_if_absent("email", s(email));
    }
    Op::update(account_key(account), e, None, Judge::Retry)
}

/// What a `customer.*` event says about the billing contact.
pub(super) struct Profile<'a> {
    pub customer_id: &'a str,
    pub email: Option<&'a str>,
    pub name: Option<&'a str>,
    pub deleted: bool,
    pub card: Option<&'a str>,
}

pub(super) fn profile(account: &AccountId, p: &Profile<'_>, created: i64, mode: WriteMode) -> Op {
    let mut e = Expr::default();
    e.set("customer_id", s(p.customer_id))
        .set_opt("email", p.email.map(s))
        .set_opt("customer_name", p.name.map(s))
        .set("customer_deleted", AttributeValue::Bool(p.deleted))
        .set_opt("customer_card", p.card.map(s))
        .set("customer_version", n(created));
    let op = cmp(mode);
    Op::update(
        account_key(account),
        e,
        Some(format!(
            "attribute_not_exists(#customer_version) OR #customer_version {op} :customer_version"
        )),
        Judge::Version("customer_version"),
    )
}

/// Remembers that a subscription ended (idempotent).
pub(super) fn subscription_ended(account: &AccountId, subscription_id: &str, created: i64) -> Op {
    let mut attrs = Item::new();
    attrs.insert("ended_at".into(), n(created));
    Op::put(
        ended_key(account, subscription_id),
        attrs,
        Expr::default(),
        None,
        Judge::Retry,
    )
}

/// The subscription as the account's current one, under the rules of
/// `billing::ordering::judge_subscription`, restated as conditions: a live subscription also
/// checks that it never ended before (its `ENDED#` item).
pub(super) fn subscription(
    account: &AccountId,
    sub: &SubscriptionState,
    created: i64,
    mode: WriteMode,
) -> Vec<Op> {
    let mut e = Expr::default();
    e.set("sub_id", s(&sub.subscription_id))
        .set("sub_status", s(sub.status.as_str()))
        .set("plan", s(sub.plan.as_str()))
        .set("effective_plan", s(sub.effective_plan.as_str()))
        .set("included_units", n(sub.included_units))
        .set("period_start", n(sub.period_start))
        .set("period_end", n(sub.period_end))
        .set(
            "cancel_at_period_end",
            AttributeValue::Bool(sub.cancel_at_period_end),
        )
        .set_opt("sub_card", sub.card.clone().map(s))
        .set("sub_version", n(created));
    let op = cmp(mode);
    let ended = "#sub_status IN (:canceled, :expired)";
    let granting = "#sub_status IN (:trialing, :active, :past_due)";
    let newer =
        "(#sub_version < :sub_version OR (#sub_version = :sub_version AND #sub_id < :sub_id))";
    let condition = if sub.status.is_terminal() {
        format!(
            "attribute_not_exists(#sub_id) OR (#sub_id = :sub_id AND #sub_version {op} :sub_version)"
        )
    } else {
        e.value(":canceled", s(SubscriptionStatus::Canceled.as_str()))
            .value(
                ":expired",
                s(SubscriptionStatus::IncompleteExpired.as_str()),
            );
        let other = if sub.status.grants_plan() {
            format!("NOT {granting} OR {newer}")
        } else {
            format!("{ended} OR (NOT {granting} AND {newer})")
        };
        format!(
            "attribute_not_exists(#sub_id) \
             OR (#sub_id = :sub_id AND #sub_version {op} :sub_version AND NOT {ended}) \
             OR (#sub_id <> :sub_id AND ({other}))"
        )
    };
    if condition.contains(":trialing") {
        e.value(":trialing", s(SubscriptionStatus::Trialing.as_str()))
            .value(":active", s(SubscriptionStatus::Active.as_str()))
            .value(":past_due", s(SubscriptionStatus::PastDue.as_str()));
    }
    let slot = Op::update(
        account_key(account),
        e,
        Some(condition),
        Judge::Subscription {
            id: sub.subscription_id.clone(),
            status: sub.status,
        },
    );
    if sub.status.is_terminal() {
        return vec![slot];
    }
    let never_ended = Op::check(
        ended_key(account, &sub.subscription_id),
        Expr::default(),
        "attribute_not_exists(pk)".into(),
        Judge::Stale,
    );
    vec![never_ended, slot]
}

pub(super) fn stored_subscription(item: &Item) -> Option<(String, SubscriptionStatus, i64)> {
    Some((
        get_s(item, "sub_id")?,
        SubscriptionStatus::parse(&get_s(item, "sub_status")?)?,
        get_n::<i64>(item, "sub_version")?,
    ))
}

pub(super) fn view(account: &AccountId, item: &Item) -> AccountView {
    let downgraded = restricted(item, DOWNGRADED_FOR);
    let subscription = get_s(item, "sub_id").map(|id| SubscriptionView {
        subscription_id: id,
        status: get_s(item, "sub_status").unwrap_or_default(),
        plan: get_s(item, "plan").unwrap_or_default(),
        period_start: get_n(item, "period_start").unwrap_or_default(),
        period_end: get_n(item, "period_end").unwrap_or_default(),
        cancel_at_period_end: get_bool(item, "cancel_at_period_end").unwrap_or(false),
    });
    AccountView {
        account_id: account.as_str().to_owned(),
        customer_id: get_s(item, "customer_id"),
        email: get_s(item, "email"),
        name: get_s(item, "customer_name"),
        plan: if downgraded {
            FREE_PLAN.to_owned()
        } else {
            get_s(item, "effective_plan").unwrap_or_else(|| FREE_PLAN.to_owned())
        },
        included_units: get_n(item, "included_units").filter(|_| !downgraded),
        downgraded,
        suspended: restricted(item, SUSPENDED_FOR),
        subscription,
        credits: get_n(item, "credits").unwrap_or(0),
        auto_topup: super::usage::auto_topup_from(item),
    }
}
