//! The library every function stands on.
//!
//! - [`ids`]: identifiers that can only exist in a valid form.
//! - [`stripe`]: webhook signature verification, the lean event envelope and the lean objects
//!   the processor acts on (pure, no I/O).
//! - [`catalog`]: plans, credit packs and the rate card, from `catalog.toml`.
//! - [`usage`]: the usage function's rules: units, burn-down, holds, periods (pure, no I/O).
//! - [`metering`]: overage to Stripe's meter exactly once: claim, then send (pure, no I/O).
//! - [`notifications`]: outbox entries as events and emails (pure, no I/O).
//! - [`queue`]: the event queue port and its SQS / in-memory adapters.
//! - [`aws`]: SDK configuration, and the one signed call the webhook makes without the SDK.
//! - [`config`], [`secrets`], [`telemetry`]: what a function does once, at cold start.

pub mod aws;
pub mod billing;
pub mod catalog;
pub mod clock;
pub mod config;
pub mod http;
pub mod ids;
pub mod metering;
pub mod notifications;
pub mod queue;
pub mod retry;
pub mod secrets;
pub mod store;
pub mod stream;
pub mod stripe;
pub mod telemetry;
pub mod usage;
