//! Usage: what a model call costs in units and what each account may still spend (pure).
//!
//! - [`request`]: the usage function's input, validated field by field.
//! - [`period`]: which billing period a moment belongs to.
//! - [`ledger`]: the burn-down, holds, periods and the notifications they cause.
//! - [`topup`]: when a use claims an automatic credit top-up.

pub mod ledger;
pub mod period;
pub mod request;
pub mod topup;
