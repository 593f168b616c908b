//! The remote key set: discovery, JWKS fetch, and the cache in front of them.
//!
//! One fetch at a time (the `fetch_lock`), shared by everyone who needed it: a caller notes
//! the attempt counter, waits for the lock, and fetches only if no attempt finished in the
//! meantime. A background task refreshes before the keys go stale; a failed refresh keeps
//! the last good set (stale-if-error). An unknown `kid` may trigger a fetch, at most once
//! per cooldown, so a stream of made-up `kid`s costs the issuer one request per cooldown.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use reqwest::Url;
use serde::Deserialize;
use tessera_jose::header::Header;
use tessera_jose::{JwkSet, KeySet, VerifyingKey};

use crate::clock::Clock;
use crate::error::{Error, truncate};
use crate::fetch;

/// How the remote key set is fetched and cached.
///
/// A fetched set is fresh for what its `Cache-Control: max-age` has left once its `Age` is
/// subtracted (RFC 9111 §4.2.3: a cache in between may have held it for a while), kept
/// within `min_ttl..=max_ttl`; `default_ttl` when the answer has no usable `max-age`.
///
/// Build it with [`JwksOptions::default`] and change the fields you need.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksOptions {
    /// Lower bound on how long a fetched key set is used before a refresh (default 60 s):
    /// a `max-age` below it, or `no-cache`, is raised to it.
    pub min_ttl: Duration,
    /// Upper bound on the same (default 1 day).
    pub max_ttl: Duration,
    /// Lifetime when the answer has no usable `Cache-Control` (default 5 min).
    pub default_ttl: Duration,
    /// After a request presents an unknown `kid`, no further fetch for an unknown `kid`
    /// happens for this long (default 30 s; at least 1 s).
    pub unknown_kid_cooldown: Duration,
    /// Delay before the background task retries a failed refresh (default 10 s; not zero).
    pub retry_interval: Duration,
    /// Largest accepted answer (default 256 KiB).
    pub max_response_bytes: usize,
    /// Connect timeout (default 5 s).
    pub connect_timeout: Duration,
    /// Total time for one request, connect to last byte (default 10 s).
    pub timeout: Duration,
    /// Accept a discovered `jwks_uri` on another origin than the issuer (default false).
    pub allow_foreign_jwks_uri: bool,
}

impl Default for JwksOptions {
    fn default() -> Self {
        Self {
            min_ttl: Duration::from_secs(60),
            max_ttl: Duration::from_secs(24 * 3600),
            default_ttl: Duration::from_secs(300),
            unknown_kid_cooldown: Duration::from_secs(30),
            retry_interval: Duration::from_secs(10),
            max_response_bytes: 256 * 1024,
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            allow_foreign_jwks_uri: false,
        }
    }
}

impl JwksOptions {
    /// Refuses options that cannot work or would hammer the issuer. The timeouts are also
    /// those of the revocation feed, so [`crate::VerifierBuilder::build`] checks them whenever
    /// anything is fetched, static keys with a feed included.
    pub(crate) fn check(&self) -> Result<(), Error> {
        if self.min_ttl > self.max_ttl {
            return Err(Error::config(
                "`JwksOptions::min_ttl` must not exceed `JwksOptions::max_ttl`",
            ));
        }
        if self.min_ttl.is_zero() {
            return Err(Error::config(
                "`JwksOptions::min_ttl` must be at least one second",
            ));
        }
        // The cooldown is compared in whole seconds: under one it would be none at all, a
        // fetch for every made-up `kid`.
        if self.unknown_kid_cooldown < Duration::from_secs(1) {
            return Err(Error::config(
                "`JwksOptions::unknown_kid_cooldown` must be at least one second",
            ));
        }
        // Zero would ask a failing issuer again at once, forever.
        if self.retry_interval.is_zero() {
            return Err(Error::config(
                "`JwksOptions::retry_interval` must be positive",
            ));
        }
        // A zero timeout fails every request at once: the key set, or the revocation feed
        // (which uses the same two timeouts), would never be read.
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(Error::config(
                "`JwksOptions::timeout` and `JwksOptions::connect_timeout` must be positive \
                 (they bound key-set and revocation-feed requests)",
            ));
        }
        Ok(())
    }
}

/// What the verifier currently holds from the issuer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStatus {
    /// The key ids in the set.
    pub kids: Vec<String>,
    /// When the set was fetched (Unix seconds, verifier clock).
    pub fetched_at: i64,
    /// Until when it counts as fresh; after that it is still used while refreshes fail.
    pub fresh_until: i64,
    /// The URL it came from.
    pub jwks_uri: String,
}

/// Where the key set lives.
#[derive(Debug)]
pub(crate) enum Locator {
    /// Discover `jwks_uri` from the issuer's metadata.
    Issuer {
        /// The issuer URL, parsed.
        url: Url,
        /// The issuer identifier exactly as configured.
        given: String,
    },
    /// A JWKS URL given directly.
    JwksUri(Url),
}

/// A fetched key set.
#[derive(Debug)]
pub(crate) struct CachedKeys {
    pub(crate) set: KeySet,
    /// Changes whenever the set's content changes; verified-token cache entries carry it.
    pub(crate) epoch: u64,
    fetched_at: i64,
    fresh_until: i64,
    refresh_at: i64,
    body_digest: [u8; 32],
    jwks_uri: Url,
}

#[derive(Debug)]
pub(crate) struct JwksCache {
    locator: Locator,
    opts: JwksOptions,
    http: reqwest::Client,
    clock: Arc<dyn Clock>,
    discovered: Mutex<Option<Url>>,
    current: ArcSwapOption<CachedKeys>,
    /// Held for the whole of a fetch, by the task that runs it (see `refresh_inner`).
    fetch_lock: Arc<tokio::sync::Mutex<()>>,
    /// Finished fetch attempts (success or failure).
    attempts: AtomicU64,
    /// Start of the last fetch made on demand (unknown `kid` or no keys), Unix seconds.
    last_demand: AtomicI64,
    failures: AtomicU64,
}

impl JwksCache {
    pub(crate) fn new(
        locator: Locator,
        opts: JwksOptions,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, Error> {
        opts.check()?;
        let http = fetch::client(opts.connect_timeout, opts.timeout)?;
        Ok(Self {
            locator,
            opts,
            http,
            clock,
            discovered: Mutex::new(None),
            current: ArcSwapOption::empty(),
            fetch_lock: Arc::new(tokio::sync::Mutex::new(())),
            attempts: AtomicU64::new(0),
            last_demand: AtomicI64::new(i64::MIN),
            failures: AtomicU64::new(0),
        })
    }

    /// The key for a token header, fetching on demand when the `kid` is unknown (within the
    /// cooldown) or nothing has been fetched yet. Returns the key and the set's epoch.
    pub(crate) async fn key_for(
        self: &Arc<Self>,
        header: &Header,
    ) -> Result<(VerifyingKey, u64), Error> {
        // Read before the snapshot: a fetch finishing in between then counts as shared.
        let seen = self.attempts.load(Ordering::Acquire);
        let snapshot = self.current.load_full();
        if let Some(keys) = &snapshot {
            match keys.set.select(header) {
                Ok(key) => return Ok((key.clone(), keys.epoch)),
                Err(tessera_jose::Error::UnknownKid { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        tracing::debug!(
            target: "tessera::auth",
            kid = header.kid().unwrap_or_default(),
            "kid not in the key set"
        );
        // Failures are logged inside; the lookup below reports what is missing.
        let _ = self.refresh_inner(seen, true).await;
        match self.current.load_full() {
            Some(keys) => keys
                .set
                .select(header)
                .map(|k| (k.clone(), keys.epoch))
                .map_err(Error::from),
            None => Err(Error::KeysUnavailable),
        }
    }

    /// The cooldown rule, checked under the fetch lock: true (and the clock restarted) when
    /// no demand fetch started within the cooldown.
    fn demand_allowed(&self) -> bool {
        let now = self.clock.now();
        let cooldown = secs(self.opts.unknown_kid_cooldown);
        let last = self.last_demand.load(Ordering::Acquire);
        if now.saturating_sub(last) < cooldown {
            return false;
        }
        self.last_demand.store(now, Ordering::Release);
        true
    }

    /// Fetches the key set unless an attempt finished since the caller read `seen` (then
    /// that attempt's result is shared). On failure the previous set stays in place.
    pub(crate) async fn refresh(self: &Arc<Self>, seen: u64) -> Result<(), Error> {
        self.refresh_inner(seen, false).await
    }

    /// One fetch at a time. Everyone who needed keys while a fetch ran shares its result;
    /// a fetch on demand (unknown `kid`, no keys) also needs the cooldown to allow it. Both
    /// decisions happen under the lock, so no two callers can both decide to fetch.
    ///
    /// The fetch itself runs in its own task, which holds the lock until it is done: the
    /// caller may go away (its client disconnected, a timeout fired) without cancelling a
    /// fetch that has already spent the cooldown. Were it cancelled, a rotated key would stay
    /// unknown until the cooldown ended, as often as anyone sends a made-up `kid` and hangs up.
    async fn refresh_inner(self: &Arc<Self>, seen: u64, on_demand: bool) -> Result<(), Error> {
        let one_at_a_time = Arc::clone(&self.fetch_lock).lock_owned().await;
        if self.attempts.load(Ordering::Acquire) != seen {
            return Ok(());
        }
        if on_demand && !self.demand_allowed() {
            return Ok(());
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // Not on a Tokio runtime (the HTTP client needs one anyway): fetch in place.
            let outcome = self.fetch_and_store().await;
            drop(one_at_a_time);
            return outcome;
        };
        let this = Arc::clone(self);
        let task = runtime.spawn(async move {
            let outcome = this.fetch_and_store().await;
            drop(one_at_a_time);
            outcome
        });
        match task.await {
            Ok(outcome) => outcome,
            Err(e) => Err(Error::Fetch {
                url: self.locator_url().to_string(),
                reason: format!("the fetch task ended early: {e}"),
            }),
        }
    }

    /// Fetches the key set and puts it in place (or keeps the previous one on failure);
    /// counts the attempt. Called with the fetch lock held.
    async fn fetch_and_store(&self) -> Result<(), Error> {
        let result = self.fetch().await;
        let outcome = match result {
            Ok(keys) => {
                tracing::debug!(
                    target: "tessera::auth",
                    keys = keys.set.len(),
                    epoch = keys.epoch,
                    "key set fetched"
                );
                self.current.store(Some(Arc::new(keys)));
                Ok(())
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                // The discovered URL may be what changed: look it up again next time.
                if matches!(self.locator, Locator::Issuer { .. })
                    && let Ok(mut d) = self.discovered.lock()
                {
                    *d = None;
                }
                let stale = self.current.load().is_some();
                tracing::warn!(error = %e, serving_stale_keys = stale, "key set refresh failed");
                Err(e)
            }
        };
        self.attempts.fetch_add(1, Ordering::AcqRel);
        outcome
    }

    /// The configured issuer or JWKS URL, for errors.
    fn locator_url(&self) -> &Url {
        match &self.locator {
            Locator::Issuer { url, .. } | Locator::JwksUri(url) => url,
        }
    }

    /// Number of finished fetch attempts.
    pub(crate) fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Acquire)
    }

    pub(crate) fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    pub(crate) fn epoch(&self) -> Option<u64> {
        self.current.load().as_ref().map(|k| k.epoch)
    }

    pub(crate) fn status(&self) -> Option<KeyStatus> {
        self.current.load().as_ref().map(|k| KeyStatus {
            kids: k
                .set
                .iter()
                .filter_map(|k| k.kid().map(str::to_owned))
                .collect(),
            fetched_at: k.fetched_at,
            fresh_until: k.fresh_until,
            jwks_uri: k.jwks_uri.to_string(),
        })
    }

    /// Seconds until the background task should refresh.
    fn next_refresh_in(&self, last_failed: bool) -> Duration {
        if last_failed {
            return self.opts.retry_interval;
        }
        match self.current.load().as_ref() {
            Some(k) => {
                let wait = k.refresh_at.saturating_sub(self.clock.now()).max(1);
                Duration::from_secs(u64::try_from(wait).unwrap_or(1))
            }
            None => self.opts.retry_interval,
        }
    }

    async fn fetch(&self) -> Result<CachedKeys, Error> {
        let jwks_uri = self.jwks_uri().await?;
        let (headers, body) = fetch::get(
            &self.http,
            &jwks_uri,
            self.opts.max_response_bytes,
            "application/jwk-set+json, application/json",
            None,
        )
        .await?;
        let invalid = |reason: String| Error::InvalidDocument {
            url: jwks_uri.to_string(),
            reason,
        };
        let text = std::str::from_utf8(&body).map_err(|_| invalid("not UTF-8".into()))?;
        let jwks = JwkSet::from_json(text).map_err(|e| invalid(e.to_string()))?;
        let public = usable_public_keys(&jwks);
        if public.is_empty() {
            return Err(invalid("no usable public signing key".into()));
        }
        let set = KeySet::new(public).map_err(|e| invalid(e.to_string()))?;
        // RFC 9111 §4.2.3: what is left of `max-age` is the freshness lifetime minus the
        // answer's current age, the time a cache in between has held it (§5.1 `Age`).
        let ttl = fetch::max_age(&headers)
            .map(|max_age| max_age.saturating_sub(fetch::age(&headers).unwrap_or(0)))
            .map_or(self.opts.default_ttl, Duration::from_secs)
            .clamp(self.opts.min_ttl, self.opts.max_ttl);
        let ttl = secs(ttl);
        let now = self.clock.now();
        let digest = tessera_jose::crypto::sha256(&body);
        let epoch = match self.current.load().as_ref() {
            Some(prev) if prev.body_digest == digest => prev.epoch,
            Some(prev) => prev.epoch.wrapping_add(1),
            None => 1,
        };
        Ok(CachedKeys {
            set,
            epoch,
            fetched_at: now,
            fresh_until: now.saturating_add(ttl),
            // Refresh in the background when four fifths of the lifetime have passed.
            refresh_at: now.saturating_add((ttl.saturating_mul(4) / 5).max(1)),
            body_digest: digest,
            jwks_uri,
        })
    }

    async fn jwks_uri(&self) -> Result<Url, Error> {
        let (issuer, given) = match &self.locator {
            Locator::JwksUri(u) => return Ok(u.clone()),
            Locator::Issuer { url, given } => (url, given),
        };
        if let Some(u) = self.discovered.lock().ok().and_then(|d| d.clone()) {
            return Ok(u);
        }
        let uri = self.discover(issuer, given).await?;
        if let Ok(mut d) = self.discovered.lock() {
            *d = Some(uri.clone());
        }
        Ok(uri)
    }

    /// OpenID Connect Discovery 1.0 §4, then RFC 8414 §3: the metadata document, whose
    /// `issuer` must equal ours exactly and whose `jwks_uri` must be on our origin.
    ///
    /// "Ours" is the issuer URL without a terminating `/`, the prefix the well-known path
    /// is appended to (OpenID Connect Discovery §4.1 and §4.3; `tessera serve` publishes its
    /// issuer in this form), or the identifier exactly as configured, for issuers whose
    /// identifier ends in `/`. The document's value itself is compared as sent
    /// (RFC 8414 §3.3: identical).
    async fn discover(&self, issuer: &Url, given: &str) -> Result<Url, Error> {
        #[derive(Deserialize)]
        struct Metadata {
            issuer: String,
            jwks_uri: Option<String>,
        }
        let expected = issuer.as_str().trim_end_matches('/');
        let mut last = None;
        for url in metadata_urls(issuer) {
            let body = match fetch::get(&self.http, &url, 64 * 1024, "application/json", None).await
            {
                Ok((_, body)) => body,
                Err(e @ Error::Status { status: 404, .. }) => {
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let meta: Metadata =
                serde_json::from_slice(&body).map_err(|e| Error::InvalidDocument {
                    url: url.to_string(),
                    reason: truncate(&e.to_string(), 160),
                })?;
            if meta.issuer != expected && meta.issuer != given {
                return Err(Error::IssuerMismatch {
                    expected: expected.to_owned(),
                    found: truncate(&meta.issuer, 128),
                });
            }
            let Some(jwks_uri) = meta.jwks_uri else {
                return Err(Error::InvalidDocument {
                    url: url.to_string(),
                    reason: "no `jwks_uri`".into(),
                });
            };
            let jwks_uri = Url::parse(&jwks_uri).map_err(|e| Error::InvalidDocument {
                url: url.to_string(),
                reason: format!("`jwks_uri`: {e}"),
            })?;
            fetch::check_scheme(&jwks_uri)?;
            if jwks_uri.origin() != issuer.origin() && !self.opts.allow_foreign_jwks_uri {
                return Err(Error::UrlRefused {
                    url: jwks_uri.to_string(),
                    reason: "jwks_uri is not on the issuer's origin",
                });
            }
            return Ok(jwks_uri);
        }
        Err(last.unwrap_or(Error::KeysUnavailable))
    }
}

/// The background refresher: fetches at start, then shortly before the set goes stale,
/// and retries after failures. Runs until aborted (when the last verifier clone drops).
pub(crate) async fn run_refresher(cache: Arc<JwksCache>) {
    let mut delay = Duration::ZERO;
    loop {
        tokio::time::sleep(delay).await;
        let seen = cache.attempts();
        let failed = cache.refresh(seen).await.is_err();
        delay = cache.next_refresh_in(failed);
    }
}

/// The keys of a fetched JWK Set that may verify tokens. One odd entry must not take down
/// the others, so entries are dropped one by one:
///
/// * keys that cannot be used (unknown types, encryption keys, weak or malformed keys), at
///   debug level;
/// * every shared secret (`kty: oct`, RFC 7518 §6.4) and every key with private members
///   (`d`, RSA's primes and CRT values, RFC 7518 §6.2.2 and §6.3.2): a published key set
///   holds public keys only, so a secret there is a leak or an attack (whoever reads the
///   set can sign with it), never something to verify with;
/// * every key whose `kid` appears more than once: RFC 7517 §4.5 asks for distinct `kid`s
///   in a set, and which of them a token naming that `kid` means is ambiguous.
fn usable_public_keys(jwks: &JwkSet) -> Vec<VerifyingKey> {
    let mut keys = Vec::new();
    for jwk in &jwks.keys {
        let kid = truncate(jwk.kid.as_deref().unwrap_or_default(), 64);
        if jwk.kty == "oct" {
            tracing::warn!(%kid, "the JWK Set publishes a shared secret (kty oct); it is never used");
            continue;
        }
        if jwk.is_private() {
            tracing::warn!(%kid, "the JWK Set publishes a private key; it is never used");
            continue;
        }
        match VerifyingKey::from_jwk(jwk, None) {
            Ok(k) => keys.push(k),
            Err(why) => {
                tracing::debug!(target: "tessera::auth", %kid, reason = %why, "JWKS key skipped");
            }
        }
    }
    let duplicated: Vec<bool> = keys
        .iter()
        .map(|k| keys.iter().filter(|o| o.kid() == k.kid()).count() > 1)
        .collect();
    keys.into_iter()
        .zip(duplicated)
        .filter_map(|(key, duplicated)| {
            if duplicated {
                tracing::warn!(
                    kid = %truncate(key.kid().unwrap_or_default(), 64),
                    "the JWK Set has several keys with this kid; none of them is used"
                );
                None
            } else {
                Some(key)
            }
        })
        .collect()
}

/// The metadata URLs to try, in order: `{issuer}/.well-known/openid-configuration`
/// (OpenID Connect Discovery §4), then the RFC 8414 §3.1 form, which puts the well-known
/// segment before the issuer's path.
fn metadata_urls(issuer: &Url) -> [Url; 2] {
    let path = issuer.path().trim_end_matches('/');
    let mut openid = issuer.clone();
    openid.set_path(&format!("{path}/.well-known/openid-configuration"));
    let mut oauth = issuer.clone();
    oauth.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    [openid, oauth]
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}
