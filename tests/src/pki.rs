//! A throw-away certificate authority and the certificates the scenarios use, as PEM files
//! in a temp dir (what the proxy reads) and DER (what the clients compare against).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tempfile::TempDir;

/// The names on the default server certificate.
pub const SERVER_NAMES: &[&str] = &["localhost", "127.0.0.1", "matrix.example.org"];
/// The names on the SNI certificate.
pub const OTHER_NAMES: &[&str] = &["other.example.org"];

/// A certificate and key written as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate's DER (what a client sees as the peer certificate).
    pub der: Vec<u8>,
    /// The key's PKCS#8 DER.
    pub key_der: Vec<u8>,
    pub names: Vec<String>,
}

/// The test CA with a default server certificate and an SNI one.
pub struct Pki {
    dir: TempDir,
    ca_key: KeyPair,
    ca_cert: Certificate,
    /// The CA certificate, PEM, written to `ca.pem`.
    pub ca_pem_path: PathBuf,
    /// For `localhost`, `127.0.0.1`, `matrix.example.org`.
    pub server: CertFiles,
    /// For `other.example.org`.
    pub other: CertFiles,
}

/// The crypto provider the harness uses everywhere.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("mxgate-e2e-pki-")
            .tempdir()
            .expect("temp dir for certificates");
        let ca_key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, "mxgate e2e test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = params.self_signed(&ca_key).expect("CA certificate");
        let ca_pem_path = dir.path().join("ca.pem");
        fs::write(&ca_pem_path, ca_cert.pem()).expect("write CA");
        let mut pki = Pki {
            server: placeholder(),
            other: placeholder(),
            dir,
            ca_key,
            ca_cert,
            ca_pem_path,
        };
        pki.server = pki.issue(SERVER_NAMES, "server");
        pki.other = pki.issue(OTHER_NAMES, "other");
        pki
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate (DER).
    pub fn ca_der(&self) -> CertificateDer<'static> {
        self.ca_cert.der().clone()
    }

    /// A new certificate for `names`, signed by the CA, written to `<stem>.pem`/`<stem>.key`
    /// (replacing them atomically if they exist).
    pub fn issue(&self, names: &[&str], stem: &str) -> CertFiles {
        let key = KeyPair::generate().expect("leaf key");
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        let cert = params
            .signed_by(&key, &self.ca_cert, &self.ca_key)
            .expect("sign leaf");
        let files = CertFiles {
            cert: self.dir.path().join(format!("{stem}.pem")),
            key: self.dir.path().join(format!("{stem}.key")),
            der: cert.der().to_vec(),
            key_der: key.serialize_der(),
            names,
        };
        write_atomically(&files.key, key.serialize_pem().as_bytes());
        write_atomically(&files.cert, cert.pem().as_bytes());
        files
    }

    /// A rustls client config trusting only the test CA (ALPN `http/1.1`).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        client_config_trusting(self.ca_der())
    }

    /// A rustls server config for `files` (for the harness's own tests).
    pub fn server_config(&self, files: &CertFiles) -> Arc<ServerConfig> {
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(files.der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(files.key_der.clone())),
            )
            .expect("server config");
        Arc::new(config)
    }

    /// Which of this PKI's certificates `der` is: `"server"`, `"other"`, or a description.
    pub fn which(&self, der: Option<&[u8]>) -> String {
        match der {
            None => "no certificate".into(),
            Some(d) if d == self.server.der.as_slice() => "server".into(),
            Some(d) if d == self.other.der.as_slice() => "other".into(),
            Some(d) => format!("an unknown certificate ({} bytes)", d.len()),
        }
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

fn placeholder() -> CertFiles {
    CertFiles {
        cert: PathBuf::new(),
        key: PathBuf::new(),
        der: Vec::new(),
        key_der: Vec::new(),
        names: Vec::new(),
    }
}

/// Writes `bytes` to `path` via a temp file and rename, so a reader never sees half a file.
pub fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp-write");
    fs::write(&tmp, bytes).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

/// A rustls client config trusting only `root` (ALPN `http/1.1`).
pub fn client_config_trusting(root: CertificateDer<'static>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(root).expect("add the root certificate");
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}
