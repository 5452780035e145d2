//! Process signals: SIGTERM/SIGINT begin a graceful shutdown, SIGHUP reloads certificates.

use std::future::Future;
use std::io;
use std::sync::Arc;

use async_signal::{Signal, Signals};
use mxgate_std::support::tls::Certificates;
use smol::channel::Receiver;
use smol::future;
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
            tracing::warn!(error = %err, "cannot handle SIGHUP: certificate reload disabled");
            None
        }
    }
}

/// Reloads certificates on each SIGHUP until shutdown begins. Runs even without TLS so
/// that SIGHUP never kills the process.
pub(crate) async fn reload_on_hangup(
    signals: Option<Signals>,
    certs: Option<Arc<Certificates>>,
    shutdown: Receiver<()>,
) {
    let Some(mut signals) = signals else {
        return;
    };
    loop {
        let next = future::or(async { Some(signals.next().await) }, async {
            let _ = shutdown.recv().await;
            None
        })
        .await;
        match next {
            None | Some(None) => return,
            Some(Some(Err(err))) => {
                tracing::warn!(error = %err, "waiting for SIGHUP failed");
                return;
            }
            Some(Some(Ok(_))) => match &certs {
                None => tracing::info!("SIGHUP: no TLS listener, nothing to reload"),
                Some(certs) => {
                    // File reads are blocking: keep them off the event loop.
                    let certs = certs.clone();
                    match smol::unblock(move || certs.reload()).await {
                        Ok(()) => tracing::info!("SIGHUP: certificates reloaded"),
                        Err(err) => tracing::error!(
                            error = %err,
                            "SIGHUP: certificate reload failed; still serving the previous certificates"
                        ),
                    }
                }
            },
        }
    }
}
