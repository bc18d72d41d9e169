//! The Stripe objects the processor acts on, reduced to the fields it uses.
//!
//! Every struct tolerates unknown fields and missing optional ones, so API-version drift adds
//! nothing but ignored keys. Shapes follow Stripe's current API: a subscription's billing period
//! lives on its items; an invoice names its subscription under `parent.subscription_details`.

use std::collections::HashMap;

use serde::Deserialize;

use crate::ids::{StripeEventId, StripeObjectId};
use crate::stripe::envelope::MAX_EVENT_TYPE_LEN;

/// An id, or the expanded object carrying it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Expandable {
    Id(String),
    Object { id: String },
}

impl Expandable {
    pub fn id(&self) -> &str {
        match self {
            Expandable::Id(id) | Expandable::Object { id } => id,
        }
    }
}

fn id_of(e: &Option<Expandable>) -> Option<&str> {
    e.as_ref().map(Expandable::id)
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CheckoutSession {
    pub id: String,
    #[serde(default)]
    pub customer: Option<Expandable>,
    #[serde(default)]
    pub client_reference_id: Option<String>,
    #[serde(default)]
    pub metadata: Option<HashMap<String, String>>,
    pub mode: String,
    pub payment_status: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub payment_intent: Option<Expandable>,
    #[serde(default)]
    pub subscription: Option<Expandable>,
    #[serde(default)]
    pub amount_total: Option<i64>,
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub customer_details: Option<CustomerDetails>,
}

/// What the customer entered at checkout.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CustomerDetails {
    #[serde(default)]
    pub email: Option<String>,
}

impl CheckoutSession {
    pub fn customer_id(&self) -> Option<&str> {
        id_of(&self.customer)
    }
    pub fn payment_intent_id(&self) -> Option<&str> {
        id_of(&self.payment_intent)
    }
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref()?.get(key).map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub customer: Expandable,
    pub status: String,
    #[serde(default)]
    pub cancel_at_period_end: bool,
    #[serde(default)]
    pub metadata: Option<HashMap<String, String>>,
    pub items: List<SubscriptionItem>,
    /// The card Stripe charges this subscription's invoices to before the customer's default.
    #[serde(default)]
    pub default_payment_method: Option<Expandable>,
}

impl Subscription {
    pub fn default_payment_method(&self) -> Option<&str> {
        id_of(&self.default_payment_method)
    }

    pub fn price_ids(&self) -> impl Iterator<Item = &str> {
        self.items.data.iter().map(|i| i.price.id.as_str())
    }

    pub fn prices(&self) -> impl Iterator<Item = &PriceRef> {
        self.items.data.iter().map(|i| &i.price)
    }

    /// The billing period: every item of a subscription shares it (Stripe keeps it per item).
    pub fn current_period(&self) -> Option<(i64, i64)> {
        let item = self.items.data.first()?;
        Some((item.current_period_start?, item.current_period_end?))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct List<T> {
    pub data: Vec<T>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SubscriptionItem {
    pub price: PriceRef,
    #[serde(default)]
    pub current_period_start: Option<i64>,
    #[serde(default)]
    pub current_period_end: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PriceRef {
    pub id: String,
    /// What the catalog names the price by (the same in test and live mode).
    #[serde(default)]
    pub lookup_key: Option<String>,
    /// A deal's terms (`plan`, `included_units`) when the price was made for one customer.
    #[serde(default)]
    pub metadata: Option<HashMap<String, String>>,
}

impl PriceRef {
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref()?.get(key).map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Invoice {
    pub id: String,
    #[serde(default)]
    pub customer: Option<Expandable>,
    #[serde(default)]
    pub number: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    pub amount_due: i64,
    pub amount_paid: i64,
    pub amount_remaining: i64,
    pub currency: String,
    #[serde(default)]
    pub hosted_invoice_url: Option<String>,
    #[serde(default)]
    pub invoice_pdf: Option<String>,
    pub period_start: i64,
    pub period_end: i64,
    #[serde(default)]
    pub attempt_count: u32,
    #[serde(default)]
    pub next_payment_attempt: Option<i64>,
    #[serde(default)]
    pub parent: Option<InvoiceParent>,
}

impl Invoice {
    pub fn customer_id(&self) -> Option<&str> {
        id_of(&self.customer)
    }
    pub fn subscription_id(&self) -> Option<&str> {
        id_of(
            &self
                .parent
                .as_ref()?
                .subscription_details
                .as_ref()?
                .subscription,
        )
    }
    /// The subscription's metadata as it was when the invoice was made.
    pub fn subscription_metadata(&self, key: &str) -> Option<&str> {
        let details = self.parent.as_ref()?.subscription_details.as_ref()?;
        details.metadata.as_ref()?.get(key).map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InvoiceParent {
    #[serde(default)]
    pub subscription_details: Option<SubscriptionDetails>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SubscriptionDetails {
    #[serde(default)]
    pub subscription: Option<Expandable>,
    #[serde(default)]
    pub metadata: Option<HashMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Customer {
    pub id: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub metadata: Option<HashMap<String, String>>,
    #[serde(default)]
    pub deleted: Option<bool>,
    #[serde(default)]
    pub invoice_settings: Option<InvoiceSettings>,
}

impl Customer {
    /// The card the customer chose as default (what the portal's "update payment method" sets).
    pub fn default_payment_method(&self) -> Option<&str> {
        id_of(&self.invoice_settings.as_ref()?.default_payment_method)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct InvoiceSettings {
    #[serde(default)]
    pub default_payment_method: Option<Expandable>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Charge {
    pub id: String,
    #[serde(default)]
    pub customer: Option<Expandable>,
    #[serde(default)]
    pub payment_intent: Option<Expandable>,
    pub amount: i64,
    pub amount_refunded: i64,
    pub currency: String,
    #[serde(default)]
    pub metadata: Option<HashMap<String, String>>,
}

impl Charge {
    pub fn customer_id(&self) -> Option<&str> {
        id_of(&self.customer)
    }
    pub fn payment_intent_id(&self) -> Option<&str> {
        id_of(&self.payment_intent)
    }
}

/// A payment made outside Checkout: the auto top-up's off-session payments.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PaymentIntent {
    pub id: String,
    #[serde(default)]
    pub customer: Option<Expandable>,
    pub amount_received: i64,
    pub currency: String,
    #[serde(default)]
    pub metadata: Option<HashMap<String, String>>,
}

impl PaymentIntent {
    pub fn customer_id(&self) -> Option<&str> {
        id_of(&self.customer)
    }

    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref()?.get(key).map(String::as_str)
    }
}

/// The event types the processor applies: the webhook endpoint enables exactly these
/// (`make stripe-setup` reads this list from here, so the two cannot drift apart).
pub const HANDLED_EVENT_TYPES: [&str; 16] = [
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.created",
    "invoice.finalized",
    "invoice.paid",
    "invoice.payment_failed",
    "invoice.voided",
    "invoice.marked_uncollectible",
    "customer.created",
    "customer.updated",
    "customer.deleted",
    "charge.refunded",
    "payment_intent.succeeded",
];

/// The Stripe API version these shapes are written against: the webhook endpoint is pinned to
/// it, so deliveries keep their shape when the account's default version moves.
pub const STRIPE_API_VERSION: &str = "2026-09-30.endive";

/// What an event is about, for the types the processor acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventData {
    CheckoutCompleted(CheckoutSession),
    CheckoutAsyncPaymentSucceeded(CheckoutSession),
    SubscriptionCreated(Subscription),
    SubscriptionUpdated(Subscription),
    SubscriptionDeleted(Subscription),
    Invoice(InvoiceEvent, Invoice),
    CustomerCreated(Customer),
    CustomerUpdated(Customer),
    CustomerDeleted(Customer),
    ChargeRefunded(Charge),
    PaymentIntentSucceeded(PaymentIntent),
    /// A type this backend does not act on: acknowledged and recorded, never retried.
    Unhandled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceEvent {
    Created,
    Finalized,
    Paid,
    PaymentFailed,
    Voided,
    MarkedUncollectible,
}

/// A whole Stripe event, parsed for the processor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeEvent {
    pub id: StripeEventId,
    pub event_type: String,
    pub created: i64,
    pub livemode: bool,
    pub data: EventData,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the event is not JSON of an event's shape ({0})")]
    Shape(String),
    #[error("the event's `{field}` is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("the `{event_type}` event's object does not have the expected shape ({reason})")]
    Object { event_type: String, reason: String },
}

#[derive(Deserialize)]
struct RawEvent {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    created: i64,
    livemode: bool,
    data: RawData,
}

#[derive(Deserialize)]
struct RawData {
    object: serde_json::Value,
}

fn shape_error(e: &serde_json::Error) -> String {
    // A missing field is named; anything else is described by category and position only,
    // because serde's messages can quote values from the payload.
    let message = e.to_string();
    if message.starts_with("missing field") {
        message
    } else {
        format!(
            "{:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        )
    }
}

impl StripeEvent {
    pub fn parse(raw: &[u8]) -> Result<Self, EventError> {
        let event: RawEvent =
            serde_json::from_slice(raw).map_err(|e| EventError::Shape(shape_error(&e)))?;
        let id = StripeEventId::parse(&event.id).map_err(|e| EventError::Invalid {
            field: "id",
            reason: e.to_string(),
        })?;
        if event.event_type.is_empty() || event.event_type.len() > MAX_EVENT_TYPE_LEN {
            return Err(EventError::Invalid {
                field: "type",
                reason: "empty or too long".into(),
            });
        }
        let object = event.data.object;
        let t = event.event_type.as_str();
        // The list decides: a type the match below knows but the list lacks would never be
        // enabled on the webhook endpoint, so it is not handled here either.
        let handled = HANDLED_EVENT_TYPES.contains(&t);
        let data = match t {
            _ if !handled => EventData::Unhandled,
            "checkout.session.completed" => EventData::CheckoutCompleted(typed(t, object)?),
            "checkout.session.async_payment_succeeded" => {
                EventData::CheckoutAsyncPaymentSucceeded(typed(t, object)?)
            }
            "customer.subscription.created" => EventData::SubscriptionCreated(typed(t, object)?),
            "customer.subscription.updated" => EventData::SubscriptionUpdated(typed(t, object)?),
            "customer.subscription.deleted" => EventData::SubscriptionDeleted(typed(t, object)?),
            "invoice.created" => EventData::Invoice(InvoiceEvent::Created, typed(t, object)?),
            "invoice.finalized" => EventData::Invoice(InvoiceEvent::Finalized, typed(t, object)?),
            "invoice.paid" => EventData::Invoice(InvoiceEvent::Paid, typed(t, object)?),
            "invoice.payment_failed" => {
                EventData::Invoice(InvoiceEvent::PaymentFailed, typed(t, object)?)
            }
            "invoice.voided" => EventData::Invoice(InvoiceEvent::Voided, typed(t, object)?),
            "invoice.marked_uncollectible" => {
                EventData::Invoice(InvoiceEvent::MarkedUncollectible, typed(t, object)?)
            }
            "customer.created" => EventData::CustomerCreated(typed(t, object)?),
            "customer.updated" => EventData::CustomerUpdated(typed(t, object)?),
            "customer.deleted" => EventData::CustomerDeleted(typed(t, object)?),
            "charge.refunded" => EventData::ChargeRefunded(typed(t, object)?),
            "payment_intent.succeeded" => EventData::PaymentIntentSucceeded(typed(t, object)?),
            _ => EventData::Unhandled,
        };
        Ok(Self {
            id,
            event_type: event.event_type,
            created: event.created,
            livemode: event.livemode,
            data,
        })
    }

    /// The Stripe customer the event concerns, where it names one.
    pub fn customer_id(&self) -> Option<&str> {
        match &self.data {
            EventData::CheckoutCompleted(s) | EventData::CheckoutAsyncPaymentSucceeded(s) => {
                s.customer_id()
            }
            EventData::SubscriptionCreated(s)
            | EventData::SubscriptionUpdated(s)
            | EventData::SubscriptionDeleted(s) => Some(s.customer.id()),
            EventData::Invoice(_, i) => i.customer_id(),
            EventData::CustomerCreated(c)
            | EventData::CustomerUpdated(c)
            | EventData::CustomerDeleted(c) => Some(&c.id),
            EventData::ChargeRefunded(c) => c.customer_id(),
            EventData::PaymentIntentSucceeded(p) => p.customer_id(),
            EventData::Unhandled => None,
        }
    }

    /// The object's id, as a validated id, where the event is about one object.
    pub fn object_id(&self) -> Option<StripeObjectId> {
        let id = match &self.data {
            EventData::CheckoutCompleted(s) | EventData::CheckoutAsyncPaymentSucceeded(s) => &s.id,
            EventData::SubscriptionCreated(s)
            | EventData::SubscriptionUpdated(s)
            | EventData::SubscriptionDeleted(s) => &s.id,
            EventData::Invoice(_, i) => &i.id,
            EventData::CustomerCreated(c)
            | EventData::CustomerUpdated(c)
            | EventData::CustomerDeleted(c) => &c.id,
            EventData::ChargeRefunded(c) => &c.id,
            EventData::PaymentIntentSucceeded(p) => &p.id,
            EventData::Unhandled => return None,
        };
        StripeObjectId::parse(id).ok()
    }
}

fn typed<T: for<'de> Deserialize<'de>>(
    event_type: &str,
    object: serde_json::Value,
) -> Result<T, EventError> {
    serde_json::from_value(object).map_err(|e| EventError::Object {
        event_type: event_type.to_owned(),
        reason: shape_error(&e),
    })
}
