//! Tests of the engine as a whole, driven through an in-memory harness.

mod connection;
mod harness;
mod properties;
mod regressions;
mod table;
mod workers;
