//! What a runtime does with the engine's reports — access records, exchange stats, upstream
//! faults: count them in the metrics and write the log lines. The same in every runtime.

use std::time::{Instant, SystemTime};

use mxgate_core::{Config, Output};

use super::health::HealthReporter;
use super::metrics::Metrics;
use super::{access_log, logging};

/// Counts and logs `report` (an `AccessLog`, `ExchangeDone` or `UpstreamFault` output;
/// any other output is not a report and is ignored). An upstream fault also counts toward
/// the backend's passive ejection (`health`).
pub fn handle(config: &Config, metrics: &Metrics, health: &HealthReporter, report: Output) {
    match report {
        Output::AccessLog(record) => {
            metrics.record(&record);
            if let Some(line) =
                access_log::format(config, &record, Instant::now(), SystemTime::now())
            {
                logging::access(&line);
            }
        }
        Output::ExchangeDone(stats) => metrics.count_exchange(
            stats.listener(),
            stats.pool(),
            stats.status(),
            stats.upstream_duration(),
        ),
        Output::UpstreamFault {
            pool,
            backend,
            fault,
        } => {
            logging::upstream_fault(config, pool, backend, fault);
            health.answer_failed(pool, backend);
        }
        Output::ToClient(_)
        | Output::ToUpstream(_)
        | Output::ConnectUpstream { .. }
        | Output::ReleaseUpstream { .. }
        | Output::CloseClient => {}
    }
}
