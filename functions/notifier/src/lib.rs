//! The notifier: delivers each outbox entry the table's stream announces, as an EventBridge
//! event and, for a person, an email. `main.rs` wires it.
//!
//! - [`stream`]: the lean shape of a DynamoDB stream batch and the partial-failure answer.
//! - [`bus`], [`mail`]: the two ways out, each a small trait with its AWS and fake adapters.
//! - [`handler`]: one batch, record by record, generic over the store, the bus and the mailer.

pub mod bus;
pub mod handler;
pub mod mail;
pub mod stream;
