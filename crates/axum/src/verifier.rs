//! The verifier: configuration, key sources, the verification path and its result.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderValue;
use reqwest::Url;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tessera_jose::{
    Algorithm, Claims, JwkSet, KeySet, NoCustomClaims, Unverified, Validation, VerifyingKey,
};

use crate::clock::{Clock, SystemClock};
use crate::error::Error;
use crate::fetch;
use crate::jwks::{JwksCache, JwksOptions, KeyStatus, Locator};
use crate::revocation::{RevocationFeed, Revocations};
use crate::task::Background;
use crate::token_cache::{Entry, TokenCache};

/// The `typ` of RFC 9068 access tokens, required by default.
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Verifies bearer tokens: the state an axum app holds (directly, or as a sub-state reached
/// through [`axum_core::extract::FromRef`]) for the [`crate::Authenticated`] extractor.
///
/// Cloning is cheap and clones share everything (keys, caches, feed). Background tasks
/// (key refresh, feed polling) stop when the last clone is dropped.
///
/// A verifier may outlive the Tokio runtime it was built on (kept in a `static`, shared by
/// several runtimes): its background tasks end with that runtime, and the next call to
/// [`Verifier::verify`] (the extractor's), [`Verifier::refresh_keys`] or
/// [`Verifier::sync_revocations`] on a live runtime starts them again there. A runtime
/// that stays alive but is no longer driven (a current-thread runtime outside its
/// `block_on`) has not shut down: its tasks wait until it runs again, and so do
/// `refresh_keys` and `sync_revocations` calls that share a key fetch or feed read started
/// there (a request waits for such a fetch at most [`JwksOptions::max_fetch_wait`]).
///
/// A runtime per call (a `block_on` or `#[tokio::main]` per request in a synchronous app)
/// shuts down after every call, so the tasks run only while a call is under way, and a key
/// fetch or feed read still under way when it ends is cut short. Such a verifier works,
/// within bounds: the feed is read `poll_interval` after the last read, not on every call;
/// while key-set fetches fail (cut short included), the background refresh asks again only
/// [`JwksOptions::retry_interval`] after the last one; an unknown-`kid` fetch cut short
/// gives back its cooldown (at most once per cooldown), and a request sharing it then
/// fetches again. But revocations arrive only when a read completes within a call: keep one
/// runtime running for the verifier where they must arrive within the poll interval, or
/// call [`Verifier::sync_revocations`] yourself, and see
/// [`VerifierBuilder::revocation_feed_max_staleness`].
#[derive(Clone, Debug)]
pub struct Verifier {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    keys: Keys,
    validation: Validation,
    /// No audience is configured and `accept_any_audience` was not called: a token that
    /// names audiences is refused (RFC 7519 §4.1.3).
    refuse_audiences: bool,
    pub(crate) challenge: Challenge,
    token_cache: Option<TokenCache>,
    revocations: Option<Arc<Revocations>>,
    clock: Arc<dyn Clock>,
    hits: AtomicU64,
    misses: AtomicU64,
    /// The key-set refresh (remote keys only).
    refresher: Background,
    /// The revocation-feed poll (with a feed only).
    poller: Background,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.refresher.stop();
        self.poller.stop();
        if let Some(r) = &self.revocations {
            r.stop();
        }
    }
}

#[derive(Debug)]
enum Keys {
    Static(KeySet),
    Remote(Arc<JwksCache>),
}

/// The precomputed `WWW-Authenticate` pieces (RFC 6750 §3).
#[derive(Debug, Clone)]
pub(crate) struct Challenge {
    pub(crate) realm: Arc<str>,
}

/// Counters for metrics and tests.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifierStats {
    /// Tokens served from the verified-token cache (signature check skipped).
    pub token_cache_hits: u64,
    /// Tokens whose signature was checked.
    pub token_cache_misses: u64,
    /// Tokens currently in the verified-token cache.
    pub token_cache_len: usize,
    /// Key-set fetch attempts (successful or not); 0 for static keys.
    pub jwks_fetches: u64,
    /// Failed key-set fetch attempts.
    pub jwks_fetch_failures: u64,
    /// Revocation-feed requests made.
    pub feed_polls: u64,
    /// Failed revocation-feed syncs.
    pub feed_failures: u64,
    /// The feed cursor: the id of the last revocation event seen.
    pub feed_cursor: i64,
    /// Live revocation entries.
    pub revocations: usize,
    /// When the feed was last read successfully (verifier clock), if ever.
    pub feed_synced_at: Option<i64>,
}

/// Builds a [`Verifier`]. Start with [`Verifier::builder`].
///
/// Defaults are strict: the algorithm is the key's, `exp` is required, `typ` must be
/// `at+jwt` (RFC 9068), `iss` and `aud` are required once configured (with no audience
/// configured, a token that names one is refused: RFC 7519 §4.1.3), unknown `crit`
/// headers are refused, and 30 s of clock skew is allowed.
#[must_use]
#[derive(Debug)]
pub struct VerifierBuilder {
    source: Option<Result<Source, Error>>,
    issuer: Option<String>,
    /// The `iss` implied by the last [`VerifierBuilder::issuer_url`]; `issuer` wins over it.
    issuer_from_url: Option<String>,
    audiences: Vec<String>,
    any_audience: bool,
    any_issuer: bool,
    typ: Option<String>,
    leeway: u64,
    realm: String,
    token_cache_capacity: usize,
    jwks: JwksOptions,
    feed: Option<RevocationFeed>,
    feed_max_staleness: Option<Duration>,
    clock: Arc<dyn Clock>,
}

#[derive(Debug)]
enum Source {
    Static(KeySet),
    Issuer(String),
    JwksUri(String),
}

impl Verifier {
    /// A builder with the strict defaults.
    pub fn builder() -> VerifierBuilder {
        VerifierBuilder {
            source: None,
            issuer: None,
            issuer_from_url: None,
            audiences: Vec::new(),
            any_audience: false,
            any_issuer: false,
            typ: Some(ACCESS_TOKEN_TYP.to_owned()),
            leeway: 30,
            realm: "tessera".to_owned(),
            token_cache_capacity: 4096,
            jwks: JwksOptions::default(),
            feed: None,
            feed_max_staleness: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// Verifies a compact JWT and decodes its custom claims into `C`.
    ///
    /// Order: token cache lookup (SHA-256 of the token) → on a miss, structure and header
    /// checks, key selection by `kid` (fetching the key set if the `kid` is unknown, at most
    /// once per cooldown, and waiting for a fetch at most [`JwksOptions::max_fetch_wait`]),
    /// signature → on every path, claims decoding and validation at the current time →
    /// revocation.
    ///
    /// # Errors
    /// [`Error::Token`] with the JOSE core's precise reason, [`Error::Revoked`],
    /// [`Error::KeysUnavailable`] when no key set could ever be fetched,
    /// [`Error::KeysStale`] when the key set is stale beyond
    /// [`JwksOptions::max_staleness`] and cannot be refreshed, or
    /// [`Error::RevocationFeedStale`] for an otherwise valid token when
    /// [`VerifierBuilder::revocation_feed_max_staleness`] is set and exceeded.
    pub async fn verify<C: DeserializeOwned>(
        &self,
        token: &str,
    ) -> Result<Authenticated<C>, Error> {
        self.ensure_tasks();
        let inner = &self.inner;
        let digest = tessera_jose::crypto::sha256(token.as_bytes());
        let cached = match (&inner.token_cache, self.epoch()) {
            (Some(cache), Some(epoch)) => cache.get(&digest, epoch),
            _ => None,
        };
        let entry = match cached {
            Some(entry) => {
                inner.hits.fetch_add(1, Ordering::Relaxed);
                entry
            }
            None => {
                inner.misses.fetch_add(1, Ordering::Relaxed);
                let unverified = Unverified::parse(token, &inner.validation.limits)?;
                let (key, epoch) = match &inner.keys {
                    Keys::Static(set) => (set.select(unverified.header())?.clone(), 0),
                    Keys::Remote(cache) => cache.key_for(unverified.header()).await?,
                };
                let jws = unverified.verify(&key)?;
                // The time is read only now: the key lookup may have waited for a fetch,
                // which must not stretch the token's life (RFC 7519 §4.1.4).
                let now = inner.clock.now();
                // Validate before caching: only good tokens take cache space.
                jws.claims::<NoCustomClaims>(&inner.validation, now)?;
                let info = AccessInfo::from_payload(jws.payload())?;
                let entry = Entry {
                    jws: Arc::new(jws),
                    info: Arc::new(info),
                    epoch,
                };
                if let Some(cache) = &inner.token_cache {
                    cache.insert(digest, entry.clone());
                }
                entry
            }
        };
        // Claims are decoded and validated on every path: a cache hit is re-checked for
        // `exp`/`nbf` at the current time.
        let now = inner.clock.now();
        let claims: Claims<'static, C> =
            entry.jws.claims::<C>(&inner.validation, now)?.into_owned();
        // RFC 7519 §4.1.3: a principal that does not identify itself with a value of a
        // present `aud` MUST reject the token; with no audience configured, this verifier
        // identifies itself with none (a token for another API is not for us).
        if inner.refuse_audiences
            && let Some(aud) = &claims.registered.aud
        {
            return Err(tessera_jose::Error::AudienceMismatch {
                expected: Vec::new(),
                found: aud
                    .iter()
                    .take(8)
                    .map(|a| crate::error::truncate(a, 64))
                    .collect(),
            }
            .into());
        }
        if let Some(revocations) = &inner.revocations {
            let reg = &claims.registered;
            let user = entry.info.uid.as_deref().or(reg.sub.as_deref());
            let iat = reg.iat.map_or(0, |d| d.0);
            if let Some(reason) =
                revocations.check(reg.jti.as_deref(), entry.info.sid.as_deref(), user, iat)
            {
                return Err(Error::Revoked { reason });
            }
            // Not known to be revoked, but the feed may be too old to know: fail closed
            // when the caller asked for it.
            if revocations.is_stale(now) {
                return Err(Error::RevocationFeedStale);
            }
        }
        Ok(Authenticated {
            claims,
            info: entry.info,
            realm: Arc::clone(&inner.challenge.realm),
        })
    }

    /// Fetches the key set now, ignoring the cooldown: for readiness checks at startup, or
    /// after the issuer rotated its keys. A no-op for static keys.
    ///
    /// The answer comes from a fetch that starts after this call, so it reflects the key set
    /// the issuer publishes now: a fetch already under way (the background refresh, or one
    /// started by an unknown `kid`) may have been answered before a rotation, so the call
    /// waits for it to end and then fetches again. Concurrent callers share that next fetch.
    ///
    /// An empty key set (`{"keys":[]}`), or one with no key this verifier can use
    /// (unsupported key types or algorithms, encryption keys, malformed or leaked keys), is
    /// a successful fetch, not an error: the issuer trusts no key this verifier knows
    /// (RFC 7517 §5), and no token verifies until it publishes one. A readiness check that
    /// needs keys should also check that [`Verifier::key_status`] lists some `kids`.
    ///
    /// # Errors
    /// The fetch failure, also when the fetch was shared with other callers; the previous
    /// key set, if any, stays in use.
    pub async fn refresh_keys(&self) -> Result<(), Error> {
        self.ensure_tasks();
        match &self.inner.keys {
            Keys::Static(_) => Ok(()),
            Keys::Remote(cache) => cache.refresh(cache.next_attempt()).await,
        }
    }

    /// Reads the revocation feed now, up to its end: a read that starts after this call, so
    /// it sees every revocation made before it. Concurrent callers, the background poll
    /// included, share reads: those that ask before a read sends its request share it,
    /// those that ask while it is under way share the next. Returns the number of new
    /// events the read applied; 0 without a feed.
    ///
    /// # Errors
    /// The fetch failure (the next read resumes from the same cursor), also when the read
    /// was shared; [`Error::NoRuntime`] outside a Tokio runtime.
    pub async fn sync_revocations(&self) -> Result<usize, Error> {
        self.ensure_tasks();
        match &self.inner.revocations {
            Some(r) => r.sync().await,
            None => Ok(0),
        }
    }

    /// The remote key set currently held, if any (`None` for static keys): its `kid`s,
    /// where it came from, and until when it is fresh and usable.
    #[must_use]
    pub fn key_status(&self) -> Option<KeyStatus> {
        match &self.inner.keys {
            Keys::Static(_) => None,
            Keys::Remote(cache) => cache.status(),
        }
    }

    /// Counters: cache hits and misses, fetches, feed state.
    #[must_use]
    pub fn stats(&self) -> VerifierStats {
        let inner = &self.inner;
        let (jwks_fetches, jwks_fetch_failures) = match &inner.keys {
            Keys::Static(_) => (0, 0),
            Keys::Remote(c) => (c.attempts(), c.failures()),
        };
        let feed = inner.revocations.as_deref();
        VerifierStats {
            token_cache_hits: inner.hits.load(Ordering::Relaxed),
            token_cache_misses: inner.misses.load(Ordering::Relaxed),
            token_cache_len: inner.token_cache.as_ref().map_or(0, TokenCache::len),
            jwks_fetches,
            jwks_fetch_failures,
            feed_polls: feed.map_or(0, Revocations::polls),
            feed_failures: feed.map_or(0, Revocations::failures),
            feed_cursor: feed.map_or(0, Revocations::cursor),
            revocations: feed.map_or(0, Revocations::len),
            feed_synced_at: feed.and_then(Revocations::last_sync),
        }
    }

    /// Starts the background tasks on the current runtime if they are not running: at
    /// build, and again after the runtime they ran on shut down (see [`Verifier`]).
    fn ensure_tasks(&self) {
        let inner = &self.inner;
        if let Keys::Remote(cache) = &inner.keys {
            inner
                .refresher
                .ensure(|| crate::jwks::run_refresher(Arc::clone(cache)));
        }
        if let Some(r) = &inner.revocations {
            inner
                .poller
                .ensure(|| crate::revocation::run_poller(Arc::clone(r)));
        }
    }

    pub(crate) fn challenge(&self) -> &Challenge {
        &self.inner.challenge
    }

    fn epoch(&self) -> Option<u64> {
        match &self.inner.keys {
            Keys::Static(_) => Some(0),
            Keys::Remote(cache) => cache.epoch(),
        }
    }
}

impl VerifierBuilder {
    /// Verifies with one key (its algorithm is the only one accepted).
    pub fn key(mut self, key: VerifyingKey) -> Self {
        self.source = Some(
            KeySet::new([key])
                .map(Source::Static)
                .map_err(|e| key_error(&e)),
        );
        self
    }

    /// Verifies with a set of keys, selected by `kid`.
    pub fn keys(mut self, keys: KeySet) -> Self {
        self.source = Some(Ok(Source::Static(keys)));
        self
    }

    /// Verifies with a shared HMAC secret (the tutorial's `SECRET_KEY` setup). The secret
    /// must be at least as long as the hash (32 bytes for HS256, RFC 7518 §3.2).
    ///
    /// The key's `kid` is the RFC 7638 thumbprint of the secret as an `oct` JWK, which is
    /// the `kid` `tessera serve` puts on tokens signed with a configured secret
    /// (`signing.secret`); tokens without a `kid` (other libraries') are accepted too.
    pub fn hmac_secret(mut self, alg: Algorithm, secret: &[u8]) -> Self {
        self.source = Some(
            VerifyingKey::from_hmac_secret(alg, secret)
                .and_then(|k| {
                    // The same function the server's config loader names its key with.
                    let kid = k.thumbprint()?;
                    KeySet::new([k.with_kid(kid)])
                })
                .map(Source::Static)
                .map_err(|e| key_error(&e)),
        );
        self
    }

    /// Verifies with the keys of a JWK Set document (e.g. a JWKS file the application
    /// read), loaded strictly ([`KeySet::from_jwks`]): keys meant for encryption (`use: enc`,
    /// or a JWE `alg` or encryption `key_ops` and no `use`) are skipped, and any other key
    /// that cannot verify (an unknown type, an RSA key without `alg`, a weak key) makes
    /// [`VerifierBuilder::build`] fail.
    pub fn jwks_json(mut self, json: &str) -> Self {
        self.source = Some(
            JwkSet::from_json(json)
                .and_then(|set| KeySet::from_jwks(&set))
                .map(Source::Static)
                .map_err(|e| key_error(&e)),
        );
        self
    }

    /// Fetches keys from an issuer: its metadata (`/.well-known/openid-configuration`,
    /// else `/.well-known/oauth-authorization-server`) names the `jwks_uri`, which must be on
    /// the issuer's origin, and an `issuer` that must be this URL exactly, either without a
    /// terminating `/` (the form `tessera serve` publishes) or as given (RFC 8414 §3.3).
    /// Also requires `iss` to equal this URL without a terminating `/` (unless
    /// [`VerifierBuilder::issuer`] says otherwise, in any order). `https`, or `http` to
    /// loopback only. Called again, the last URL is used for both keys and `iss`.
    pub fn issuer_url(mut self, url: impl Into<String>) -> Self {
        let url = url.into();
        self.issuer_from_url = Some(url.trim_end_matches('/').to_owned());
        self.source = Some(Ok(Source::Issuer(url)));
        self
    }

    /// Fetches keys from a JWKS URL directly (no discovery). Set the issuer with
    /// [`VerifierBuilder::issuer`]: [`VerifierBuilder::build`] refuses a JWKS URL without one
    /// unless [`VerifierBuilder::accept_any_issuer`] is called.
    pub fn jwks_uri(mut self, url: impl Into<String>) -> Self {
        self.source = Some(Ok(Source::JwksUri(url.into())));
        self
    }

    /// Requires `iss` to equal `issuer` (instead of the URL given to
    /// [`VerifierBuilder::issuer_url`], if any).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// With keys from [`VerifierBuilder::jwks_uri`] and no [`VerifierBuilder::issuer`],
    /// accepts tokens whatever their `iss` says, instead of refusing to build.
    ///
    /// # Security
    /// A key set says nothing about whose tokens it signs: one JWKS may serve many issuers
    /// or tenants, and without an `iss` check a token of any of them is accepted (RFC 8725
    /// §3.8). Call this only when the JWKS URL belongs to one issuer alone.
    pub fn accept_any_issuer(mut self) -> Self {
        self.any_issuer = true;
        self
    }

    /// Accepts tokens for this audience; `aud` becomes required. Call again to accept
    /// several.
    ///
    /// Without any audience, tokens that carry `aud` are refused (RFC 7519 §4.1.3: this
    /// service is not one of the audiences they name) and tokens without it are accepted
    /// (the tutorial profile's); see [`VerifierBuilder::accept_any_audience`].
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// With no [`VerifierBuilder::audience`] configured, accepts tokens whatever their
    /// `aud` says, instead of refusing those that carry one.
    ///
    /// # Security
    /// The `aud` check keeps a token issued for another API from being accepted by this one
    /// (RFC 8725 §3.9). Turn it off only when the issuer's tokens are all meant for this
    /// service.
    pub fn accept_any_audience(mut self) -> Self {
        self.any_audience = true;
        self
    }

    /// Requires this header `typ` instead of `at+jwt`.
    pub fn required_typ(mut self, typ: impl Into<String>) -> Self {
        self.typ = Some(typ.into());
        self
    }

    /// Accepts any `typ` (or none): for plain JWTs such as the seed tutorial's, which are
    /// not RFC 9068 access tokens.
    ///
    /// # Security
    /// The `typ` check keeps other JWTs of the same issuer (ID tokens, logout tokens) from
    /// being accepted as access tokens (RFC 8725 §3.11). Turn it off only when the issuer
    /// signs nothing else with these keys.
    pub fn accept_any_typ(mut self) -> Self {
        self.typ = None;
        self
    }

    /// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds (default 30).
    pub fn leeway(mut self, seconds: u64) -> Self {
        self.leeway = seconds;
        self
    }

    /// The `realm` of `WWW-Authenticate` challenges (default `tessera`).
    pub fn realm(mut self, realm: impl Into<String>) -> Self {
        self.realm = realm.into();
        self
    }

    /// Maximum entries of the verified-token cache (default 4096; 0 turns it off).
    pub fn token_cache_capacity(mut self, entries: usize) -> Self {
        self.token_cache_capacity = entries;
        self
    }

    /// How remote keys are fetched and cached. Its `timeout` and `connect_timeout` also
    /// bound the revocation feed's requests, so [`VerifierBuilder::build`] checks the options
    /// whenever keys or a feed are fetched, with static keys too.
    pub fn jwks_options(mut self, options: JwksOptions) -> Self {
        self.jwks = options;
        self
    }

    /// Follows the issuer's revocation feed, so revoked tokens are refused within about one
    /// poll interval without a per-request call to the issuer.
    ///
    /// # Security
    /// By default the feed fails open: before its first successful read, and for as long as
    /// reads fail, tokens revoked meanwhile are accepted (until they expire). Set
    /// [`VerifierBuilder::revocation_feed_max_staleness`] to refuse instead.
    pub fn revocation_feed(mut self, feed: RevocationFeed) -> Self {
        self.feed = Some(feed);
        self
    }

    /// Fails closed when the revocation feed has not been read successfully for longer than
    /// `max` (counted from when the verifier was built while it has never been read): valid
    /// tokens are then refused with [`Error::RevocationFeedStale`], which the extractor
    /// answers with 503 `temporarily_unavailable`, the answer for unavailable keys, until a
    /// poll succeeds again. Off by default (the feed fails open).
    ///
    /// The trade-off: an outage of the issuer's feed becomes an outage of this service
    /// after `max`, instead of a window in which revoked tokens are still accepted. Choose
    /// several poll intervals (say 30 s for the 1 s default), so one slow poll refuses
    /// nothing.
    ///
    /// # Errors
    /// [`VerifierBuilder::build`] fails with [`Error::Config`] without a revocation feed, or
    /// when `max` is under one second or under the feed's poll interval.
    pub fn revocation_feed_max_staleness(mut self, max: Duration) -> Self {
        self.feed_max_staleness = Some(max);
        self
    }

    /// The time source (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Builds the verifier and starts its background tasks (key refresh, feed polling).
    ///
    /// # Errors
    /// [`Error::Config`] for a missing key source, a bad key or URL, a
    /// [`VerifierBuilder::jwks_uri`] without [`VerifierBuilder::issuer`] (see
    /// [`VerifierBuilder::accept_any_issuer`]), or options out of range; [`Error::NoRuntime`] when remote keys or a feed are configured outside a Tokio
    /// runtime.
    pub fn build(self) -> Result<Verifier, Error> {
        let source = self
            .source
            .ok_or_else(|| Error::config("no key source: set a key, a JWKS or an issuer URL"))??;
        let realm = self.realm;
        if realm.is_empty() || realm.contains(['"', '\\']) || HeaderValue::from_str(&realm).is_err()
        {
            return Err(Error::config(
                "`realm` must be non-empty visible ASCII without quotes or backslashes",
            ));
        }
        let mut validation = Validation::new().with_leeway(self.leeway);
        validation.issuer = self.issuer.or(self.issuer_from_url);
        // RFC 8725 §3.8: validate the issuer. Keys from a bare JWKS URL do not name it.
        if matches!(source, Source::JwksUri(_)) && validation.issuer.is_none() && !self.any_issuer {
            return Err(Error::config(
                "keys from `jwks_uri` need `issuer` (the `iss` to require), or \
                 `accept_any_issuer()` when that key set signs for one issuer only",
            ));
        }
        let refuse_audiences = self.audiences.is_empty() && !self.any_audience;
        validation.audiences = self.audiences;
        validation.required_typ = self.typ;
        let needs_runtime = !matches!(source, Source::Static(_)) || self.feed.is_some();
        // The feed's requests use the same timeouts as key fetches: check them whenever
        // anything is fetched, not only when keys are (static keys with a feed included).
        if needs_runtime {
            self.jwks.check()?;
        }
        if needs_runtime && tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoRuntime);
        }
        let mut issuer_url = None;
        let keys = match source {
            Source::Static(set) => {
                if set.is_empty() {
                    return Err(Error::config("the key set is empty"));
                }
                Keys::Static(set)
            }
            Source::Issuer(given) => {
                let url = fetch::parse_url(&given, "issuer_url")?;
                issuer_url = Some(url.clone());
                Keys::Remote(Arc::new(JwksCache::new(
                    Locator::Issuer { url, given },
                    self.jwks.clone(),
                    Arc::clone(&self.clock),
                )?))
            }
            Source::JwksUri(url) => Keys::Remote(Arc::new(JwksCache::new(
                Locator::JwksUri(fetch::parse_url(&url, "jwks_uri")?),
                self.jwks.clone(),
                Arc::clone(&self.clock),
            )?)),
        };
        let revocations = match self.feed {
            None if self.feed_max_staleness.is_some() => {
                return Err(Error::config(
                    "`revocation_feed_max_staleness` is set but there is no revocation feed",
                ));
            }
            None => None,
            Some(feed) => {
                let url = match (&feed.url, &issuer_url) {
                    (Some(u), _) => fetch::parse_url(u, "revocation feed url")?,
                    (None, Some(issuer)) => feed_url(issuer),
                    (None, None) => {
                        return Err(Error::config(
                            "the revocation feed needs a URL when keys do not come from an issuer URL",
                        ));
                    }
                };
                let http = fetch::client(self.jwks.connect_timeout, self.jwks.timeout)?;
                Some(Arc::new(Revocations::new(
                    feed,
                    url,
                    http,
                    self.feed_max_staleness,
                    Arc::clone(&self.clock),
                )?))
            }
        };
        let token_cache =
            (self.token_cache_capacity > 0).then(|| TokenCache::new(self.token_cache_capacity));
        let verifier = Verifier {
            inner: Arc::new(Inner {
                keys,
                validation,
                refuse_audiences,
                challenge: Challenge {
                    realm: realm.into(),
                },
                token_cache,
                revocations,
                clock: self.clock,
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
                refresher: Background::default(),
                poller: Background::default(),
            }),
        };
        verifier.ensure_tasks();
        Ok(verifier)
    }
}

/// A key given in configuration is the caller's mistake, not untrusted input.
fn key_error(e: &tessera_jose::Error) -> Error {
    Error::config(format!("key: {e}"))
}

fn feed_url(issuer: &Url) -> Url {
    let mut url = issuer.clone();
    let path = format!("{}/revocations", issuer.path().trim_end_matches('/'));
    url.set_path(&path);
    url.set_query(None);
    url
}

/// What the verifier reads from every token besides the caller's claims: roles, scopes,
/// session and user ids. Lenient: a claim of an unexpected type is treated as absent, so a
/// third-party token with, say, a numeric `role` still verifies (and has no role).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct AccessInfo {
    pub(crate) roles: Vec<String>,
    pub(crate) scopes: Vec<String>,
    pub(crate) sid: Option<String>,
    pub(crate) uid: Option<String>,
    pub(crate) client_id: Option<String>,
}

impl AccessInfo {
    fn from_payload(payload: &[u8]) -> Result<Self, Error> {
        #[derive(Deserialize)]
        struct Raw {
            #[serde(default)]
            role: Lenient,
            #[serde(default)]
            roles: Lenient,
            #[serde(default)]
            scope: Lenient,
            #[serde(default)]
            scp: Lenient,
            #[serde(default)]
            sid: Lenient,
            #[serde(default)]
            uid: Lenient,
            #[serde(default)]
            client_id: Lenient,
        }
        let raw: Raw =
            serde_json::from_slice(payload).map_err(|e| tessera_jose::Error::MalformedClaims {
                reason: crate::error::truncate(&e.to_string(), 160),
            })?;
        // `role` (the tutorial's single role) first, then the `roles` list.
        let mut roles = raw.role.into_list();
        for r in raw.roles.into_list() {
            if !roles.contains(&r) {
                roles.push(r);
            }
        }
        // RFC 9068 §2.2.3: `scope` is space-separated; `scp` (a list) is a common variant.
        let mut scopes: Vec<String> = raw
            .scope
            .into_one()
            .map(|s| s.split_ascii_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
        scopes.extend(raw.scp.into_list());
        Ok(Self {
            roles,
            scopes,
            sid: raw.sid.into_one(),
            uid: raw.uid.into_one(),
            client_id: raw.client_id.into_one(),
        })
    }
}

/// A claim read leniently: a string, a list of strings, or anything else (ignored).
#[derive(Debug, Default)]
enum Lenient {
    #[default]
    Absent,
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for Lenient {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape {
            One(String),
            Many(Vec<String>),
            Other(serde::de::IgnoredAny),
        }
        Ok(match Shape::deserialize(d)? {
            Shape::One(s) => Self::One(s),
            Shape::Many(v) => Self::Many(v),
            Shape::Other(_) => Self::Absent,
        })
    }
}

impl Lenient {
    fn into_list(self) -> Vec<String> {
        match self {
            Self::Absent => Vec::new(),
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }

    fn into_one(self) -> Option<String> {
        match self {
            Self::One(s) => Some(s),
            _ => None,
        }
    }
}

/// A verified, valid, unrevoked access token: what the [`crate::Authenticated`] extractor
/// hands a handler.
///
/// `C` is the caller's own claims type (any `serde::Deserialize` struct; it sees every
/// claim except the registered ones, which are in [`Authenticated::registered`]). It
/// dereferences to `C`, so `user.role` reads a custom claim directly.
#[derive(Debug, Clone)]
pub struct Authenticated<C = NoCustomClaims> {
    claims: Claims<'static, C>,
    info: Arc<AccessInfo>,
    realm: Arc<str>,
}

impl<C> Authenticated<C> {
    /// The registered claims (`iss`, `sub`, `aud`, `exp`, `nbf`, `iat`, `jti`).
    #[must_use]
    pub fn registered(&self) -> &tessera_jose::RegisteredClaims<'static> {
        &self.claims.registered
    }

    /// The caller's custom claims.
    #[must_use]
    pub fn custom(&self) -> &C {
        &self.claims.custom
    }

    /// All claims, by value.
    #[must_use]
    pub fn into_claims(self) -> Claims<'static, C> {
        self.claims
    }

    /// `sub`: the user id in Tessera's standard profile, the username in its tutorial
    /// profile, the client id for a client's own token.
    #[must_use]
    pub fn subject(&self) -> Option<&str> {
        self.claims.registered.sub.as_deref()
    }

    /// The user id: `uid` when present (Tessera's tutorial profile), else `sub`.
    #[must_use]
    pub fn user_id(&self) -> Option<&str> {
        self.info.uid.as_deref().or_else(|| self.subject())
    }

    /// Roles: `role`, then the members of `roles`.
    #[must_use]
    pub fn roles(&self) -> &[String] {
        &self.info.roles
    }

    /// True if the token carries `role`.
    #[must_use]
    pub fn has_role(&self, role: &str) -> bool {
        self.info.roles.iter().any(|r| r == role)
    }

    /// Scopes: the words of `scope`, then the members of `scp`.
    #[must_use]
    pub fn scopes(&self) -> &[String] {
        &self.info.scopes
    }

    /// True if the token was granted `scope`.
    #[must_use]
    pub fn has_scope(&self, scope: &str) -> bool {
        self.info.scopes.iter().any(|s| s == scope)
    }

    /// `client_id` (RFC 9068 §2.2).
    #[must_use]
    pub fn client_id(&self) -> Option<&str> {
        self.info.client_id.as_deref()
    }

    /// `sid`: the session the token belongs to.
    #[must_use]
    pub fn session_id(&self) -> Option<&str> {
        self.info.sid.as_deref()
    }

    /// Refuses with 403 `insufficient_scope` unless the token carries `role`:
    /// `user.require_role("admin")?;` in a handler returning `Result<_, AuthRejection>`.
    ///
    /// # Errors
    /// [`crate::AuthRejection`] for [`Error::MissingRole`].
    pub fn require_role(&self, role: &str) -> Result<(), crate::AuthRejection> {
        if self.has_role(role) {
            Ok(())
        } else {
            Err(self.reject(Error::MissingRole {
                role: role.to_owned(),
            }))
        }
    }

    /// Refuses with 403 `insufficient_scope` unless the token was granted `scope`.
    ///
    /// # Errors
    /// [`crate::AuthRejection`] for [`Error::MissingScope`].
    pub fn require_scope(&self, scope: &str) -> Result<(), crate::AuthRejection> {
        if self.has_scope(scope) {
            Ok(())
        } else {
            Err(self.reject(Error::MissingScope {
                scope: scope.to_owned(),
            }))
        }
    }

    fn reject(&self, error: Error) -> crate::AuthRejection {
        crate::AuthRejection::new(error, Arc::clone(&self.realm))
    }
}

impl<C> std::ops::Deref for Authenticated<C> {
    type Target = C;

    fn deref(&self) -> &C {
        &self.claims.custom
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_info_reads_tessera_and_common_shapes_leniently() {
        let info = AccessInfo::from_payload(
            br#"{"role":"admin","roles":["admin","user"],"scope":"a b","scp":["c"],"sid":"s","uid":"u","client_id":"x"}"#,
        )
        .unwrap();
        assert_eq!(info.roles, ["admin", "user"]);
        assert_eq!(info.scopes, ["a", "b", "c"]);
        assert_eq!(info.sid.as_deref(), Some("s"));
        assert_eq!(info.uid.as_deref(), Some("u"));
        let odd = AccessInfo::from_payload(br#"{"role":7,"roles":"one","scope":["x"]}"#).unwrap();
        assert_eq!(odd.roles, ["one"]);
        assert!(odd.scopes.is_empty());
        assert!(AccessInfo::from_payload(b"\"x\"").is_err());
    }

    #[test]
    fn building_without_a_key_source_or_with_a_weak_secret_is_a_config_error() {
        assert!(matches!(
            Verifier::builder().build(),
            Err(Error::Config { .. })
        ));
        assert!(matches!(
            Verifier::builder()
                .hmac_secret(Algorithm::Hs256, b"short")
                .build(),
            Err(Error::Config { .. })
        ));
        assert!(matches!(
            Verifier::builder()
                .hmac_secret(Algorithm::Hs256, &[1; 32])
                .realm("a\"b")
                .build(),
            Err(Error::Config { .. })
        ));
    }

    #[test]
    fn remote_keys_need_a_runtime() {
        assert_eq!(
            Verifier::builder()
                .issuer_url("https://auth.example")
                .build()
                .unwrap_err(),
            Error::NoRuntime
        );
    }

    #[test]
    fn the_feed_url_follows_the_issuer_path() {
        let u = feed_url(&Url::parse("https://a.example/tenant/").unwrap());
        assert_eq!(u.as_str(), "https://a.example/tenant/revocations");
    }
}
