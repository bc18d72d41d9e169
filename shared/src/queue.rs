//! The Stripe event queue: the port the webhook writes to and the processor reads from.
//!
//! A queued event is either the verified event itself (`Inline`), or, when the event is too
//! large for one queue message, a reference to it (`Reference`) for the processor to fetch from
//! Stripe's `GET /v1/events/{id}`.
//!
//! On SQS the body of an inline message is the event exactly as Stripe sent it; the metadata
//! travels in message attributes, so the processor can route a message without parsing it twice.

use std::future::Future;
use std::sync::Mutex;

use anyhow::Context;
use aws_sdk_sqs::types::MessageAttributeValue;

use crate::ids::{StripeEventId, StripeObjectId};

/// SQS's default (and moto's) limit on a message, attributes included.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Room kept for the message attributes; ids and event types are bounded well below it.
const ATTRIBUTE_ALLOWANCE: usize = 1024;

pub const ATTR_EVENT_ID: &str = "stripe_event_id";
pub const ATTR_EVENT_TYPE: &str = "stripe_event_type";
pub const ATTR_PAYLOAD: &str = "payload";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventPayload {
    /// The raw event body, as signed by Stripe.
    Inline(String),
    /// Too large for a message: the processor fetches the event by id.
    Reference,
}

impl EventPayload {
    pub fn kind(&self) -> &'static str {
        match self {
            EventPayload::Inline(_) => "inline",
            EventPayload::Reference => "reference",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedEvent {
    pub event_id: StripeEventId,
    pub event_type: String,
    /// Events of one group are delivered in order (the Stripe customer, else the object).
    pub group: StripeObjectId,
    pub payload: EventPayload,
}

impl QueuedEvent {
    /// The queue message for a verified event: inline when it fits, else by reference.
    pub fn for_event(
        envelope: crate::stripe::EventEnvelope,
        body: String,
        max_inline_body_bytes: usize,
    ) -> Self {
        let payload = if body.len() <= max_inline_body_bytes {
            EventPayload::Inline(body)
        } else {
            EventPayload::Reference
        };
        Self {
            group: envelope.message_group().clone(),
            event_id: envelope.id,
            event_type: envelope.event_type,
            payload,
        }
    }

    /// The message body: the event itself, or a minimal event naming the one to fetch.
    pub fn body(&self) -> String {
        match &self.payload {
            EventPayload::Inline(raw) => raw.clone(),
            EventPayload::Reference => serde_json::json!({
                "id": self.event_id.as_str(),
                "object": "event",
                "type": self.event_type,
            })
            .to_string(),
        }
    }
}

/// Where verified events go. One call per event; duplicates of an event id collapse.
pub trait EventQueue {
    /// The largest raw event body that can travel inline.
    fn max_inline_body_bytes(&self) -> usize;

    fn enqueue(&self, event: &QueuedEvent) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// The SQS FIFO queue.
#[derive(Debug, Clone)]
pub struct SqsEventQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    max_message_bytes: usize,
}

impl SqsEventQueue {
    pub fn new(
        client: aws_sdk_sqs::Client,
        queue_url: impl Into<String>,
        max_message_bytes: usize,
    ) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
            max_message_bytes,
        }
    }
}

fn string_attribute(value: &str) -> anyhow::Result<MessageAttributeValue> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .context("building an SQS message attribute")
}

impl EventQueue for SqsEventQueue {
    fn max_inline_body_bytes(&self) -> usize {
        self.max_message_bytes.saturating_sub(ATTRIBUTE_ALLOWANCE)
    }

    async fn enqueue(&self, event: &QueuedEvent) -> anyhow::Result<()> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_group_id(event.group.as_str())
            // FIFO deduplication: Stripe's redeliveries of one event collapse into one message.
            .message_deduplication_id(event.event_id.as_str())
            .message_body(event.body())
            .message_attributes(ATTR_EVENT_ID, string_attribute(event.event_id.as_str())?)
            .message_attributes(ATTR_EVENT_TYPE, string_attribute(&event.event_type)?)
            .message_attributes(ATTR_PAYLOAD, string_attribute(event.payload.kind())?)
            .send()
            .await
            .with_context(|| format!("sending event {} to SQS", event.event_id))?;
        Ok(())
    }
}

/// An in-process queue for handler tests: every message sent (with the deduplication id SQS
/// would use), a switch to make it unreachable, and a count of calls. It does not deduplicate:
/// SQS FIFO does so only for 5 minutes, so no test may rest on it; the processor's markers are
/// what makes a redelivery harmless.
#[derive(Debug, Default)]
pub struct InMemoryEventQueue {
    state: Mutex<InMemoryState>,
    max_inline_body_bytes: usize,
}

#[derive(Debug, Default)]
struct InMemoryState {
    messages: Vec<QueuedEvent>,
    calls: usize,
    unreachable: bool,
}

impl InMemoryEventQueue {
    pub fn new(max_inline_body_bytes: usize) -> Self {
        Self {
            state: Mutex::default(),
            max_inline_body_bytes,
        }
    }

    pub fn set_unreachable(&self, unreachable: bool) {
        self.lock().unreachable = unreachable;
    }

    pub fn messages(&self) -> Vec<QueuedEvent> {
        self.lock().messages.clone()
    }

    pub fn calls(&self) -> usize {
        self.lock().calls
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InMemoryState> {
        // A panic while holding this lock can only come from a test; its state is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl EventQueue for InMemoryEventQueue {
    fn max_inline_body_bytes(&self) -> usize {
        self.max_inline_body_bytes
    }

    async fn enqueue(&self, event: &QueuedEvent) -> anyhow::Result<()> {
        let mut state = self.lock();
        state.calls += 1;
        if state.unreachable {
            anyhow::bail!("queue unreachable");
        }
        state.messages.push(event.clone());
        Ok(())
    }
}
