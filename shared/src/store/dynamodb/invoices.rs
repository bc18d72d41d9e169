//! Invoices and their dunning cases: `ACCOUNT#{account}` / `INVOICE#{invoice}`.
//!
//! The case lives on the invoice item, under the invoice's version: a late `payment_failed`
//! can never reopen a case that a newer `paid` closed, and no separate condition is needed.
//! A failure puts the invoice in the sparse `DunningCases` index (`dunning_case`), where the
//! dunning function finds it; only the dunning function takes it out again, once the case is
//! closed and its reactivation (if any) done.
//!
//! A payment (or a void: nothing is owed any more) also lifts, in the same transaction, the
//! downgrade and suspension this invoice caused: the account's `downgraded_for` and
//! `suspended_for` sets name the invoices that restrict it, so a customer comes back the moment
//! the event is applied, and an account restricted for two invoices stays restricted until both
//! are settled.

use aws_sdk_dynamodb::types::AttributeValue;

use super::item::{Expr, Item, Judge, Op, account_key, cmp, get_n, get_s, invoice_key, n, s};
use crate::billing::dunning::lifts_restrictions;
use crate::billing::{DunningChange, InvoiceRecord};
use crate::ids::AccountId;
use crate::store::{DunningView, InvoiceView, WriteMode};

pub(super) fn invoice(
    account: &AccountId,
    record: &InvoiceRecord,
    dunning: &DunningChange,
    created: i64,
    mode: WriteMode,
) -> Vec<Op> {
    let mut e = Expr::default();
    let mut lifts = false;
    e.set("invoice_id", s(&record.invoice_id))
        .set_opt("number", record.number.clone().map(s))
        .set("invoice_status", s(&record.status))
        .set("amount_due", n(record.amount_due))
        .set("amount_paid", n(record.amount_paid))
        .set("amount_remaining", n(record.amount_remaining))
        .set("currency", s(&record.currency))
        .set_opt(
            "hosted_invoice_url",
            record.hosted_invoice_url.clone().map(s),
        )
        .set_opt("invoice_pdf", record.invoice_pdf.clone().map(s))
        .set("period_start", n(record.period_start))
        .set("period_end", n(record.period_end))
        .set_opt("subscription_id", record.subscription_id.clone().map(s))
        .set("version", n(created));
    match dunning {
        DunningChange::None => {}
        DunningChange::Failed {
            attempt_count,
            next_payment_attempt,
        } => {
            e.set("dunning_status", s("open"))
                .set("failures", n(attempt_count))
                .set_opt("next_payment_attempt", next_payment_attempt.map(n))
                .set_if_absent("first_failed_at", n(created));
            // The policy chases subscription invoices; a one-off's failure is only recorded.
            if record.subscription_id.is_some() {
                e.set(DUNNING_INDEX_KEY, s(DUNNING_INDEX_VALUE));
            }
        }
        DunningChange::Closed { reason } => {
            e.set("dunning_status", s(*reason))
                .set_opt("next_payment_attempt", None);
            lifts = lifts_restrictions(reason);
        }
    }
    let op = cmp(mode);
    let mut ops = vec![Op::update(
        invoice_key(account, &record.invoice_id),
        e,
        Some(format!(
            "attribute_not_exists(#version) OR #version {op} :version"
        )),
        Judge::Version("version"),
    )];
    if lifts {
        let this = AttributeValue::Ss(vec![record.invoice_id.clone()]);
        let mut a = Expr::default();
        a.delete(SUSPENDED_FOR, this.clone())
            .delete(DOWNGRADED_FOR, this);
        ops.push(Op::update(account_key(account), a, None, Judge::Retry));
    }
    ops
}

/// The sparse index of dunning cases: its key attribute and the one value it takes.
pub const DUNNING_INDEX: &str = "DunningCases";
pub const DUNNING_INDEX_KEY: &str = "dunning_case";
pub const DUNNING_INDEX_VALUE: &str = "case";
/// The account's sets of invoices that keep it suspended / downgraded.
pub const SUSPENDED_FOR: &str = "suspended_for";
pub const DOWNGRADED_FOR: &str = "downgraded_for";

pub(super) fn view(i: &Item) -> InvoiceView {
    InvoiceView {
        record: InvoiceRecord {
            invoice_id: get_s(i, "invoice_id").unwrap_or_default(),
            number: get_s(i, "number"),
            status: get_s(i, "invoice_status").unwrap_or_default(),
            amount_due: get_n(i, "amount_due").unwrap_or_default(),
            amount_paid: get_n(i, "amount_paid").unwrap_or_default(),
            amount_remaining: get_n(i, "amount_remaining").unwrap_or_default(),
            currency: get_s(i, "currency").unwrap_or_default(),
            hosted_invoice_url: get_s(i, "hosted_invoice_url"),
            invoice_pdf: get_s(i, "invoice_pdf"),
            period_start: get_n(i, "period_start").unwrap_or_default(),
            period_end: get_n(i, "period_end").unwrap_or_default(),
            subscription_id: get_s(i, "subscription_id"),
        },
        dunning: get_n::<u32>(i, "failures").map(|failures| DunningView {
            status: get_s(i, "dunning_status").unwrap_or_else(|| "open".into()),
            failures,
            first_failed_at: get_n(i, "first_failed_at").unwrap_or_default(),
            next_payment_attempt: get_n(i, "next_payment_attempt"),
        }),
    }
}
