//! The lean event envelope: only the fields the intake needs, read without copying the body.
//!
//! Stripe adds fields to events with every API version; unknown fields are skipped, never errors.

use std::borrow::Cow;

use serde::Deserialize;

use crate::ids::{IdError, StripeEventId, StripeObjectId};

/// Event types are short dotted names (`invoice.payment_failed`); anything else is not Stripe's.
pub const MAX_EVENT_TYPE_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventEnvelope {
    pub id: StripeEventId,
    pub event_type: String,
    /// Unix seconds when Stripe created the event: the ordering key for the state it carries.
    pub created: i64,
    pub livemode: bool,
    pub api_version: Option<String>,
    /// The connected account, for Connect events.
    pub account: Option<String>,
    pub object: ObjectRef,
}

/// `data.object`, reduced to what routing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    pub id: StripeObjectId,
    pub object: String,
    pub customer: Option<StripeObjectId>,
}

impl EventEnvelope {
    /// The FIFO message group: one customer's events stay in order; an event without a customer
    /// (a customer event itself, a product, a meter) is grouped by its own object.
    pub fn message_group(&self) -> &StripeObjectId {
        self.object.customer.as_ref().unwrap_or(&self.object.id)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the body is not a JSON event object: {0}")]
    NotJson(String),
    #[error("the event has no `{0}`")]
    Missing(&'static str),
    #[error("the event's `{field}` is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "type")]
    event_type: Option<Cow<'a, str>>,
    created: Option<i64>,
    livemode: Option<bool>,
    #[serde(borrow)]
    api_version: Option<Cow<'a, str>>,
    #[serde(borrow)]
    account: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: Option<RawData<'a>>,
}

#[derive(Deserialize)]
struct RawData<'a> {
    #[serde(borrow)]
    object: Option<RawObject<'a>>,
}

#[derive(Deserialize)]
struct RawObject<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    object: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    customer: Option<RawCustomer<'a>>,
}

/// `customer` is an id, or the whole customer when the sender expanded it.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawCustomer<'a> {
    Id(#[serde(borrow)] Cow<'a, str>),
    Expanded {
        #[serde(borrow)]
        id: Cow<'a, str>,
    },
}

impl EventEnvelope {
    pub fn parse(body: &[u8]) -> Result<Self, EnvelopeError> {
        let raw: RawEnvelope<'_> = serde_json::from_slice(body).map_err(not_json)?;

        let id = raw.id.ok_or(EnvelopeError::Missing("id"))?;
        let id = StripeEventId::parse(&id).map_err(|e| invalid("id", e))?;
        let event_type = raw.event_type.ok_or(EnvelopeError::Missing("type"))?;
        validate_event_type(&event_type)?;
        let created = raw.created.ok_or(EnvelopeError::Missing("created"))?;
        let livemode = raw.livemode.ok_or(EnvelopeError::Missing("livemode"))?;
        let object = raw
            .data
            .ok_or(EnvelopeError::Missing("data"))?
            .object
            .ok_or(EnvelopeError::Missing("data.object"))?;
        let object_id = object.id.ok_or(EnvelopeError::Missing("data.object.id"))?;
        let object_id =
            StripeObjectId::parse(&object_id).map_err(|e| invalid("data.object.id", e))?;
        let object_kind = object
            .object
            .ok_or(EnvelopeError::Missing("data.object.object"))?
            .into_owned();
        let customer = match object.customer {
            None => None,
            Some(RawCustomer::Id(c) | RawCustomer::Expanded { id: c }) => {
                Some(StripeObjectId::parse(&c).map_err(|e| invalid("data.object.customer", e))?)
            }
        };

        Ok(Self {
            id,
            event_type: event_type.into_owned(),
            created,
            livemode,
            api_version: raw.api_version.map(Cow::into_owned),
            account: raw.account.map(Cow::into_owned),
            object: ObjectRef {
                id: object_id,
                object: object_kind,
                customer,
            },
        })
    }
}

/// Says what is wrong and where, without quoting the body: serde's messages can carry its values,
/// and a payload must not reach a log or a response through an error.
fn not_json(e: serde_json::Error) -> EnvelopeError {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Syntax => "malformed JSON",
        Category::Eof => "truncated JSON",
        Category::Data => "a known field has the wrong type, or the body is not an object",
        Category::Io => "unreadable input",
    };
    EnvelopeError::NotJson(format!("{what} at line {} column {}", e.line(), e.column()))
}

fn invalid(field: &'static str, e: IdError) -> EnvelopeError {
    EnvelopeError::Invalid {
        field,
        reason: e.to_string(),
    }
}

fn validate_event_type(t: &str) -> Result<(), EnvelopeError> {
    let ok = !t.is_empty()
        && t.len() <= MAX_EVENT_TYPE_LEN
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(EnvelopeError::Invalid {
            field: "type",
            reason: format!(
                "expected at most {MAX_EVENT_TYPE_LEN} characters of a-z, 0-9, `.` and `_`"
            ),
        })
    }
}
