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

/// A certificate chain and key, checked and ready to serve.
#[derive(Debug)]
pub struct Loaded {
    /// The rustls configuration.
    pub config: Arc<ServerConfig>,
    /// When the chain stops being valid: the earliest `notAfter` of its certificates (Unix
    /// seconds). `None` if a certificate's dates could not be read (rustls still serves it).
    pub expires_at: Option<i64>,
    /// When the whole chain is valid from: the latest `notBefore` (Unix seconds).
    pub valid_from: Option<i64>,
}

/// Reads both files and builds a rustls server configuration (TLS 1.2 and 1.3, ALPN h2 and
/// http/1.1), checking that the key matches the certificate. The chain's validity dates
/// are read too; an expired chain still loads (clients will refuse it; the caller warns).
///
/// # Errors
/// [`TlsError`] naming the file that is missing, unreadable, not PEM, or mismatched.
pub fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let certs = read_certs(&files.cert)?;
    let (valid_from, expires_at) = validity(&certs).unzip();
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
    Ok(Loaded {
        config: Arc::new(config),
        expires_at,
        valid_from,
    })
}

/// The chain's (latest `notBefore`, earliest `notAfter`) in Unix seconds (RFC 5280
/// §4.1.2.5: every certificate of the chain must be within its validity period), or `None`
/// if a certificate cannot be parsed.
fn validity(certs: &[CertificateDer<'_>]) -> Option<(i64, i64)> {
    certs
        .iter()
        .try_fold((i64::MIN, i64::MAX), |(from, until), der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
            let v = cert.validity();
            Some((
                from.max(v.not_before.timestamp()),
                until.min(v.not_after.timestamp()),
            ))
        })
}

/// Certificates expiring within this long get a warning at every (re)load.
const EXPIRY_WARNING: i64 = 14 * 24 * 3600;

/// What is wrong with serving a chain valid from `from` until `until` at `now`, if anything.
fn validity_problem(from: Option<i64>, until: Option<i64>, now: i64) -> Option<String> {
    let at = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .ok()
            .and_then(|d| {
                d.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| t.to_string())
    };
    match (from, until) {
        (_, Some(until)) if until <= now => Some(format!(
            "expired at {}: clients will refuse it; install a renewed certificate (it is picked up without a restart)",
            at(until)
        )),
        (Some(from), _) if from > now => Some(format!(
            "not valid until {}: clients will refuse it until then",
            at(from)
        )),
        (_, Some(until)) if until - now < EXPIRY_WARNING => Some(format!(
            "expires in {} h (at {}); renew it (it is picked up without a restart)",
            (until - now) / 3600,
            at(until)
        )),
        _ => None,
    }
}

/// Publishes the chain's expiry (`tessera_tls_certificate_expiry_timestamp_seconds`) and
/// warns when it has expired, is not yet valid, or expires within 14 days.
pub(crate) fn note_validity(files: &TlsFiles, loaded: &Loaded, metrics: &Metrics) {
    metrics.set_tls_expiry(&files.cert, loaded.expires_at);
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    match validity_problem(loaded.valid_from, loaded.expires_at, now) {
        Some(problem) => {
            tracing::warn!(cert = %files.cert.display(), "the TLS certificate {problem}");
        }
        None if loaded.expires_at.is_none() => {
            tracing::warn!(cert = %files.cert.display(), "the TLS certificate's validity dates could not be read; its expiry is not monitored");
        }
        None => {}
    }
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
            config.replace(Arc::clone(&new.config));
            metrics.record_tls_reload(true);
            warn_if_key_exposed(&files.key);
            tracing::info!(cert = %files.cert.display(), trigger = why, "TLS certificate reloaded");
            note_validity(files, &new, metrics);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(from: (i32, u8, u8), until: (i32, u8, u8)) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn a_chain_is_valid_from_its_latest_start_until_its_earliest_end() {
        let leaf = cert((2026, 1, 1), (2027, 6, 1));
        let intermediate = cert((2025, 1, 1), (2027, 1, 1));
        let (from, until) = validity(&[leaf, intermediate]).unwrap();
        assert_eq!(from, 1_767_225_600, "2026-01-01");
        assert_eq!(until, 1_798_761_600, "2027-01-01: the intermediate's end");
        assert_eq!(
            validity(&[CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])]),
            None
        );
    }

    #[test]
    fn expired_not_yet_valid_and_expiring_chains_are_named() {
        let day = 24 * 3600;
        let now = 1_800_000_000;
        let problem = |from, until| validity_problem(Some(from), Some(until), now);
        assert_eq!(problem(now - 100 * day, now + 100 * day), None);
        assert!(
            problem(now - 100 * day, now)
                .unwrap()
                .starts_with("expired at 2027-01-15T08:00:00Z"),
            "{:?}",
            problem(now - 100 * day, now)
        );
        assert!(
            problem(now + 1, now + 100 * day)
                .unwrap()
                .starts_with("not valid until 2027-01-15T08:00:01Z")
        );
        assert!(
            problem(now - day, now + 13 * day)
                .unwrap()
                .starts_with("expires in 312 h (at 2027-01-28T08:00:00Z)")
        );
        assert_eq!(problem(now - day, now + 14 * day), None);
        assert_eq!(validity_problem(None, None, now), None);
    }
}
