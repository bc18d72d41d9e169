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

use crate::ids::{StripeEventId, StripeObjectId};

mod sqs;

pub use sqs::SqsEventQueue;

/// SQS's default (and moto's) limit on a message, attributes included.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 256 * 1024;

/// Room kept for the message attributes; ids and event types are bounded well below it.
pub(crate) const ATTRIBUTE_ALLOWANCE: usize = 1024;

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
    pub fn body(&self) -> std::borrow::Cow<'_, str> {
        match &self.payload {
            EventPayload::Inline(raw) => raw.into(),
            EventPayload::Reference => serde_json::json!({
                "id": self.event_id.as_str(),
                "object": "event",
                "type": self.event_type,
            })
            .to_string()
            .into(),
        }
    }
}

/// Where verified events go. One call per event; duplicates of an event id collapse.
pub trait EventQueue {
    /// The largest raw event body that can travel inline.
    fn max_inline_body_bytes(&self) -> usize;

    fn enqueue(&self, event: &QueuedEvent) -> impl Future<Output = anyhow::Result<()>> + Send;
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
