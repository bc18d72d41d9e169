//! The meter reporter: the run (generic over its store and meter) and nothing else; `main.rs`
//! wires it.

pub mod handler;
