//! hearth-protocol's integration tests: golden vectors and decoder robustness.

mod fuzz;
mod golden;
