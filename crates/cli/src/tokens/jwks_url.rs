//! `--jwks-url`: fetch a JWK Set over HTTP(S), bounded in time and size, never following a
//! redirect to another host (a verifier must not let anyone else choose its keys).

use std::error::Error as _;
use std::time::Duration;

use reqwest::Url;
use reqwest::redirect::{Attempt, Policy};
use tessera_jose::{JwkSet, UnreadEntries};

use super::verify::Explain;
use crate::exit::Failure;

/// Connect and whole-request timeout.
const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest JWKS accepted.
const MAX_BYTES: usize = 1024 * 1024;
/// Same-host redirects followed at most.
const MAX_REDIRECTS: usize = 5;
/// Entries that are not JWKs named one by one on stderr; past these, only how many.
const LISTED: usize = 16;

/// Fetches and parses the JWK Set at `url`, with the entries left out because they are not
/// JWKs (each already named in a warning on stderr). Every failure is exit 2: the key source
/// is part of the command's configuration.
pub(super) async fn fetch(
    url: &str,
    explain: &Explain,
) -> Result<(JwkSet, UnreadEntries), Failure> {
    let parsed = Url::parse(url).map_err(|e| {
        // Not echoed when it may hold credentials (`user:password@`).
        let shown = if url.contains('@') { "" } else { url };
        Failure::usage(format!("--jwks-url `{shown}` is not a URL: {e}"))
    })?;
    // Messages show the URL with any password in it replaced.
    let redacted = redact(&parsed);
    let url = redacted.as_str();
    let host = parsed
        .host_str()
        .ok_or_else(|| Failure::usage(format!("--jwks-url `{url}` has no host")))?
        .to_owned();
    match parsed.scheme() {
        "https" => {}
        "http" => {
            if !is_loopback(&host) {
                crate::output::errln!(
                    "warning: fetching keys over plain http from {host}: anyone on the path \
                     can substitute them; use https"
                );
            }
        }
        other => {
            return Err(Failure::usage(format!(
                "--jwks-url must be an http:// or https:// URL, not {other}://"
            )));
        }
    }
    let scheme = parsed.scheme().to_owned();
    let origin = (host.clone(), parsed.port_or_known_default());
    let policy = Policy::custom(move |attempt: Attempt<'_>| {
        let next = attempt.url();
        let same_origin =
            next.host_str() == Some(origin.0.as_str()) && next.port_or_known_default() == origin.1;
        // A redirect may not leave the host, nor downgrade https to http.
        let downgrade = scheme == "https" && next.scheme() != "https";
        if attempt.previous().len() >= MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else if same_origin && !downgrade {
            attempt.follow()
        } else {
            attempt.stop()
        }
    });
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .connect_timeout(TIMEOUT)
        .redirect(policy)
        .user_agent(concat!("tessera/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Failure::refused(format!("cannot start the HTTP client: {e}")))?;
    explain.info(format!("fetching the JWKS from {url}"));
    let mut response = client
        .get(parsed)
        .header("accept", "application/jwk-set+json, application/json")
        .send()
        .await
        .map_err(|e| fetch_error(url, e))?;
    let status = response.status();
    if status.is_redirection() {
        let location = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .unwrap_or("(no location)")
            .chars()
            .take(200)
            .collect::<String>();
        return Err(Failure::usage(format!(
            "{url} redirects to {location}, another host or scheme, which is not followed; \
             pass that URL directly if you trust it"
        )));
    }
    if !status.is_success() {
        return Err(Failure::usage(format!(
            "fetching {url} returned HTTP {status}; check the URL"
        )));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BYTES as u64)
    {
        return Err(too_large(url));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| fetch_error(url, e))? {
        if body.len() + chunk.len() > MAX_BYTES {
            return Err(too_large(url));
        }
        body.extend_from_slice(&chunk);
    }
    explain.info(format!("received {} bytes (HTTP {status})", body.len()));
    let text = std::str::from_utf8(&body)
        .map_err(|_| Failure::usage(format!("{url} did not return a JWK Set (not UTF-8 text)")))?;
    // RFC 7517 §5: entries that are not JWKs as read here (a member of the wrong JSON type,
    // no `kty`, a member named twice) are ignored, as tessera-axum ignores them, so one odd
    // entry does not hide the issuer's other keys. Only a document that is not a JWK Set at
    // all is refused. The reasons name members and positions, never values (key material).
    let (set, unread) = JwkSet::from_json_lenient(text)
        .map_err(|e| Failure::usage(format!("{url} did not return a JWK Set: {e}")))?;
    warn_unread(url, &unread);
    Ok((set, unread))
}

/// Says on stderr how many entries of the set at `url` were skipped as not JWKs, and why,
/// by index: the first [`LISTED`] one by one, then how many more.
fn warn_unread(url: &str, unread: &UnreadEntries) {
    if unread.is_empty() {
        return;
    }
    let n = unread.len();
    crate::output::errln!(
        "warning: {url}: skipped {n} {} of the JWK Set that {} not a JWK (RFC 7517 §5)",
        if n == 1 { "entry" } else { "entries" },
        if n == 1 { "is" } else { "are" },
    );
    for (index, why) in unread.iter().take(LISTED) {
        crate::output::errln!("warning: {url}: skipped entry {index}: {why}");
    }
    if n > LISTED {
        crate::output::errln!(
            "warning: {url}: and {} more entries skipped, not listed",
            n - LISTED
        );
    }
}

fn too_large(url: &str) -> Failure {
    Failure::usage(format!(
        "{url} returned more than 1 MiB, which is not a plausible JWK Set; check the URL"
    ))
}

fn fetch_error(url: &str, e: reqwest::Error) -> Failure {
    // reqwest's own text repeats the URL, credentials included.
    let e = e.without_url();
    let mut message = if e.is_timeout() {
        format!("fetching {url} timed out after {} s", TIMEOUT.as_secs())
    } else {
        format!("cannot fetch {url}: {e}")
    };
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    Failure::usage(format!("{message}; check the URL and the network"))
}

/// `url` with its password, if any, replaced by `***`.
fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
