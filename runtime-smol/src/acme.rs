//! Certificates by ACME: obtains the certificate for `[acme] names` from the ACME server,
//! keeps it (and the account key) in `state_dir`, installs it in the served
//! [`Certificates`] (the same generation swap SIGHUP uses), and renews it in the
//! background at two thirds of its lifetime. The protocol is `rustls-acme`'s; this file
//! connects it to mxgate: the disk store, the challenge answers (TLS-ALPN-01 in the TLS
//! resolver, HTTP-01 through the engine's plain listeners), logs, metrics, and retry
//! jitter. An ACME server that cannot be reached never stops the current certificate
//! from being served.

use std::fmt::Debug;
use std::io::{self, BufReader};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use async_trait::async_trait;
use futures_rustls::rustls::{ClientConfig, RootCertStore};
use mxgate_core::config::{AcmeChallenge, AcmeSettings, KeyAuthorizations};
use mxgate_std::support::acme_store::{self, AcmeStore, Stored};
use mxgate_std::support::tls::{self, Certificates};
use rustls_acme::{
    AccountCache, AcmeConfig, AcmeState, CertCache, EventError, EventOk, ResolvesServerCertAcme,
    UseChallenge,
};
use smol::channel::Receiver;
use smol::stream::StreamExt;
use smol::{future, Timer};

use crate::Shared;

/// Longest wait between two failed orders (the crate's own back-off grows to 2^16 s).
const MAX_BACKOFF_EXPONENT: u32 = 16;

/// Failed orders in a row after which the next listed challenge kind is tried.
const SWITCH_KIND_AFTER: u32 = 3;

/// A prepared ACME client, not running yet.
pub(crate) struct Acme {
    settings: AcmeSettings,
    /// For the ACME server's HTTPS with `ca_root`; `None`: the Web PKI roots.
    client: Option<Arc<ClientConfig>>,
    latest: Arc<Mutex<Option<Vec<u8>>>>,
    certs: Arc<Certificates>,
}

/// Serves a valid stored certificate at once, then prepares the client; fails on an
/// unusable `ca_root`.
pub(crate) fn prepare(settings: &AcmeSettings, certs: &Arc<Certificates>) -> anyhow::Result<Acme> {
    let provider = tls::provider();
    match acme_store::load(settings, &provider) {
        Ok(Some(stored)) if stored.not_after > unix_now() => {
            log_installed("stored certificate served", settings, &stored);
            certs.install(stored.key.clone());
        }
        Ok(Some(stored)) => tracing::warn!(
            names = %settings.names.join(", "),
            expired = stored.not_after,
            "the stored certificate has expired: ordering a new one"
        ),
        Ok(None) => {}
        Err(err) => {
            tracing::warn!(error = %err, "the stored certificate is unusable: ordering a new one")
        }
    }
    let client = match &settings.ca_root {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot read [acme] ca_root {}", path.display()))?;
            for cert in rustls_pemfile::certs(&mut BufReader::new(file)) {
                let cert = cert.with_context(|| format!("[acme] ca_root {}", path.display()))?;
                roots
                    .add(cert)
                    .with_context(|| format!("[acme] ca_root {}", path.display()))?;
            }
            if roots.is_empty() {
                anyhow::bail!(
                    "[acme] ca_root {}: no PEM certificate found",
                    path.display()
                );
            }
            let client = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .context("ACME client TLS")?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(Arc::new(client))
        }
        None => None,
    };
    Ok(Acme {
        settings: settings.clone(),
        client,
        latest: Arc::new(Mutex::new(None)),
        certs: certs.clone(),
    })
}

impl Acme {
    /// A client answering `kind` challenges, its resolvers installed where handshakes and
    /// the engine's plain listeners look (replacing a previous client's). It starts by
    /// loading the stored account and certificate.
    fn state(&self, kind: AcmeChallenge) -> AcmeState<io::Error, io::Error> {
        let settings = &self.settings;
        let base = match &self.client {
            Some(client) => {
                AcmeConfig::new_with_client_config(settings.names.clone(), client.clone())
            }
            // The Web PKI roots (webpki-roots), as for any public ACME server.
            None => AcmeConfig::new_with_provider(settings.names.clone(), tls::provider()),
        };
        let mut config = base
            .directory(&settings.directory)
            .challenge_type(match kind {
                AcmeChallenge::Http01 => UseChallenge::Http01,
                AcmeChallenge::TlsAlpn01 => UseChallenge::TlsAlpn01,
            });
        if let Some(email) = &settings.email {
            config = config.contact_push(format!("mailto:{email}"));
        }
        let state = config
            .cache(DiskCache {
                store: AcmeStore::for_settings(settings),
                names: settings.names.clone(),
                latest: self.latest.clone(),
            })
            .state();
        let resolver = state.resolver();
        self.certs.set_challenge_resolver(resolver.clone());
        settings.http01.install(Arc::new(Http01(resolver)));
        state
    }

    /// Drives orders and renewals until shutdown begins. After [`SWITCH_KIND_AFTER`]
    /// failed orders in a row it starts over with the next listed challenge kind.
    pub(crate) async fn run(self, shared: &Shared, shutdown: Receiver<()>) {
        let kinds = if self.settings.challenges.is_empty() {
            vec![AcmeChallenge::TlsAlpn01]
        } else {
            self.settings.challenges.clone()
        };
        let mut kind = 0;
        let mut state = self.state(kinds[kind]);
        let Acme {
            settings,
            latest,
            certs,
            ..
        } = &self;
        let names = settings.names.join(", ");
        let mut challenge = kinds[kind].as_str();
        if certs.has_default() {
            tracing::info!(names = %names, "certificate by ACME: renewal runs in the background");
        } else {
            tracing::warn!(
                names = %names,
                directory = %settings.directory,
                challenge,
                "waiting for the first certificate by ACME: until it arrives, TLS handshakes for these names fail"
            );
        }
        let mut failures: u32 = 0;
        let mut failures_with_kind: u32 = 0;
        loop {
            let event = future::or(async { state.next().await }, async {
                let _ = shutdown.recv().await;
                None
            })
            .await;
            let Some(event) = event else {
                return;
            };
            match event {
                Ok(EventOk::DeployedCachedCert) => install(settings, certs, latest, shared),
                Ok(EventOk::CertCacheStore) => {
                    failures = 0;
                    failures_with_kind = 0;
                    install(settings, certs, latest, shared);
                }
                Ok(EventOk::DeployedNewCert) => {
                    tracing::info!(names = %names, "certificate obtained by ACME");
                }
                Ok(EventOk::AccountCacheStore) => {
                    tracing::debug!(names = %names, "ACME account key stored");
                }
                Err(EventError::CertCacheStore(err)) => {
                    tracing::error!(names = %names, error = %err, "cannot store the new certificate in the state directory; serving it anyway");
                    failures = 0;
                    failures_with_kind = 0;
                    install(settings, certs, latest, shared);
                }
                Err(EventError::AccountCacheStore(err)) => {
                    tracing::error!(names = %names, error = %err, "cannot store the ACME account key in the state directory");
                }
                Err(EventError::Order(err)) => {
                    // The crate waits 2^n seconds before the next order; a random extra of up
                    // to half of that keeps many servers from retrying in step.
                    let base = 1u64 << failures.min(MAX_BACKOFF_EXPONENT);
                    failures = failures.saturating_add(1);
                    let wait = Duration::from_millis(base * 1000 + fastrand::u64(0..=base * 500));
                    tracing::error!(
                        names = %names,
                        directory = %settings.directory,
                        challenge,
                        retry_in = ?wait,
                        serving = if certs.has_default() { "the current certificate" } else { "nothing yet for these names" },
                        "ACME order failed: {}",
                        problem(&err.to_string())
                    );
                    let stop = future::or(
                        async {
                            Timer::after(wait).await;
                            false
                        },
                        async {
                            let _ = shutdown.recv().await;
                            true
                        },
                    )
                    .await;
                    if stop {
                        return;
                    }
                    failures_with_kind += 1;
                    if failures_with_kind >= SWITCH_KIND_AFTER && kinds.len() > 1 {
                        kind = (kind + 1) % kinds.len();
                        failures_with_kind = 0;
                        tracing::warn!(
                            names = %names,
                            "{SWITCH_KIND_AFTER} failed ACME orders with {challenge}: trying {}",
                            kinds[kind].as_str()
                        );
                        challenge = kinds[kind].as_str();
                        state = self.state(kinds[kind]);
                    }
                }
                Err(err) => {
                    tracing::error!(names = %names, error = %err, "ACME state error");
                }
            }
        }
    }
}

/// An error text with the ACME problem document (RFC 8555 §6.7) it carries shown as
/// compact JSON (the crate quotes the response body).
fn problem(error: &str) -> String {
    let (Some(start), Some(end)) = (error.find("\"{"), error.rfind("}\"")) else {
        return error.to_string();
    };
    let quoted = &error[start..end + 2];
    let document = serde_json::from_str::<String>(quoted)
        .ok()
        .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok());
    match document {
        Some(document) => format!("{}{document}{}", &error[..start], &error[end + 2..]),
        None => error.to_string(),
    }
}

/// Installs the certificate last loaded or obtained, if it parses.
fn install(
    settings: &AcmeSettings,
    certs: &Certificates,
    latest: &Mutex<Option<Vec<u8>>>,
    shared: &Shared,
) {
    let pem = latest.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let Some(pem) = pem else {
        return;
    };
    let path = AcmeStore::for_settings(settings).certificate_path(&settings.names);
    match acme_store::parse_stored(&path, &pem, &tls::provider()) {
        Ok(stored) if stored.not_after <= unix_now() => {
            tracing::warn!(names = %settings.names.join(", "), "the stored certificate has expired: not served");
        }
        Ok(stored) => {
            certs.install(stored.key.clone());
            let metrics = &shared.current().metrics;
            for name in &settings.names {
                metrics.certificate_expiry(name, stored.not_after);
            }
            log_installed("certificate installed", settings, &stored);
        }
        Err(err) => tracing::error!(error = %err, "the certificate from ACME is unusable"),
    }
}

fn log_installed(what: &str, settings: &AcmeSettings, stored: &Stored) {
    let now = unix_now();
    tracing::info!(
        names = %settings.names.join(", "),
        expires_in_days = format!("{:.1}", (stored.not_after - now) as f64 / 86_400.0),
        renew_in_days = format!("{:.1}", (stored.renew_at() - now).max(0) as f64 / 86_400.0),
        "{what}"
    );
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// HTTP-01 answers for the engine, from the client's pending challenge.
struct Http01(Arc<ResolvesServerCertAcme>);

impl KeyAuthorizations for Http01 {
    fn key_authorization(&self, token: &str) -> Option<String> {
        self.0.get_http_01_key_auth(token)
    }
}

/// `rustls-acme`'s cache on [`AcmeStore`]: private files written atomically. Remembers the
/// last certificate it loaded or was given, for [`install`].
struct DiskCache {
    store: AcmeStore,
    names: Vec<String>,
    latest: Arc<Mutex<Option<Vec<u8>>>>,
}

impl DiskCache {
    async fn read(&self, path: std::path::PathBuf) -> io::Result<Option<Vec<u8>>> {
        let store = self.store.clone();
        smol::unblock(move || store.read(&path)).await
    }

    async fn write(&self, path: std::path::PathBuf, bytes: Vec<u8>) -> io::Result<()> {
        let store = self.store.clone();
        smol::unblock(move || store.write_private(&path, &bytes)).await
    }
}

#[async_trait]
impl CertCache for DiskCache {
    type EC = io::Error;

    async fn load_cert(
        &self,
        _domains: &[String],
        _directory: &str,
    ) -> io::Result<Option<Vec<u8>>> {
        let pem = self.read(self.store.certificate_path(&self.names)).await?;
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = pem.clone();
        Ok(pem)
    }

    async fn store_cert(
        &self,
        _domains: &[String],
        _directory: &str,
        cert: &[u8],
    ) -> io::Result<()> {
        *self.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(cert.to_vec());
        self.write(self.store.certificate_path(&self.names), cert.to_vec())
            .await
    }
}

#[async_trait]
impl AccountCache for DiskCache {
    type EA = io::Error;

    async fn load_account(
        &self,
        _contact: &[String],
        _directory: &str,
    ) -> io::Result<Option<Vec<u8>>> {
        self.read(self.store.account_path()).await
    }

    async fn store_account(
        &self,
        _contact: &[String],
        _directory: &str,
        account: &[u8],
    ) -> io::Result<()> {
        self.write(self.store.account_path(), account.to_vec())
            .await
    }
}

impl Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme")
            .field("names", &self.settings.names)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn problem_documents_are_shown_as_json() {
        let error = r#"acme error: http request error: non 2xx http status: 400 "{\n   \"type\": \"urn:ietf:params:acme:error:badNonce\",\n   \"status\": 400\n}""#;
        assert_eq!(
            super::problem(error),
            r#"acme error: http request error: non 2xx http status: 400 {"status":400,"type":"urn:ietf:params:acme:error:badNonce"}"#
        );
        assert_eq!(super::problem("io error: refused"), "io error: refused");
    }
}
