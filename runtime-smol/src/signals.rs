//! Process signals: SIGTERM/SIGINT begin a graceful shutdown, SIGHUP reloads (see
//! `reload.rs`).

use std::future::Future;
use std::io;

use async_signal::{Signal, Signals};
use smol::stream::StreamExt;

/// A future that resolves on the first SIGTERM or SIGINT (installing the handlers now).
pub fn terminate() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut signals = Signals::new([Signal::Term, Signal::Int])?;
    Ok(async move {
        match signals.next().await {
            Some(Ok(signal)) => tracing::info!(?signal, "signal received: shutting down"),
            Some(Err(err)) => {
                tracing::error!(error = %err, "waiting for signals failed: shutting down")
            }
            None => tracing::error!("signal stream ended: shutting down"),
        }
    })
}

/// Installs the SIGHUP handler (as early as possible: SIGHUP's default action kills).
pub(crate) fn hangups() -> Option<Signals> {
    match Signals::new([Signal::Hup]) {
        Ok(signals) => Some(signals),
        Err(err) => {
            tracing::warn!(error = %err, "cannot handle SIGHUP: reload disabled");
            None
        }
    }
}
