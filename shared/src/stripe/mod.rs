//! Stripe webhooks, without I/O: signature verification and the lean event envelope.

pub mod api;
pub mod dunning;
pub mod envelope;
pub mod keyed;
pub mod meter;
pub mod objects;
pub mod portal;
pub mod signature;
pub mod topup;

pub use envelope::{EnvelopeError, EventEnvelope};
pub use signature::{SignatureError, WebhookVerifier};
