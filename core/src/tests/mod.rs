//! Tests of the engine as a whole, driven through an in-memory harness.

mod connection;
mod harness;
mod properties;
mod table;
mod workers;
