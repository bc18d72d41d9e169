//! Processed-event markers: one per Stripe event, written with the event's effects.

use super::item::{Expr, Judge, Op, marker_key, n, s};
use crate::store::{EventRecord, MARKER_TTL_SECS};

/// The marker, put only if the event was never handled: its failed condition is a duplicate.
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
    Op::put(
        marker_key(&event.event_id),
        attrs,
        Expr::default(),
        Some("attribute_not_exists(pk)".into()),
        // Not consulted: the store reads a failed marker as a duplicate before any judge.
        Judge::Stale,
    )
}
