//! TLS server setup: certificates chosen by SNI with a default, a self-signed development
//! certificate when the development configuration names none, the certificate obtained by
//! ACME installed (and renewed) at run time, and reloading (SIGHUP) that keeps the old
//! certificates when the new files are unusable. Installing and reloading swap one
//! generation for the next: handshakes in progress and open connections keep theirs.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use mxgate_core::config::{TlsFiles, TlsSettings};
use mxgate_core::Config;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: no PEM certificate found", path.display())]
    NoCertificate { path: PathBuf },
    #[error("{}: no PEM private key found", path.display())]
    NoKey { path: PathBuf },
    #[error("{} with {}: {source}", cert.display(), key.display())]
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot generate the development certificate: {0}")]
    DevCert(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The crypto provider every TLS object here uses (ring; no process-wide default needed).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The ALPN protocol of TLS-ALPN-01 challenge handshakes (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// One loaded generation of certificates.
#[derive(Debug)]
struct CertSet {
    /// `None` only under ACME before the first certificate: handshakes then fail.
    default: Option<Arc<CertifiedKey>>,
    /// Lower-case exact names.
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` stored as `example.com`: matches exactly one more label.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

/// The server's certificates, swappable at run time. Implements rustls's
/// [`ResolvesServerCert`]: SNI picks a configured certificate, anything else gets the default.
#[derive(Debug)]
pub struct Certificates {
    /// The files, replaced by a configuration reload ([`Certificates::reload_with`]).
    settings: RwLock<TlsSettings>,
    provider: Arc<CryptoProvider>,
    /// The generated development certificate, when no default is configured (kept across reloads).
    dev: Option<Arc<CertifiedKey>>,
    /// Under ACME: the certified names and the TLS-ALPN-01 challenge resolver.
    acme: Option<AcmeMode>,
    current: RwLock<Arc<CertSet>>,
}

struct AcmeMode {
    names: Vec<String>,
    tls_alpn: bool,
    challenges: RwLock<Option<Arc<dyn ResolvesServerCert>>>,
}

impl std::fmt::Debug for AcmeMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeMode")
            .field("names", &self.names)
            .field("tls_alpn", &self.tls_alpn)
            .finish_non_exhaustive()
    }
}

impl Certificates {
    /// Loads every configured certificate, or generates the development certificate when the
    /// configuration names no default (logging a loud warning).
    /// Under ACME there is no default until [`Certificates::install`] gives one.
    pub fn load(config: &Config) -> Result<Arc<Certificates>, TlsError> {
        let provider = provider();
        let acme = config.acme.as_ref().map(|a| AcmeMode {
            names: a.names.clone(),
            tls_alpn: a
                .challenges
                .contains(&mxgate_core::config::AcmeChallenge::TlsAlpn01),
            challenges: RwLock::new(None),
        });
        let dev = match &config.tls.default {
            Some(_) => None,
            None if acme.is_some() => None,
            None => {
                let names = dev_cert_names(&config.server_name);
                tracing::warn!(
                    names = %names.join(", "),
                    "NO TLS CERTIFICATE CONFIGURED: using a freshly generated SELF-SIGNED DEVELOPMENT \
                     certificate. Clients will not trust it. Do not use this in production: set \
                     [tls] cert and key."
                );
                Some(Arc::new(dev_certificate(&names, &provider)?))
            }
        };
        let set = load_set(&config.tls, dev.clone(), acme.is_some(), &provider)?;
        Ok(Arc::new(Certificates {
            settings: RwLock::new(config.tls.clone()),
            provider,
            dev,
            acme,
            current: RwLock::new(Arc::new(set)),
        }))
    }

    /// Re-reads the certificate files. On any error the certificates in use stay as they are
    /// and the error says why. Under ACME the obtained certificate stays the default.
    pub fn reload(&self) -> Result<(), TlsError> {
        let settings = self
            .settings
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        self.reload_with(&settings)
    }

    /// Loads the certificates a reloaded configuration names (`[tls]`, `[[tls.sni]]`) and
    /// serves them from now on; on any error nothing changes. Under ACME the obtained
    /// certificate stays the default (unless the files name one).
    pub fn reload_with(&self, settings: &TlsSettings) -> Result<(), TlsError> {
        let fallback = match &self.acme {
            // Taken below, under the lock, so an install racing this reload is kept.
            Some(_) => None,
            None => self.dev.clone(),
        };
        let mut set = load_set(settings, fallback, self.acme.is_some(), &self.provider)?;
        *self.settings.write().unwrap_or_else(|e| e.into_inner()) = settings.clone();
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        if set.default.is_none() {
            set.default = current.default.clone();
        }
        *current = Arc::new(set);
        Ok(())
    }

    /// Serves `key` as the default certificate from the next handshake on (the ACME task
    /// calls this with each certificate it obtains or finds stored); configured SNI
    /// certificates stay.
    pub fn install(&self, key: Arc<CertifiedKey>) {
        // Under the lock: a reload racing this install keeps the SNI certificates it loaded.
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(CertSet {
            default: Some(key),
            exact: current.exact.clone(),
            wildcard: current.wildcard.clone(),
        });
    }

    /// Whether a default certificate is being served (under ACME: one was installed).
    pub fn has_default(&self) -> bool {
        self.current().default.is_some()
    }

    /// The resolver that answers TLS-ALPN-01 challenge handshakes (set, and replaced when
    /// it starts over, by the ACME task).
    pub fn set_challenge_resolver(&self, resolver: Arc<dyn ResolvesServerCert>) {
        if let Some(acme) = &self.acme {
            *acme.challenges.write().unwrap_or_else(|e| e.into_inner()) = Some(resolver);
        }
    }

    fn current(&self) -> Arc<CertSet> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A rustls server configuration using these certificates: TLS 1.2 and 1.3, no client
    /// certificates, ALPN `h2` then `http/1.1` when `offer_h2` (a listener with `http2`),
    /// else `http/1.1` alone; plus `acme-tls/1` under ACME TLS-ALPN-01. Every configuration
    /// made here resolves certificates through `self`, so reloads and installs reach all.
    pub fn server_config(self: &Arc<Self>, offer_h2: bool) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn_protocols(offer_h2);
        if self.acme.as_ref().is_some_and(|a| a.tls_alpn) {
            // Negotiated only by the ACME server's validation handshakes.
            config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
        }
        Ok(Arc::new(config))
    }

    /// The certificate served for an SNI name (or its absence). Under ACME a name that is
    /// neither certified nor configured gets none (the handshake fails), not a wrong one.
    pub fn select(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let set = self.current();
        let Some(name) = sni else {
            return set.default.clone();
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(key) = set.exact.get(&name) {
            return Some(key.clone());
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(key) = set.wildcard.get(parent) {
                return Some(key.clone());
            }
        }
        match &self.acme {
            Some(acme) if !acme.names.contains(&name) => None,
            _ => set.default.clone(),
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(acme) = &self.acme {
            let challenge = client_hello
                .alpn()
                .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN));
            if challenge {
                let resolver = acme
                    .challenges
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()?;
                return resolver.resolve(client_hello);
            }
        }
        let key = self.select(client_hello.server_name());
        if key.is_none() {
            tracing::debug!(
                sni = client_hello.server_name(),
                "no certificate for this name (yet): handshake refused"
            );
        }
        key
    }
}

/// ALPN `h2` (RFC 9113 §3.2), in the server's order of preference.
pub const H2_ALPN: &[u8] = b"h2";
/// ALPN `http/1.1`.
pub const HTTP11_ALPN: &[u8] = b"http/1.1";

/// The HTTP protocols a TLS listener offers, preferred first (rustls picks the first of
/// ours the client also offers).
fn alpn_protocols(offer_h2: bool) -> Vec<Vec<u8>> {
    let mut protocols = Vec::with_capacity(3);
    if offer_h2 {
        protocols.push(H2_ALPN.to_vec());
    }
    protocols.push(HTTP11_ALPN.to_vec());
    protocols
}

/// Loads the configured files; `fallback` is the default when none is configured (the
/// development certificate, or under ACME the obtained one, `None` before it exists).
fn load_set(
    settings: &TlsSettings,
    fallback: Option<Arc<CertifiedKey>>,
    acme: bool,
    provider: &CryptoProvider,
) -> Result<CertSet, TlsError> {
    let default = match (&settings.default, fallback) {
        (Some(files), _) => Some(Arc::new(load_pair(files, provider)?)),
        (None, Some(fallback)) => Some(fallback),
        (None, None) if acme => None,
        (None, None) => {
            return Err(TlsError::Config(rustls::Error::General(
                "no default certificate".into(),
            )))
        }
    };
    let mut set = CertSet {
        default,
        exact: HashMap::new(),
        wildcard: HashMap::new(),
    };
    for sni in &settings.sni {
        let key = Arc::new(load_pair(&sni.files, provider)?);
        for name in &sni.names {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            match name.strip_prefix("*.") {
                Some(parent) => set.wildcard.insert(parent.to_string(), key.clone()),
                None => set.exact.insert(name, key.clone()),
            };
        }
    }
    Ok(set)
}

/// Reads a PEM certificate chain and its private key, checking that they belong together.
pub fn load_pair(files: &TlsFiles, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain = rustls_pemfile::certs(&mut open(&files.cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            path: files.cert.clone(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    }
    let key = rustls_pemfile::private_key(&mut open(&files.key)?)
        .map_err(|source| TlsError::Read {
            path: files.key.clone(),
            source,
        })?
        .ok_or_else(|| TlsError::NoKey {
            path: files.key.clone(),
        })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|source| TlsError::Unusable {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    })
}

fn open(path: &Path) -> Result<BufReader<File>, TlsError> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
}

fn dev_cert_names(server_name: &str) -> Vec<String> {
    let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let server_name = server_name.to_ascii_lowercase();
    if !server_name.is_empty() && !names.contains(&server_name) {
        names.push(server_name);
    }
    names
}

/// A self-signed certificate for `names` (IP literals become IP subject alternative names).
fn dev_certificate(names: &[String], provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let generated = rcgen::generate_simple_self_signed(names.to_vec())?;
    let cert = generated.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(generated.key_pair.serialize_der().into());
    CertifiedKey::from_der(vec![cert], key, provider).map_err(TlsError::Config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mxgate_core::config::SniCertificate;

    fn write_pair(dir: &Path, stem: &str, names: &[&str]) -> TlsFiles {
        let generated = rcgen::generate_simple_self_signed(
            names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .unwrap();
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.key_pair.serialize_pem()).unwrap();
        TlsFiles { cert, key }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mxgate-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn certs(settings: TlsSettings) -> Arc<Certificates> {
        let provider = provider();
        let set = load_set(&settings, None, false, &provider).unwrap();
        Arc::new(Certificates {
            settings: RwLock::new(settings),
            provider,
            dev: None,
            acme: None,
            current: RwLock::new(Arc::new(set)),
        })
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_default() {
        let dir = temp_dir("sni");
        let settings = TlsSettings {
            default: Some(write_pair(&dir, "default", &["example.com"])),
            sni: vec![
                SniCertificate {
                    names: vec!["Matrix.Example.org".into()],
                    files: write_pair(&dir, "matrix", &["matrix.example.org"]),
                },
                SniCertificate {
                    names: vec!["*.example.net".into()],
                    files: write_pair(&dir, "wild", &["*.example.net"]),
                },
            ],
        };
        let certs = certs(settings);
        let default = certs.select(None).unwrap();
        let matrix = certs.select(Some("matrix.example.org.")).unwrap();
        let wild = certs.select(Some("a.example.net")).unwrap();
        assert!(Arc::ptr_eq(
            &certs.select(Some("other.test")).unwrap(),
            &default
        ));
        assert!(!Arc::ptr_eq(&matrix, &default));
        assert!(!Arc::ptr_eq(&wild, &default));
        assert!(!Arc::ptr_eq(&wild, &matrix));
        // A wildcard covers one label only.
        assert!(Arc::ptr_eq(
            &certs.select(Some("a.b.example.net")).unwrap(),
            &default
        ));
        assert!(Arc::ptr_eq(
            &certs.select(Some("example.net")).unwrap(),
            &default
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn reload_swaps_good_files_and_keeps_old_on_bad_ones() {
        let dir = temp_dir("reload");
        let files = write_pair(&dir, "default", &["example.com"]);
        let certs = certs(TlsSettings {
            default: Some(files.clone()),
            sni: vec![],
        });
        let first = certs.select(None).unwrap();
        // Good new files: swapped.
        write_pair(&dir, "default", &["example.com"]);
        certs.reload().unwrap();
        let second = certs.select(None).unwrap();
        assert_ne!(first.cert, second.cert);
        // A key that does not belong to the certificate: refused, old kept.
        let other = write_pair(&dir, "other", &["example.com"]);
        std::fs::copy(&other.key, &files.key).unwrap();
        assert!(matches!(certs.reload(), Err(TlsError::Unusable { .. })));
        // Missing file: refused, old kept.
        std::fs::remove_file(&files.cert).unwrap();
        assert!(matches!(certs.reload(), Err(TlsError::Read { .. })));
        assert_eq!(certs.select(None).unwrap().cert, second.cert);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn under_acme_names_get_the_installed_certificate_and_nothing_before() {
        let config = mxgate_core::config::parse_config(
            "server_name = \"example.test\"\npublic_url = \"https://matrix.example.test\"\nhomeserver = \"http://127.0.0.1:8008\"\n",
            Path::new("t.toml"),
        )
        .unwrap();
        let certs = Certificates::load(&config).unwrap();
        assert!(!certs.has_default());
        assert!(certs.select(Some("matrix.example.test")).is_none());
        assert!(certs.select(None).is_none());
        let key = Arc::new(
            dev_certificate(
                &["matrix.example.test".into(), "example.test".into()],
                &provider(),
            )
            .unwrap(),
        );
        certs.install(key.clone());
        assert!(certs.has_default());
        for name in [Some("matrix.example.test"), Some("Example.test."), None] {
            assert!(Arc::ptr_eq(&certs.select(name).unwrap(), &key), "{name:?}");
        }
        // A name it does not certify gets no certificate rather than a wrong one.
        assert!(certs.select(Some("other.test")).is_none());
        // SIGHUP keeps the obtained certificate.
        certs.reload().unwrap();
        assert!(Arc::ptr_eq(&certs.select(None).unwrap(), &key));
        // So does a reload whose configuration adds an SNI certificate; both are served.
        let dir = temp_dir("acme-reload");
        let settings = TlsSettings {
            default: None,
            sni: vec![SniCertificate {
                names: vec!["other.test".into()],
                files: write_pair(&dir, "other", &["other.test"]),
            }],
        };
        certs.reload_with(&settings).unwrap();
        assert!(Arc::ptr_eq(&certs.select(None).unwrap(), &key));
        assert!(Arc::ptr_eq(
            &certs.select(Some("matrix.example.test")).unwrap(),
            &key
        ));
        let other = certs.select(Some("other.test")).unwrap();
        assert!(!Arc::ptr_eq(&other, &key));
        // A renewal installed after the reload keeps the reloaded SNI certificate.
        let renewed =
            Arc::new(dev_certificate(&["matrix.example.test".into()], &provider()).unwrap());
        certs.install(renewed.clone());
        assert!(Arc::ptr_eq(&certs.select(None).unwrap(), &renewed));
        assert!(Arc::ptr_eq(
            &certs.select(Some("other.test")).unwrap(),
            &other
        ));
        std::fs::remove_dir_all(dir).unwrap();
        // The challenge protocol is offered only with TLS-ALPN-01.
        let alpn = certs.server_config(false).unwrap().alpn_protocols.clone();
        assert_eq!(alpn, [b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()]);
        let alpn = certs.server_config(true).unwrap().alpn_protocols.clone();
        assert_eq!(
            alpn,
            [b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()]
        );
    }

    #[test]
    fn dev_certificate_covers_loopback_names() {
        let names = dev_cert_names("Example.com");
        assert_eq!(names, ["localhost", "127.0.0.1", "::1", "example.com"]);
        let key = dev_certificate(&names, &provider()).unwrap();
        assert_eq!(key.cert.len(), 1);
    }

    /// A client that accepts any certificate.
    mod any_cert {
        use rustls::client::danger::{
            HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
        };
        use rustls::crypto::CryptoProvider;
        use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
        use rustls::DigitallySignedStruct;
        use std::sync::Arc;

        #[derive(Debug)]
        pub struct AcceptAny(pub Arc<CryptoProvider>);
        impl ServerCertVerifier for AcceptAny {
            fn verify_server_cert(
                &self,
                _: &CertificateDer<'_>,
                _: &[CertificateDer<'_>],
                _: &ServerName<'_>,
                _: &[u8],
                _: UnixTime,
            ) -> Result<ServerCertVerified, rustls::Error> {
                Ok(ServerCertVerified::assertion())
            }
            fn verify_tls12_signature(
                &self,
                m: &[u8],
                c: &CertificateDer<'_>,
                d: &DigitallySignedStruct,
            ) -> Result<HandshakeSignatureValid, rustls::Error> {
                rustls::crypto::verify_tls12_signature(
                    m,
                    c,
                    d,
                    &self.0.signature_verification_algorithms,
                )
            }
            fn verify_tls13_signature(
                &self,
                m: &[u8],
                c: &CertificateDer<'_>,
                d: &DigitallySignedStruct,
            ) -> Result<HandshakeSignatureValid, rustls::Error> {
                rustls::crypto::verify_tls13_signature(
                    m,
                    c,
                    d,
                    &self.0.signature_verification_algorithms,
                )
            }
            fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
                self.0.signature_verification_algorithms.supported_schemes()
            }
        }
    }

    /// Runs a handshake in memory: the server side, and the certificate the client got.
    fn handshake_with_cert(
        server_config: &Arc<ServerConfig>,
        version: &'static rustls::SupportedProtocolVersion,
        client_alpn: &[&[u8]],
    ) -> (rustls::ServerConnection, Vec<u8>) {
        use rustls::{ClientConfig, ClientConnection, ServerConnection};
        let provider = provider();
        let mut client_config = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[version])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(any_cert::AcceptAny(provider)))
            .with_no_client_auth();
        client_config.alpn_protocols = client_alpn.iter().map(|p| p.to_vec()).collect();
        let mut client =
            ClientConnection::new(Arc::new(client_config), "localhost".try_into().unwrap())
                .unwrap();
        let mut server = ServerConnection::new(server_config.clone()).unwrap();
        for _ in 0..10 {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            server.read_tls(&mut wire.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            let mut wire = Vec::new();
            server.write_tls(&mut wire).unwrap();
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets().unwrap();
        }
        assert!(!client.is_handshaking() && !server.is_handshaking());
        assert_eq!(server.protocol_version(), Some(version.version));
        let cert = client.peer_certificates().expect("a certificate")[0].to_vec();
        (server, cert)
    }

    /// Runs a handshake in memory; the server side, handshake done.
    fn handshake(
        server_config: &Arc<ServerConfig>,
        version: &'static rustls::SupportedProtocolVersion,
        client_alpn: &[&[u8]],
    ) -> rustls::ServerConnection {
        handshake_with_cert(server_config, version, client_alpn).0
    }

    fn dev_certs() -> Arc<Certificates> {
        let provider = provider();
        let dev = Arc::new(dev_certificate(&dev_cert_names("localhost"), &provider).unwrap());
        let settings = TlsSettings::default();
        let set = load_set(&settings, Some(dev.clone()), false, &provider).unwrap();
        Arc::new(Certificates {
            settings: RwLock::new(settings),
            provider,
            dev: Some(dev),
            acme: None,
            current: RwLock::new(Arc::new(set)),
        })
    }

    #[test]
    fn handshake_negotiates_http11_over_tls13_and_tls12() {
        let server_config = dev_certs().server_config(false).unwrap();
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            // A browser offers h2 first: a listener without http2 still answers http/1.1.
            let server = handshake(&server_config, version, &[b"h2", b"http/1.1"]);
            assert_eq!(server.alpn_protocol(), Some(&b"http/1.1"[..]));
        }
    }

    #[test]
    fn h2_listeners_offer_h2_first_and_http11_to_clients_without_it() {
        let certs = dev_certs();
        let h2 = certs.server_config(true).unwrap();
        assert_eq!(h2.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        let h1 = certs.server_config(false).unwrap();
        assert_eq!(h1.alpn_protocols, [b"http/1.1".to_vec()]);
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            // Our preference decides, whatever order the client lists them in.
            let server = handshake(&h2, version, &[b"http/1.1", b"h2"]);
            assert_eq!(server.alpn_protocol(), Some(&b"h2"[..]));
            let server = handshake(&h2, version, &[b"http/1.1"]);
            assert_eq!(server.alpn_protocol(), Some(&b"http/1.1"[..]));
            // A client without ALPN gets no protocol (HTTP/1.1 by default).
            let server = handshake(&h2, version, &[]);
            assert_eq!(server.alpn_protocol(), None);
        }
    }

    #[test]
    fn both_configurations_serve_reloaded_certificates() {
        let dir = temp_dir("alpn-reload");
        let first = write_pair(&dir, "first", &["localhost"]);
        let certs = certs(TlsSettings {
            default: Some(first),
            sni: vec![],
        });
        let (h2, h1) = (
            certs.server_config(true).unwrap(),
            certs.server_config(false).unwrap(),
        );
        let served = |config: &Arc<ServerConfig>| {
            handshake_with_cert(config, &rustls::version::TLS13, &[b"h2", b"http/1.1"])
        };
        let before = certs.select(None).unwrap().cert[0].to_vec();
        for config in [&h2, &h1] {
            assert_eq!(served(config).1, before);
        }
        let second = write_pair(&dir, "second", &["localhost"]);
        certs
            .reload_with(&TlsSettings {
                default: Some(second),
                sni: vec![],
            })
            .unwrap();
        let after = certs.select(None).unwrap().cert[0].to_vec();
        assert_ne!(before, after);
        // Configurations made before the reload serve the new certificate, each with its ALPN.
        let (server, cert) = served(&h2);
        assert_eq!(
            (server.alpn_protocol(), cert),
            (Some(&b"h2"[..]), after.clone())
        );
        let (server, cert) = served(&h1);
        assert_eq!(
            (server.alpn_protocol(), cert),
            (Some(&b"http/1.1"[..]), after)
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn acme_tls_alpn_is_offered_by_both_only_with_that_challenge() {
        let config = |challenges: &str| {
            mxgate_core::config::parse_config(
                &format!("server_name = \"example.test\"\npublic_url = \"https://matrix.example.test\"\nhomeserver = \"http://127.0.0.1:8008\"\n[[listeners]]\nrole = \"client\"\nbind = \"127.0.0.1:443\"\ntls = true\n[[listeners]]\nrole = \"client\"\nbind = \"127.0.0.1:80\"\n[acme]\nchallenges = {challenges}\n"),
                Path::new("t.toml"),
            )
            .unwrap()
        };
        let certs = Certificates::load(&config("[\"tls-alpn-01\", \"http-01\"]")).unwrap();
        let alpn =
            |certs: &Arc<Certificates>, h2| certs.server_config(h2).unwrap().alpn_protocols.clone();
        assert_eq!(
            alpn(&certs, true),
            [b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()]
        );
        assert_eq!(
            alpn(&certs, false),
            [b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()]
        );
        let certs = Certificates::load(&config("[\"http-01\"]")).unwrap();
        assert_eq!(alpn(&certs, true), [b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert_eq!(alpn(&certs, false), [b"http/1.1".to_vec()]);
    }
}
