//! Operator commands, as functions the binaries call and the tests drive.
//!
//! - [`replay`]: re-ingest Stripe's events since a time, for an endpoint that was down longer
//!   than Stripe retries (3 days). Safe to run twice: the queue deduplicates by event id for
//!   5 minutes and the processor's markers make any later copy a no-op.
//! - [`redrive`]: move the dead-letter queue's messages back to the events queue, keeping their
//!   group and deduplication ids, once the cause is fixed. Safe to run twice: a second run finds
//!   nothing, and a message redriven twice is applied once.

use anyhow::Context;
use aws_sdk_sqs::types::{MessageAttributeValue, MessageSystemAttributeName};
use shared::queue::{EventQueue, QueuedEvent};
use shared::stripe::EventEnvelope;
use shared::stripe::api::StripeApi;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplayReport {
    pub listed: usize,
    pub queued: usize,
    pub skipped: usize,
}

/// Queues every event Stripe lists since `since` (Unix seconds), oldest first, so that each
/// customer's events enter their FIFO group in order.
pub async fn replay(
    stripe: &impl StripeApi,
    queue: &impl EventQueue,
    since: i64,
) -> anyhow::Result<ReplayReport> {
    let mut events = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = stripe
            .events_since(since, after.as_deref())
            .await
            .context("listing Stripe events")?;
        after = page
            .events
            .last()
            .and_then(|e| e["id"].as_str())
            .map(str::to_owned);
        events.extend(page.events);
        if !page.has_more || after.is_none() {
            break;
        }
    }
    events.reverse();
    let mut report = ReplayReport {
        listed: events.len(),
        ..Default::default()
    };
    for event in events {
        let body = serde_json::to_string(&event).context("re-serialising an event")?;
        match EventEnvelope::parse(body.as_bytes()) {
            Ok(envelope) => {
                let queued = QueuedEvent::for_event(envelope, body, queue.max_inline_body_bytes());
                queue.enqueue(&queued).await?;
                report.queued += 1;
            }
            Err(e) => {
                tracing::warn!(event_id = event["id"].as_str().unwrap_or("?"), reason = %e, "skipped an event the intake would refuse");
                report.skipped += 1;
            }
        }
    }
    Ok(report)
}

/// Moves every message from `dead_letter_url` back to `queue_url`; returns how many moved.
pub async fn redrive(
    sqs: &aws_sdk_sqs::Client,
    dead_letter_url: &str,
    queue_url: &str,
) -> anyhow::Result<usize> {
    let mut moved = 0;
    loop {
        let got = sqs
            .receive_message()
            .queue_url(dead_letter_url)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .visibility_timeout(60)
            .send()
            .await
            .context("reading the dead-letter queue")?;
        let messages = got.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok(moved);
        }
        for m in messages {
            let system = m.attributes.clone().unwrap_or_default();
            let group = system
                .get(&MessageSystemAttributeName::MessageGroupId)
                .cloned()
                .context("a dead-lettered message without a group id (not from a FIFO queue?)")?;
            let dedup = system
                .get(&MessageSystemAttributeName::MessageDeduplicationId)
                .cloned()
                .or_else(|| m.message_id.clone())
                .context("a dead-lettered message without an id")?;
            let mut send = sqs
                .send_message()
                .queue_url(queue_url)
                .message_group_id(group)
                .message_deduplication_id(dedup)
                .message_body(m.body.clone().unwrap_or_default());
            for (name, value) in m.message_attributes.clone().unwrap_or_default() {
                let copy = MessageAttributeValue::builder()
                    .data_type(value.data_type())
                    .set_string_value(value.string_value().map(str::to_owned))
                    .build()
                    .context("copying a message attribute")?;
                send = send.message_attributes(name, copy);
            }
            send.send()
                .await
                .context("sending a message back to the events queue")?;
            // Deleted only once it is safely back: a crash in between leaves a copy in both,
            // which the processor's markers make harmless.
            sqs.delete_message()
                .queue_url(dead_letter_url)
                .set_receipt_handle(m.receipt_handle.clone())
                .send()
                .await
                .context("deleting a redriven message")?;
            moved += 1;
        }
    }
}

/// `2026-11-20` (UTC midnight) or Unix seconds.
pub fn parse_since(text: &str) -> anyhow::Result<i64> {
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs);
    }
    let parts: Vec<&str> = text.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        anyhow::bail!("--since takes a date (YYYY-MM-DD) or Unix seconds, not `{text}`");
    };
    let (y, m, d): (i64, i64, i64) = (y.parse()?, m.parse()?, d.parse()?);
    anyhow::ensure!(
        (1..=12).contains(&m) && (1..=31).contains(&d),
        "--since: `{text}` is not a date"
    );
    // Days from the civil date (Howard Hinnant's algorithm), proleptic Gregorian, UTC.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Ok((era * 146_097 + doe - 719_468) * 86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_seconds() {
        assert_eq!(parse_since("1970-01-01").unwrap(), 0);
        assert_eq!(parse_since("2025-11-24").unwrap(), 1_763_942_400);
        assert_eq!(parse_since("2024-02-29").unwrap(), 1_709_164_800);
        assert_eq!(parse_since("1763942400").unwrap(), 1_763_942_400);
        assert!(parse_since("yesterday").is_err());
        assert!(parse_since("2025-13-01").is_err());
    }
}
