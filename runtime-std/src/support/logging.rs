//! Logging setup: diagnostics go to stderr through an `RUST_LOG`-style filter (default
//! `info`); access-log lines (target [`ACCESS_TARGET`]) go to stdout bare, one per line,
//! so that log tools can parse them.

use std::fmt;
use std::io::IsTerminal;

use mxgate_core::{Config, PoolId, UpstreamFault};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{filter_fn, EnvFilter, FilterExt, LevelFilter};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// The `tracing` target of access-log lines. They are not subject to `RUST_LOG`; the
/// configuration's `access_log = "off"` turns them off.
pub const ACCESS_TARGET: &str = "mxgate::access";

/// Installs the global subscriber. Harmless when one is already installed (tests).
pub fn init() {
    let filter = EnvFilter::builder()
        .with_default_directive(LevelFilter::INFO.into())
        .from_env_lossy();
    let diagnostics = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter.and(filter_fn(|meta| meta.target() != ACCESS_TARGET)));
    let access = tracing_subscriber::fmt::layer()
        .event_format(MessageOnly)
        .with_writer(std::io::stdout)
        .with_filter(filter_fn(|meta| meta.target() == ACCESS_TARGET));
    let _ = tracing_subscriber::registry()
        .with(diagnostics)
        .with(access)
        .try_init();
}

/// Writes one access-log line.
pub fn access(line: &str) {
    tracing::info!(target: ACCESS_TARGET, "{line}");
}

/// Logs an upstream answer the engine could not pass on ([`mxgate_core::Output::UpstreamFault`]):
/// which pool and backend, and what was wrong.
pub fn upstream_fault(config: &Config, pool: PoolId, backend: usize, fault: UpstreamFault) {
    let pool = config.pools.get(pool);
    let name = pool.map_or("?", |p| p.name.as_str());
    let backend = pool
        .and_then(|p| p.backends.get(backend))
        .map(|b| b.authority())
        .unwrap_or_default();
    tracing::warn!(pool = name, backend = %backend, "upstream answer not passed on: {fault}");
}

/// Formats an event as its message alone.
struct MessageOnly;

impl<S, N> FormatEvent<S, N> for MessageOnly
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut visitor = Message {
            writer: writer.by_ref(),
            result: Ok(()),
        };
        event.record(&mut visitor);
        visitor.result?;
        writeln!(writer)
    }
}

struct Message<'a> {
    writer: Writer<'a>,
    result: fmt::Result,
}

impl Visit for Message<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.result = write!(self.writer, "{value:?}");
        }
    }
}
