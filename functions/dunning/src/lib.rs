//! Dunning: the run (generic over its store and Stripe), its configuration, and nothing else;
//! `main.rs` wires them.

pub mod config;
pub mod handler;
