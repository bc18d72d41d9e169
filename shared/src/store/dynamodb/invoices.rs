//! Invoices and their dunning cases: `ACCOUNT#{account}` / `INVOICE#{invoice}`.
//!
//! The case lives on the invoice item, under the invoice's version: a late `payment_failed`
//! can never reopen a case that a newer `paid` closed, and no separate condition is needed.

use super::item::{Expr, Item, Judge, Op, cmp, get_n, get_s, invoice_key, n, s};
use crate::billing::{DunningChange, InvoiceRecord};
use crate::ids::AccountId;
use crate::store::{DunningView, InvoiceView, WriteMode};

pub(super) fn invoice(
    account: &AccountId,
    record: &InvoiceRecord,
    dunning: &DunningChange,
    created: i64,
    mode: WriteMode,
) -> Op {
    let mut e = Expr::default();
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
        }
        DunningChange::Closed { reason } => {
            e.set("dunning_status", s(*reason))
                .set_opt("next_payment_attempt", None);
        }
    }
    let op = cmp(mode);
    Op::update(
        invoice_key(account, &record.invoice_id),
        e,
        Some(format!(
            "attribute_not_exists(#version) OR #version {op} :version"
        )),
        Judge::Version("version"),
    )
}

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
