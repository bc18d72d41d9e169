//! Reconciliation: the run (generic over its store and the meter) and nothing else; `main.rs`
//! wires it.

pub mod handler;
