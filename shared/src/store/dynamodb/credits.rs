//! Credit packs: the ledger (`ACCOUNT#{account}` / `CREDIT#{payment intent}`) and the balance
//! on the account item. The rules are `billing::credits`; this module states them as
//! conditions.

use super::item::{Expr, Item, Judge, Op, account_key, get_n, get_s, grant_key, n, s};
use crate::billing::credits::{Grant, clawback, grant_after_refund, unspent_of};
use crate::ids::AccountId;

/// A remembered refund without its grant expires after this (Unix seconds): long past any
/// redelivery or redrive of the grant. A refund of a charge that was no credit pack leaves
/// only this record.
const PENDING_REFUND_TTL_SECS: i64 = 90 * 24 * 3600;

pub(super) struct GrantArgs<'a> {
    pub grant_id: &'a str,
    pub pack_id: &'a str,
    pub credits: u64,
    pub amount_paid: u64,
    pub refunded_before: Option<u64>,
}

/// The ledger entry and the balance, once per payment. A refund processed first left
/// `refunded` on the entry: the first attempt's condition then fails (`Judge::Grant`), and the
/// processor grants again with that total, net of the refunded share.
pub(super) fn grant(account: &AccountId, g: &GrantArgs<'_>, created: i64) -> Vec<Op> {
    let (add, clawed_back) = match g.refunded_before {
        Some(refunded) => grant_after_refund(g.credits, g.amount_paid, refunded),
        None => (g.credits, 0),
    };
    let mut e = Expr::default();
    e.set("pack_id", s(g.pack_id))
        .set("credits", n(g.credits))
        .set("amount_paid", n(g.amount_paid))
        .set("clawed_back", n(clawed_back))
        .set("granted_at", n(created))
        .remove("expires_at");
    let condition = match g.refunded_before {
        None => "attribute_not_exists(#credits) AND attribute_not_exists(#refunded)".to_owned(),
        Some(refunded) => {
            e.value(":refunded", n(refunded));
            "attribute_not_exists(#credits) AND #refunded = :refunded".to_owned()
        }
    };
    e.name("refunded");
    let entry = Op::update(
        grant_key(account, g.grant_id),
        e,
        Some(condition),
        Judge::Grant,
    );
    let mut balance = Expr::default();
    balance.add("credits", n(add));
    if add > 0 {
        // A top-up: `credits.low` (in `crate::usage`) measures against it and fires again.
        balance.set("last_topup", n(add)).remove("low_sent");
    }
    vec![
        entry,
        Op::update(account_key(account), balance, None, Judge::Retry),
    ]
}

/// The account item and its ledger, as one read returns them.
pub(super) struct Ledger {
    pub balance: u64,
    pub entries: Vec<Item>,
}

/// The operations of a refund, given the ledger read just before.
pub(super) fn refund(
    account: &AccountId,
    grant_id: &str,
    amount_refunded: u64,
    ledger: &Ledger,
    created: i64,
) -> Vec<Op> {
    let entry = ledger
        .entries
        .iter()
        .find(|i| get_s(i, "sk").as_deref() == Some(&format!("CREDIT#{grant_id}")));
    let granted = entry.and_then(|i| Some((i, get_n::<u64>(i, "credits")?)));
    let Some((entry, credits)) = granted else {
        // No grant yet: remember the running total for the grant, unless a larger one is there.
        let mut e = Expr::default();
        e.set("refunded", n(amount_refunded))
            .set("expires_at", n(created + PENDING_REFUND_TTL_SECS))
            .name("credits");
        return vec![Op::update(
            grant_key(account, grant_id),
            e,
            Some(
                "attribute_not_exists(#credits) AND (attribute_not_exists(#refunded) OR #refunded < :refunded)"
                    .into(),
            ),
            Judge::PendingRefund,
        )];
    };
    let ids: Vec<String> = ledger
        .entries
        .iter()
        .map(|i| get_s(i, "sk").unwrap_or_default())
        .collect();
    let grants: Vec<Grant<'_>> = ledger
        .entries
        .iter()
        .zip(&ids)
        .filter_map(|(i, id)| {
            Some(Grant {
                id: id.as_str(),
                granted_at: get_n(i, "granted_at").unwrap_or(0),
                credits: get_n(i, "credits")?,
                clawed_back: get_n(i, "clawed_back").unwrap_or(0),
            })
        })
        .collect();
    let before: u64 = get_n(entry, "clawed_back").unwrap_or(0);
    let unspent = unspent_of(&grants, &format!("CREDIT#{grant_id}"), ledger.balance);
    let c = clawback(
        credits,
        get_n(entry, "amount_paid").unwrap_or(0),
        amount_refunded,
        before,
        unspent,
    );
    if c.clawed_back == before {
        return Vec::new(); // nothing new refunded
    }
    if c.written_off > 0 {
        tracing::error!(
            alarm = true,
            account_id = %account,
            grant_id,
            written_off = c.written_off,
            "refunded credits were already spent: written off, not taken from other packs"
        );
    }
    // Both conditions hold the values read: a concurrent change makes this a retry.
    let mut g = Expr::default();
    g.set("clawed_back", n(c.clawed_back))
        .value(":before", n(before))
        .value(":written_off", n(c.written_off))
        .value(":zero", n(0));
    g.name("written_off");
    g.set
        .push("#written_off = if_not_exists(#written_off, :zero) + :written_off".into());
    let mut ops = vec![Op::update(
        grant_key(account, grant_id),
        g,
        Some("#clawed_back = :before".into()),
        Judge::Retry,
    )];
    if c.take > 0 {
        let mut a = Expr::default();
        a.name("credits")
            .value(":take", n(c.take))
            .value(":balance", n(ledger.balance));
        a.set.push("#credits = #credits - :take".into());
        ops.push(Op::update(
            account_key(account),
            a,
            Some("#credits = :balance".into()),
            Judge::Retry,
        ));
    }
    ops
}
