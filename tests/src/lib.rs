//! Shared helpers for the end-to-end tests.

pub mod fuzz;
pub mod harness;
pub mod offsets;
pub mod sandbox;
pub mod watchdog;
