//! The Stripe webhook intake function.

pub mod config;
pub mod handler;
