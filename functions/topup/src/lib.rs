//! Auto top-up: the handler (generic over its store and Stripe) and the stream records it
//! reads; `main.rs` wires them.

pub mod handler;
pub mod stream;
