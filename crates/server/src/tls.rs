//! Native TLS (rustls with the aws-lc-rs provider, the crypto library the rest of the
//! binary already uses) and certificate hot reload.
//!
//! The certificate chain and key are PEM files (`tls.cert`, `tls.key`). They are read and
//! checked at start (a bad file stops the server with a message naming it), then re-read
//! when either file changes (modification or change time, inode, size; polled every few
//! seconds) or on SIGHUP, and retried at every poll while a reload keeps failing.
//! A reload swaps the configuration ([`TlsConfig`]): handshakes after the swap use the new
//! certificate, connections already established keep theirs, nothing is dropped. A reload that fails keeps the old
//! certificate and logs an error.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::listen::TlsConfig;
use crate::metrics::Metrics;

/// The HSTS header value sent on every response when TLS is on (RFC 6797 §6.1): two years,
/// subdomains included. No `preload`: that is a decision for the domain's owner.
pub const HSTS: &str = "max-age=63072000; includeSubDomains";

/// How often the certificate files' modification times are checked.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// Where the certificate chain and private key live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why a certificate or key could not be used; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// Reads both files and builds a rustls server configuration (TLS 1.2 and 1.3, ALPN h2 and
/// http/1.1), checking that the key matches the certificate.
///
/// # Errors
/// [`TlsError`] naming the file that is missing, unreadable, not PEM, or mismatched.
pub fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs(&files.cert)?;
    let key = read_key(&files.key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(format!("TLS setup: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            TlsError(format!(
                "`tls.cert` ({}) and `tls.key` ({}) cannot be used together: {e}",
                files.cert.display(),
                files.key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The most a certificate chain file may hold (CA bundles are a few hundred KB).
const MAX_CERT_FILE: u64 = 4 << 20;

/// Reads at most `limit` bytes of `path` (a file that is larger, or endless like
/// `/dev/zero`, is refused rather than read forever).
fn read_bounded(
    path: &Path,
    limit: u64,
    what: &str,
) -> Result<zeroize::Zeroizing<Vec<u8>>, TlsError> {
    use std::io::Read as _;
    let mut bytes = zeroize::Zeroizing::new(Vec::new());
    std::fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_end(&mut bytes))
        .map_err(|e| {
            TlsError(format!(
                "`{what}` ({}): cannot read it: {e}",
                path.display()
            ))
        })?;
    if bytes.len() as u64 > limit {
        return Err(TlsError(format!(
            "`{what}` ({}): larger than {limit} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_bounded(path, MAX_CERT_FILE, "tls.cert")?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            TlsError(format!(
                "`tls.cert` ({}): cannot read the PEM certificate chain: {}",
                path.display(),
                pem_error(&e)
            ))
        })?;
    if certs.is_empty() {
        return Err(TlsError(format!(
            "`tls.cert` ({}): no CERTIFICATE block found",
            path.display()
        )));
    }
    Ok(certs)
}

/// The most a key file may hold (a 16384-bit RSA key in PEM is about 13 KB).
const MAX_KEY_FILE: u64 = 1 << 20;

/// Reads the private key, its bytes wiped after parsing, and says plainly what is wrong
/// with a file that holds no usable key: encrypted, a certificate, empty.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let err = |what: String| TlsError(format!("`tls.key` ({}): {what}", path.display()));
    let pem = read_bounded(path, MAX_KEY_FILE, "tls.key")?;
    let text = String::from_utf8_lossy(&pem);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.contains("Proc-Type: 4,ENCRYPTED")
    {
        return Err(err(
            "the private key is encrypted; Tessera needs it unencrypted (`openssl pkey -in KEY \
             -out PLAIN`) and protected by its file permissions (readable by the server's user \
             or group only)"
                .into(),
        ));
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound
            if text.contains("-----BEGIN CERTIFICATE-----") =>
        {
            err(
                "holds a certificate, not a private key (are `tls.cert` and `tls.key` swapped?)"
                    .into(),
            )
        }
        other => err(format!("no usable PEM private key: {}", pem_error(&other))),
    })
}

fn pem_error(e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        rustls_pki_types::pem::Error::NoItemsFound => {
            "no PRIVATE KEY block found (PKCS#8, PKCS#1 or SEC1, PEM-encoded)".into()
        }
        other => format!("malformed PEM ({other:?})"),
    }
}

/// Logs a warning when the key file can be read by every local user. Group-readable keys
/// are the usual way to share one with a server's user (Debian's `root:ssl-cert 0640`, a
/// Kubernetes secret with `defaultMode: 0440` and `fsGroup`), so they are left alone.
pub(crate) fn warn_if_key_exposed(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o007 != 0 {
                tracing::warn!(
                    key = %path.display(),
                    mode = %format_args!("{mode:04o}"),
                    "`tls.key` is readable by every local user; remove that with chmod o-rwx"
                );
            }
        }
    }
}

/// What identifies a version of a file: a change to any of these is a reason to re-read
/// it. The change time and inode catch what the modification time misses: `chmod`/`chown`
/// that make a file readable, and a file replaced by rename with an older mtime (`cp -p`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Version {
    modified: Option<SystemTime>,
    /// Device, inode, change time (seconds, nanoseconds), size.
    #[cfg(unix)]
    unix: (u64, u64, i64, i64, u64),
}

fn version(path: &Path) -> Option<Version> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Version {
        modified: meta.modified().ok(),
        #[cfg(unix)]
        unix: {
            use std::os::unix::fs::MetadataExt as _;
            (
                meta.dev(),
                meta.ino(),
                meta.ctime(),
                meta.ctime_nsec(),
                meta.len(),
            )
        },
    })
}

fn versions(files: &TlsFiles) -> (Option<Version>, Option<Version>) {
    (version(&files.cert), version(&files.key))
}

/// Re-reads the files; on success swaps the configuration in, on failure keeps the old one.
/// Returns the error, if any. `last_error` is the previous attempt's: a failure repeated
/// unchanged on a retry is neither logged nor counted again.
fn reload(
    files: &TlsFiles,
    config: &TlsConfig,
    metrics: &Metrics,
    why: &str,
    last_error: Option<&str>,
) -> Option<String> {
    match load(files) {
        Ok(new) => {
            config.replace(new);
            metrics.record_tls_reload(true);
            warn_if_key_exposed(&files.key);
            tracing::info!(cert = %files.cert.display(), trigger = why, "TLS certificate reloaded");
            None
        }
        Err(e) => {
            let e = e.0;
            if last_error != Some(e.as_str()) {
                metrics.record_tls_reload(false);
                tracing::error!(error = %e, trigger = why, "TLS certificate reload failed; still serving the previous certificate (retried every few seconds)");
            }
            Some(e)
        }
    }
}

/// Watches the files (mtime poll) and SIGHUP, reloading on either, until `stop` changes.
pub(crate) async fn watch(
    files: TlsFiles,
    config: TlsConfig,
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut seen = versions(&files);
    // The last reload's error while it keeps failing: a failure can pass without any change
    // to the files (a full descriptor table, a permission fixed by `chown`, which changes
    // only the ctime on some systems), so a failed reload is retried at every poll.
    let mut failing: Option<String> = None;
    #[cfg(unix)]
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; certificate reload on file change only");
            None
        }
    };
    loop {
        #[cfg(unix)]
        let sighup = async {
            match hup.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let sighup = std::future::pending::<()>();
        tokio::select! {
            _ = stop.changed() => return,
            () = sighup => {
                seen = versions(&files);
                failing = reload_off_runtime(&files, &config, &metrics, "SIGHUP", None).await;
            }
            () = tokio::time::sleep(POLL_EVERY) => {
                let now = versions(&files);
                if now != seen {
                    seen = now;
                    failing = reload_off_runtime(&files, &config, &metrics, "file change", None).await;
                } else if let Some(last) = failing.take() {
                    failing = reload_off_runtime(&files, &config, &metrics, "retry", Some(last)).await;
                }
            }
        }
    }
}

/// [`reload`] on the blocking pool (it reads files).
async fn reload_off_runtime(
    files: &TlsFiles,
    config: &TlsConfig,
    metrics: &Arc<Metrics>,
    why: &'static str,
    last_error: Option<String>,
) -> Option<String> {
    let (files, config, metrics) = (files.clone(), config.clone(), Arc::clone(metrics));
    tokio::task::spawn_blocking(move || {
        reload(&files, &config, &metrics, why, last_error.as_deref())
    })
    .await
    .unwrap_or_else(|e| Some(format!("the reload task failed: {e}")))
}
