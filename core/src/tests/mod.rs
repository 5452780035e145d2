//! Tests of the engine as a whole, driven through an in-memory harness.

mod connection;
mod harness;
mod http2_session;
mod linger;
mod properties;
mod reconfigure;
mod rfc9112;
mod table;
mod workers;

/// The start of a test's virtual time. An `Instant` can only be had from the clock, so the
/// tests take their base instant here, in one place; the engine never reads the clock.
pub(crate) fn epoch() -> std::time::Instant {
    std::time::Instant::now()
}
