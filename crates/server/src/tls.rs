//! Native TLS (rustls with the aws-lc-rs provider, the crypto library the rest of the
//! binary already uses) and certificate hot reload.
//!
//! The certificate chain and key are PEM files (`tls.cert`, `tls.key`). They are read and
//! checked at start (a bad file stops the server with a message naming it), then re-read
//! when either file's modification time changes (polled every few seconds) or on SIGHUP.
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
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        TlsError(format!(
            "`tls.key` ({}): no usable PEM private key: {}",
            files.key.display(),
            pem_error(&e)
        ))
    })?;
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

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
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

fn pem_error(e: &rustls_pki_types::pem::Error) -> String {
    match e {
        rustls_pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("{other:?}"),
    }
}

fn mtimes(files: &TlsFiles) -> (Option<SystemTime>, Option<SystemTime>) {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (m(&files.cert), m(&files.key))
}

/// Re-reads the files; on success swaps the configuration in, on failure keeps the old one.
fn reload(files: &TlsFiles, config: &TlsConfig, metrics: &Metrics, why: &str) {
    match load(files) {
        Ok(new) => {
            config.replace(new);
            metrics.record_tls_reload(true);
            tracing::info!(cert = %files.cert.display(), trigger = why, "TLS certificate reloaded");
        }
        Err(e) => {
            metrics.record_tls_reload(false);
            tracing::error!(error = %e, trigger = why, "TLS certificate reload failed; still serving the previous certificate");
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
    let mut seen = mtimes(&files);
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
                seen = mtimes(&files);
                let (files, config, metrics) = (files.clone(), config.clone(), Arc::clone(&metrics));
                let _ = tokio::task::spawn_blocking(move || reload(&files, &config, &metrics, "SIGHUP")).await;
            }
            () = tokio::time::sleep(POLL_EVERY) => {
                let now = mtimes(&files);
                if now != seen {
                    seen = now;
                    let (files, config, metrics) = (files.clone(), config.clone(), Arc::clone(&metrics));
                    let _ = tokio::task::spawn_blocking(move || reload(&files, &config, &metrics, "file change")).await;
                }
            }
        }
    }
}
