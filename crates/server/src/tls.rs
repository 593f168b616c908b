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
//!
//! Every certificate's validity dates are read at each load: the served one's expiry is a
//! metric, and expired, not yet valid, soon expiring or unreadable certificates are warned
//! about at load and at an hourly check.

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
    /// Each certificate's validity dates, in file order (the leaf first), or why they could
    /// not be read.
    pub dates: ChainDates,
}

/// Each certificate's dates, in file order, or why they could not be read.
pub type ChainDates = Vec<Result<CertDates, String>>;

/// One certificate's validity period (RFC 5280 §4.1.2.5) and subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertDates {
    /// The subject's distinguished name, to name the certificate in warnings.
    pub subject: String,
    /// The issuer's distinguished name.
    pub issuer: String,
    /// `notBefore`, Unix seconds.
    pub not_before: i64,
    /// `notAfter`, Unix seconds.
    pub not_after: i64,
}

impl Loaded {
    /// When the served certificate (the leaf, the first of the file) expires, if its dates
    /// could be read. The other certificates of the file do not count: clients build their
    /// own path, often not through an old cross-signature or a root appended to the file.
    #[must_use]
    pub fn expires_at(&self) -> Option<i64> {
        self.dates.first()?.as_ref().ok().map(|d| d.not_after)
    }

    /// What is wrong with the file's certificates at `now`, one message per certificate.
    #[must_use]
    pub fn problems(&self, now: i64) -> Vec<String> {
        Self::problems_of(&self.dates, now)
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    }

    /// [`Loaded::problems`] of `dates`, each with whether it breaks the chain now (a
    /// certificate expired or not yet valid) rather than soon or possibly.
    fn problems_of(dates: &[Result<CertDates, String>], now: i64) -> Vec<(bool, String)> {
        let n = dates.len();
        let leaf_issuer = dates
            .first()
            .and_then(|d| d.as_ref().ok())
            .map(|d| d.issuer.as_str());
        // Chains of public CAs have one to three intermediates; more is a CA bundle.
        let bundle = (n > MAX_CHAIN).then(|| {
            (
                false,
                format!(
                    "`tls.cert` holds {n} certificates, and every handshake sends them all: it \
                     should hold the server's certificate and its intermediates only (is a CA \
                     bundle appended?)"
                ),
            )
        });
        bundle
            .into_iter()
            .chain(
                dates
                    .iter()
                    .enumerate()
                    .filter_map(|(i, d)| cert_problem(i, n, d, leaf_issuer, now)),
            )
            .collect()
    }
}

/// What is wrong with certificate `i` (of `n`, the leaf first) at `now`, if anything, and
/// whether it breaks the chain now (expired or not yet valid).
fn cert_problem(
    i: usize,
    n: usize,
    dates: &Result<CertDates, String>,
    leaf_issuer: Option<&str>,
    now: i64,
) -> Option<(bool, String)> {
    let broken = |d: &CertDates| d.not_after <= now || d.not_before > now;
    match (i, dates) {
        (0, Ok(d)) => validity_problem(d, now).map(|p| {
            let advice = if d.not_before > now {
                ": clients will refuse it until then"
            } else {
                ": renew it (a new file is picked up without a restart)"
            };
            (broken(d), format!("the TLS certificate {p}{advice}"))
        }),
        (0, Err(e)) => Some((
            false,
            format!(
                "the TLS certificate's dates cannot be read ({e}); its expiry is not monitored \
                 (tessera_tls_certificate_expiry_timestamp_seconds is absent)"
            ),
        )),
        (_, Ok(d)) => validity_problem(d, now).map(|p| {
            let when = if broken(d) { "" } else { "once it expires, " };
            let consequence = if leaf_issuer == Some(d.subject.as_str()) {
                format!(
                    "it issued the served certificate, so {when}every client will refuse the \
                     chain: replace it with the CA's current intermediate"
                )
            } else {
                format!(
                    "{when}clients that build their path through it will refuse the chain \
                     (remove it if it is a root or an old cross-signature)"
                )
            };
            (
                broken(d),
                format!(
                    "certificate {} of {n} in `tls.cert` ({}) {p}; {consequence}",
                    i + 1,
                    d.subject
                ),
            )
        }),
        (_, Err(e)) => Some((
            false,
            format!(
                "certificate {} of {n} in `tls.cert` cannot be parsed ({e}); clients that \
                 need it will refuse the chain",
                i + 1
            ),
        )),
    }
}

/// More certificates than this in `tls.cert` get a warning.
const MAX_CHAIN: usize = 10;

/// Reads both files and builds a rustls server configuration (TLS 1.2 and 1.3, ALPN h2 and
/// http/1.1), checking that the key matches the certificate. The chain's validity dates
/// are read too; an expired chain still loads (clients will refuse it; the caller warns).
///
/// # Errors
/// [`TlsError`] naming the file that is missing, unreadable, not PEM, or mismatched.
pub fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let certs = read_certs(&files.cert)?;
    let dates = certs.iter().map(cert_dates).collect();
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
        dates,
    })
}

/// One certificate's subject and validity period (RFC 5280 §4.1.2.5).
fn cert_dates(der: &CertificateDer<'_>) -> Result<CertDates, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| e.to_string())?;
    let v = cert.validity();
    Ok(CertDates {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: v.not_before.timestamp(),
        not_after: v.not_after.timestamp(),
    })
}

/// Certificates expiring within this long get a warning at every (re)load.
const EXPIRY_WARNING: i64 = 14 * 24 * 3600;

/// What is wrong with a certificate's dates at `now`, if anything: a phrase to follow "the
/// certificate" (expired, not yet valid, expiring within 14 days).
fn validity_problem(d: &CertDates, now: i64) -> Option<String> {
    let at = crate::timestamp::rfc3339_or_seconds;
    if d.not_after <= now {
        Some(format!("expired at {}", at(d.not_after)))
    } else if d.not_before > now {
        Some(format!("is not valid until {}", at(d.not_before)))
    } else if d.not_after - now < EXPIRY_WARNING {
        let left = d.not_after - now;
        let left = if left < 60 {
            "under a minute".to_owned()
        } else if left < 3600 {
            format!("{} min", left / 60)
        } else if left < 2 * 86_400 {
            format!("{} h", left / 3600)
        } else {
            format!("{} days", left / 86_400)
        };
        Some(format!("expires in {left} (at {})", at(d.not_after)))
    } else {
        None
    }
}

/// Publishes the served certificate's expiry (`tessera_tls_certificate_expiry_timestamp_seconds`)
/// and logs what is wrong with the file's certificates (expired, not yet valid, expiring
/// within 14 days, unreadable dates).
pub(crate) fn note_validity(files: &TlsFiles, loaded: &Loaded, metrics: &Metrics) {
    metrics.set_tls_expiry(&files.cert, loaded.expires_at());
    for problem in loaded.problems(unix_now()) {
        tracing::warn!(cert = %files.cert.display(), "{problem}");
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
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
    // A FIFO, a device or a socket is refused without blocking ([`crate::files`]): the
    // reload task read `tls.cert` again on every change, and a FIFO hung it for good.
    crate::files::read_regular(path, limit).map_err(|e| match e {
        crate::files::ReadError::Io(e) => TlsError(format!(
            "`{what}` ({}): cannot read it: {e}",
            path.display()
        )),
        other => TlsError(format!("`{what}` ({}): {other}", path.display())),
    })
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
        // The markers as text: their `Debug` form was a list of byte values
        // (`MissingSectionEnd { end_marker: [67, 69, 82, ...] }`).
        rustls_pki_types::pem::Error::MissingSectionEnd { end_marker } => format!(
            "a section has no `-----END {}-----` line (is the file cut short, or still being \
             written?)",
            String::from_utf8_lossy(end_marker)
        ),
        rustls_pki_types::pem::Error::IllegalSectionStart { line } => format!(
            "malformed PEM: a `-----BEGIN` line is not valid: `{}`",
            String::from_utf8_lossy(line).trim()
        ),
        rustls_pki_types::pem::Error::Base64Decode(e) => {
            format!("malformed PEM: the base64 inside a section is invalid ({e})")
        }
        other => format!("malformed PEM ({other})"),
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

/// Re-reads the files; on success swaps the configuration in and returns the new
/// certificates' dates, on failure keeps the old one and returns the error. `last_error`
/// is the previous attempt's: a failure repeated unchanged on a retry is neither logged
/// nor counted again.
fn reload(
    files: &TlsFiles,
    config: &TlsConfig,
    metrics: &Metrics,
    why: &str,
    last_error: Option<&str>,
) -> Result<ChainDates, String> {
    match load(files) {
        Ok(new) => {
            config.replace(Arc::clone(&new.config));
            metrics.record_tls_reload(true);
            warn_if_key_exposed(&files.key);
            tracing::info!(cert = %files.cert.display(), trigger = why, "TLS certificate reloaded");
            note_validity(files, &new, metrics);
            Ok(new.dates)
        }
        Err(e) => {
            let e = e.0;
            if last_error != Some(e.as_str()) {
                metrics.record_tls_reload(false);
                tracing::error!(error = %e, trigger = why, "TLS certificate reload failed; still serving the previous certificate (retried every few seconds)");
            }
            Err(e)
        }
    }
}

/// How often the served certificates' dates are checked again: one that expires while the
/// server runs (a renewal that failed leaves the file unchanged) is warned about within
/// the hour, and one expiring within 14 days once a day.
const EXPIRY_CHECK_EVERY: Duration = Duration::from_secs(3600);

/// Logs the served certificates' problems at an hourly check: those that break the chain
/// now (expired, not yet valid) every time, the rest (expiring soon, unreadable) once a day.
fn recheck_validity(files: &TlsFiles, dates: &ChainDates, check: u64) {
    for (now_broken, problem) in Loaded::problems_of(dates, unix_now()) {
        if warn_at_check(now_broken, check) {
            tracing::warn!(cert = %files.cert.display(), "{problem}");
        }
    }
}

/// Whether hourly check number `check` (from 1) repeats a problem: every time for one that
/// breaks the chain now, at every 24th for the rest.
fn warn_at_check(now_broken: bool, check: u64) -> bool {
    now_broken || check.is_multiple_of(24)
}

/// Watches the files (mtime poll) and SIGHUP, reloading on either, until `stop` changes.
pub(crate) async fn watch(
    files: TlsFiles,
    config: TlsConfig,
    mut dates: ChainDates,
    metrics: Arc<Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut seen = versions(&files);
    let mut expiry_checks = tokio::time::interval_at(
        tokio::time::Instant::now() + EXPIRY_CHECK_EVERY,
        EXPIRY_CHECK_EVERY,
    );
    // After a pause (a stopped process, a suspended machine), one check, not a burst.
    expiry_checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut checks: u64 = 0;
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
        let outcome = tokio::select! {
            _ = stop.changed() => return,
            _ = expiry_checks.tick() => {
                checks += 1;
                recheck_validity(&files, &dates, checks);
                continue;
            }
            () = sighup => {
                seen = versions(&files);
                reload_off_runtime(&files, &config, &metrics, "SIGHUP", None).await
            }
            () = tokio::time::sleep(POLL_EVERY) => {
                let now = versions(&files);
                if now != seen {
                    seen = now;
                    reload_off_runtime(&files, &config, &metrics, "file change", None).await
                } else if let Some(last) = failing.take() {
                    reload_off_runtime(&files, &config, &metrics, "retry", Some(last)).await
                } else {
                    continue;
                }
            }
        };
        match outcome {
            Ok(new) => {
                dates = new;
                failing = None;
            }
            Err(e) => failing = Some(e),
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
) -> Result<ChainDates, String> {
    let (files, config, metrics) = (files.clone(), config.clone(), Arc::clone(metrics));
    tokio::task::spawn_blocking(move || {
        reload(&files, &config, &metrics, why, last_error.as_deref())
    })
    .await
    .unwrap_or_else(|e| Err(format!("the reload task failed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for `name` valid between the two days, as (PEM, key PEM).
    fn cert(name: &str, from: (i32, u8, u8), until: (i32, u8, u8)) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// Loads a `tls.cert` made of `chain` (the leaf first) with the leaf's key.
    fn load_chain(chain: &[&str], key: &str) -> Loaded {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("chain.pem"),
            key: dir.path().join("key.pem"),
        };
        std::fs::write(&files.cert, chain.concat()).unwrap();
        std::fs::write(&files.key, key).unwrap();
        load(&files).unwrap()
    }

    const DEC_2026: i64 = 1_796_000_000; // 2026-11-30

    #[test]
    fn the_served_expiry_is_the_leafs_and_an_old_cross_signature_is_named_not_fatal() {
        let (leaf, key) = cert("leaf.test", (2026, 1, 1), (2027, 6, 1));
        let (intermediate, _) = cert("intermediate.test", (2025, 1, 1), (2030, 1, 1));
        let (old_root, _) = cert("old-root.test", (2010, 1, 1), (2020, 5, 30));
        let loaded = load_chain(&[&leaf, &intermediate, &old_root], &key);
        assert_eq!(
            loaded.expires_at(),
            Some(1_811_808_000),
            "2027-06-01, the leaf's"
        );
        let problems = loaded.problems(DEC_2026);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with(
                "certificate 3 of 3 in `tls.cert` (CN=old-root.test) expired at 2020-05-30T00:00:00Z"
            ) && problems[0].contains("clients that build their path through it"),
            "{problems:?}"
        );
        assert!(
            Loaded::problems_of(&loaded.dates, DEC_2026)[0].0,
            "expired: re-logged at every hourly check"
        );
    }

    #[test]
    fn an_expiring_issuer_of_the_served_certificate_is_called_what_it_is() {
        // Self-signed, so the leaf's issuer is its own name: the second certificate has
        // that name as its subject, as the issuing intermediate of a full chain does.
        let (leaf, key) = cert("ca.test", (2026, 1, 1), (2027, 6, 1));
        let (issuer, _) = cert("ca.test", (2025, 1, 1), (2026, 12, 5));
        let (other, _) = cert("other.test", (2025, 1, 1), (2026, 12, 5));
        let problems = load_chain(&[&leaf, &issuer, &other], &key).problems(DEC_2026);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0]
                .starts_with("certificate 2 of 3 in `tls.cert` (CN=ca.test) expires in 4 days")
                && problems[0].ends_with(
                    "; it issued the served certificate, so once it expires, every client will \
                     refuse the chain: replace it with the CA's current intermediate"
                ),
            "{problems:?}"
        );
        assert!(
            problems[1].ends_with(
                "; once it expires, clients that build their path through it will refuse the \
                 chain (remove it if it is a root or an old cross-signature)"
            ),
            "{problems:?}"
        );
    }

    #[test]
    fn an_unparseable_extra_block_is_named_and_keeps_the_leafs_dates() {
        let (leaf, key) = cert("leaf.test", (2026, 1, 1), (2027, 6, 1));
        let junk = "-----BEGIN CERTIFICATE-----\nMAMCAQI=\n-----END CERTIFICATE-----\n";
        let loaded = load_chain(&[&leaf, junk], &key);
        assert_eq!(loaded.expires_at(), Some(1_811_808_000));
        let problems = loaded.problems(DEC_2026);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("certificate 2 of 2 in `tls.cert` cannot be parsed ("),
            "{problems:?}"
        );
    }

    #[test]
    fn a_ca_bundle_in_the_chain_file_is_pointed_out() {
        let (leaf, key) = cert("leaf.test", (2026, 1, 1), (2027, 6, 1));
        let others: Vec<String> = (0..10)
            .map(|i| cert(&format!("ca{i}.test"), (2020, 1, 1), (2040, 1, 1)).0)
            .collect();
        let mut chain = vec![leaf.as_str()];
        chain.extend(others.iter().map(String::as_str));
        let problems = load_chain(&chain, &key).problems(DEC_2026);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("`tls.cert` holds 11 certificates"),
            "{problems:?}"
        );
        chain.pop();
        assert!(load_chain(&chain, &key).problems(DEC_2026).is_empty());
    }

    #[test]
    fn expired_not_yet_valid_and_expiring_certificates_are_named() {
        let day = 24 * 3600;
        let now = 1_800_000_000; // 2027-01-15T08:00:00Z
        let problem = |from: i64, until: i64| {
            validity_problem(
                &CertDates {
                    subject: String::new(),
                    issuer: String::new(),
                    not_before: from,
                    not_after: until,
                },
                now,
            )
        };
        assert_eq!(problem(now - 100 * day, now + 100 * day), None);
        assert_eq!(problem(now - day, now + 14 * day), None);
        let starts = |p: Option<String>, with: &str| {
            assert!(p.as_deref().is_some_and(|p| p.starts_with(with)), "{p:?}");
        };
        starts(
            problem(now - 100 * day, now),
            "expired at 2027-01-15T08:00:00Z",
        );
        starts(
            problem(now + 1, now + 100 * day),
            "is not valid until 2027-01-15T08:00:01Z",
        );
        starts(
            problem(now - day, now + 13 * day),
            "expires in 13 days (at 2027-01-28T08:00:00Z)",
        );
        starts(problem(now - day, now + 30 * 3600), "expires in 30 h (at ");
        starts(problem(now - day, now + 600), "expires in 10 min (at ");
        starts(
            problem(now - day, now + 59),
            "expires in under a minute (at ",
        );
    }

    #[test]
    fn the_hourly_check_repeats_broken_chains_hourly_and_the_rest_daily() {
        assert!(warn_at_check(true, 1) && warn_at_check(true, 7));
        assert!(!warn_at_check(false, 1) && !warn_at_check(false, 23));
        assert!(warn_at_check(false, 24) && warn_at_check(false, 48));
    }
}
