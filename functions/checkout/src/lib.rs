//! Checkout: the handler (generic over the billing store and its Stripe port) and that port;
//! `main.rs` wires them.

pub mod handler;
pub mod stripe;
