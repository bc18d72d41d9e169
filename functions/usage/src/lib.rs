//! The usage function: the handler (generic over its store) and nothing else; `main.rs` wires it.

pub mod handler;
