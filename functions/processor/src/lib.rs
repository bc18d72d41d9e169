//! The Stripe event processor.

pub mod config;
pub mod handler;
