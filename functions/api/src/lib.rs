//! The app-facing HTTP API.

pub mod handler;
