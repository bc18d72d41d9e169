//! Processed-event markers: one per Stripe event, written with the event's effects.

use super::item::{Expr, Judge, Op, marker_key, n, s};
use crate::store::{EventRecord, MARKER_TTL_SECS, NO_ACCOUNT};

/// The marker, put only if the event was never handled (or only parked for want of an
/// account): its failed condition is a duplicate.
pub(super) fn marker(event: &EventRecord, outcome: &str) -> Op {
    let mut attrs = super::item::Item::new();
    attrs.insert("event_type".into(), s(&event.event_type));
    attrs.insert("created".into(), n(event.created));
    attrs.insert("outcome".into(), s(outcome));
    attrs.insert("processed_at".into(), n(event.processed_at));
    attrs.insert("expires_at".into(), n(event.processed_at + MARKER_TTL_SECS));
    if let Some(a) = &event.account {
        attrs.insert("account_id".into(), s(a.as_str()));
    }
    let mut e = Expr::default();
    e.name("outcome").value(":no_account", s(NO_ACCOUNT));
    Op::put(
        marker_key(&event.event_id),
        attrs,
        e,
        Some("attribute_not_exists(pk) OR #outcome = :no_account".into()),
        // Not consulted: the store reads a failed marker as a duplicate before any judge.
        Judge::Stale,
    )
}
