//! ACME state on disk (`[acme] state_dir`): the account key and the certificates, one
//! directory per ACME server. Every file holds a private key, so each is written mode 0600
//! through a temporary file, fsync and rename (a crash mid-write leaves the old file or
//! the new one, never half of one); directories are 0700. Also reads a stored certificate
//! back (chain, key, validity) for serving at start and for `mxgate check`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mxgate_core::config::AcmeSettings;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;

/// Why a stored certificate cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoredError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

/// The files of one ACME server's state.
#[derive(Debug, Clone)]
pub struct AcmeStore {
    dir: PathBuf,
}

impl AcmeStore {
    /// The state for `directory` under `state_dir`: `<state_dir>/<directory host and path>/`.
    pub fn new(state_dir: &Path, directory: &str) -> AcmeStore {
        let bare = directory
            .split_once("://")
            .map_or(directory, |(_, rest)| rest);
        let slug: String = bare
            .trim_end_matches('/')
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        AcmeStore {
            dir: state_dir.join(slug),
        }
    }

    pub fn for_settings(acme: &AcmeSettings) -> AcmeStore {
        AcmeStore::new(&acme.state_dir, &acme.directory)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The account key (PKCS#8 DER, as the ACME client made it).
    pub fn account_path(&self) -> PathBuf {
        self.dir.join("account.key")
    }

    /// The certificate for `names`: the private key, then the chain, as PEM.
    pub fn certificate_path(&self, names: &[String]) -> PathBuf {
        let stem: String = names
            .join("+")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{stem}.pem"))
    }

    /// A file's content, `None` when it does not exist.
    pub fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        match fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Writes `bytes` to `path` (in this store) atomically, readable by the owner only.
    pub fn write_private(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
        let temp = self.dir.join(format!(
            ".{}.tmp{}",
            name.to_string_lossy(),
            std::process::id()
        ));
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            drop(file);
            fs::rename(&temp, path)?;
            // The rename itself is durable once the directory is synced.
            File::open(&self.dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result
    }
}

/// A certificate as stored: what is served, and when it is valid.
#[derive(Debug)]
pub struct Stored {
    pub key: Arc<CertifiedKey>,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// The DNS names in its subject alternative names.
    pub names: Vec<String>,
}

impl Stored {
    /// When renewal is due: two thirds into the validity period (Unix seconds).
    pub fn renew_at(&self) -> i64 {
        self.not_after - (self.not_after - self.not_before) / 3
    }
}

/// Parses a stored certificate file (private key and chain, PEM).
pub fn parse_stored(
    path: &Path,
    pem: &[u8],
    provider: &CryptoProvider,
) -> Result<Stored, StoredError> {
    let invalid = |message: String| StoredError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(format!("bad PEM: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(invalid("no certificate".into()));
    };
    let key = rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| invalid(format!("bad PEM: {e}")))?
        .ok_or_else(|| invalid("no private key".into()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| invalid(format!("unreadable certificate: {e}")))?;
    let validity = cert.validity();
    let names = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let (not_before, not_after) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    let key = CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| invalid(format!("key and certificate do not belong together: {e}")))?;
    Ok(Stored {
        key: Arc::new(key),
        not_before,
        not_after,
        names,
    })
}

/// Reads the stored certificate for the configured names, if there is one.
pub fn load(acme: &AcmeSettings, provider: &CryptoProvider) -> Result<Option<Stored>, StoredError> {
    let store = AcmeStore::for_settings(acme);
    let path = store.certificate_path(&acme.names);
    let pem = store.read(&path).map_err(|source| StoredError::Io {
        path: path.clone(),
        source,
    })?;
    pem.map(|pem| parse_stored(&path, &pem, provider))
        .transpose()
}

/// What `mxgate check` says about the ACME plan's state on disk (TOML comments).
pub fn describe(acme: &AcmeSettings, now_unix: i64) -> String {
    let store = AcmeStore::for_settings(acme);
    let mut out = String::new();
    out.push_str(&format!(
        "\n# ACME plan: a certificate for {} from {}\n# challenges: {}; state in {}\n",
        acme.names.join(", "),
        acme.directory,
        acme.challenges
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", then (after 3 failed orders) "),
        store.dir().display()
    ));
    let account = store.account_path();
    out.push_str(&match store.read(&account) {
        Ok(Some(_)) => format!("# stored: account key {}\n", account.display()),
        Ok(None) => "# stored: no account yet (one is registered on the first order)\n".into(),
        Err(err) => format!("# cannot read {}: {err}\n", account.display()),
    });
    let provider = crate::support::tls::provider();
    let path = store.certificate_path(&acme.names);
    out.push_str(&match load(acme, &provider) {
        Ok(Some(stored)) => {
            let days = (stored.not_after - now_unix) as f64 / 86_400.0;
            let state = if stored.not_after <= now_unix {
                "EXPIRED, a new one is ordered at start".to_string()
            } else if stored.renew_at() <= now_unix {
                format!("expires in {days:.1} days, renewal is due")
            } else {
                format!(
                    "expires in {days:.1} days, renewed after {:.1} days",
                    (stored.renew_at() - now_unix) as f64 / 86_400.0
                )
            };
            format!(
                "# stored: certificate {} for {}: {state}\n",
                path.display(),
                stored.names.join(", ")
            )
        }
        Ok(None) => "# stored: no certificate yet (ordered at start)\n".into(),
        Err(err) => format!("# stored certificate unusable (a new one is ordered): {err}\n"),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mxgate-acme-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn paths_are_per_directory_and_names() {
        let store = AcmeStore::new(Path::new("/var/lib/mxgate"), "https://127.0.0.1:14000/dir");
        assert_eq!(
            store.dir(),
            Path::new("/var/lib/mxgate/127.0.0.1_14000_dir")
        );
        let names = vec!["matrix.example.com".to_string(), "example.com".to_string()];
        assert_eq!(
            store.certificate_path(&names),
            Path::new("/var/lib/mxgate/127.0.0.1_14000_dir/matrix.example.com+example.com.pem")
        );
        assert_eq!(
            AcmeStore::new(
                Path::new("/s"),
                "https://acme-v02.api.letsencrypt.org/directory"
            )
            .dir(),
            Path::new("/s/acme-v02.api.letsencrypt.org_directory")
        );
    }

    #[test]
    fn writes_are_private_and_replace_whole_files() {
        let state = temp_dir("write");
        let store = AcmeStore::new(&state, "https://ca.test/dir");
        let path = store.account_path();
        assert_eq!(store.read(&path).unwrap(), None);
        store.write_private(&path, b"first").unwrap();
        store.write_private(&path, b"second").unwrap();
        assert_eq!(store.read(&path).unwrap().as_deref(), Some(&b"second"[..]));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mode = fs::metadata(store.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        // No temporary file is left behind.
        let files: Vec<_> = fs::read_dir(store.dir()).unwrap().collect();
        assert_eq!(files.len(), 1);
        fs::remove_dir_all(state).unwrap();
    }

    #[test]
    fn a_stored_certificate_reads_back_with_its_validity() {
        let generated =
            rcgen::generate_simple_self_signed(vec!["matrix.example.test".into()]).unwrap();
        let pem = format!(
            "{}{}",
            generated.key_pair.serialize_pem(),
            generated.cert.pem()
        );
        let stored = parse_stored(
            Path::new("x.pem"),
            pem.as_bytes(),
            &crate::support::tls::provider(),
        )
        .unwrap();
        assert_eq!(stored.names, ["matrix.example.test"]);
        assert!(stored.not_after > stored.not_before);
        assert!(stored.renew_at() > stored.not_before && stored.renew_at() < stored.not_after);
        let err = parse_stored(
            Path::new("x.pem"),
            generated.cert.pem().as_bytes(),
            &crate::support::tls::provider(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("no private key"), "{err}");
        let err = parse_stored(
            Path::new("x.pem"),
            b"junk",
            &crate::support::tls::provider(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("no certificate"), "{err}");
    }
}
