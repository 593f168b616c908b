//! The remote key set: discovery, JWKS fetch, and the cache in front of them.
//!
//! One fetch at a time, shared by everyone who needed it: a caller notes how many attempts
//! have finished, then asks for a fetch; the decision (one is already running, one finished
//! meanwhile, the cooldown forbids it, or start one) is made under a lock held for no more
//! than that, and the fetch itself runs in its own task. A request waits for the fetch it
//! needs (its own or one under way) for at most `max_fetch_wait`, then answers with the keys
//! at hand; it never queues behind the network. A background task refreshes before the
//! keys go stale; a failed refresh keeps the last good set (stale-if-error), but a set
//! fetched successfully replaces it even when it holds no key this verifier can use (empty,
//! or only keys it does not support: RFC 7517 §5, the issuer trusts no key we know). An
//! unknown `kid` may trigger a fetch, at most once per cooldown (twice when the runtime of
//! one shuts down before its answer, which gives the cooldown back), so a stream of made-up
//! `kid`s costs the issuer one request per cooldown, at most two.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use reqwest::Url;
use serde::Deserialize;
use tessera_jose::header::Header;
use tessera_jose::{JwkSet, KeySet, VerifyingKey};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::error::{Error, truncate};
use crate::fetch;

/// How the remote key set is fetched and cached.
///
/// A fetched set is fresh for what its `Cache-Control: max-age` has left once its `Age` is
/// subtracted (RFC 9111 §4.2.3: a cache in between may have held it for a while), kept
/// within `min_ttl..=max_ttl`; `default_ttl` when the answer has no `max-age`. An invalid
/// `max-age` (not digits only: `+5`, `-1`, `1.5`) makes the answer stale (RFC 9111 §4.2.1),
/// so `min_ttl` applies; one too large to represent saturates (RFC 9111 §1.2.2), so
/// `max_ttl` applies; of several, the first counts.
///
/// Build it with [`JwksOptions::default`] and change the fields you need.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksOptions {
    /// Lower bound on how long a fetched key set is used before a refresh (default 60 s):
    /// a `max-age` below it, an invalid one, `no-cache` or `no-store` is raised to it.
    pub min_ttl: Duration,
    /// Upper bound on the same (default 1 day).
    pub max_ttl: Duration,
    /// Lifetime when the answer has no `max-age`, `no-cache` or `no-store` (default 5 min).
    pub default_ttl: Duration,
    /// After a request presents an unknown `kid`, no further fetch for an unknown `kid`
    /// happens for this long (default 30 s; at least 1 s). A fetch whose runtime shut down
    /// before the issuer answered gives it back, at most once per cooldown.
    pub unknown_kid_cooldown: Duration,
    /// How long past its freshness lifetime a key set is still used while refreshes fail
    /// (default 1 day). After that, tokens are refused with [`Error::KeysStale`] (503) until
    /// a fetch succeeds, and every failed refresh logs an error: availability through an
    /// issuer outage, but not forever for a key the issuer may have withdrawn.
    /// `Duration::MAX` keeps stale keys for as long as the issuer is down.
    pub max_staleness: Duration,
    /// Longest a request waits for a key-set fetch it needs (default 2 s): the one its
    /// unknown `kid` started, or one already under way that may bring the key. After that
    /// it is answered with the keys at hand (401 for the unknown `kid`, 503 if no key set
    /// was ever fetched) while the fetch goes on for the requests after it. Zero never
    /// waits; `Duration::MAX` waits for the fetch however long it takes (its `timeout`
    /// bounds it). [`crate::Verifier::refresh_keys`] and the background refresh are not
    /// bounded.
    pub max_fetch_wait: Duration,
    /// Delay before the background task retries after a failed fetch, whoever made it
    /// (default 10 s; not zero).
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
            max_staleness: Duration::from_secs(24 * 3600),
            max_fetch_wait: Duration::from_secs(2),
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
///
/// For monitoring: alert well before `usable_until`, when the set held stops verifying
/// anything (every token gets [`Error::KeysStale`], 503) unless a refresh succeeds.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStatus {
    /// The key ids of the keys in the set that this verifier can use. Empty when the issuer
    /// publishes an empty JWK Set, or one with no key this verifier can use (unsupported key
    /// types or algorithms, encryption keys, malformed or leaked keys): then no token
    /// verifies (each is refused as one with an unknown `kid`) until a later fetch brings
    /// usable keys.
    pub kids: Vec<String>,
    /// When the set was fetched (Unix seconds, verifier clock).
    pub fetched_at: i64,
    /// Until when it counts as fresh; after that it is still used while refreshes fail,
    /// for at most [`JwksOptions::max_staleness`].
    pub fresh_until: i64,
    /// Until when it may be used at all (Unix seconds, verifier clock): `fresh_until` plus
    /// [`JwksOptions::max_staleness`] (`i64::MAX` for `Duration::MAX`). Past it, tokens are
    /// refused with [`Error::KeysStale`] until a fetch succeeds.
    pub usable_until: i64,
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
    /// The keys of the set that this verifier can use.
    pub(crate) set: KeySet,
    /// How many entries the fetched set had, usable or not.
    entries: usize,
    /// Changes whenever the set's content changes; verified-token cache entries carry it.
    pub(crate) epoch: u64,
    fetched_at: i64,
    fresh_until: i64,
    /// `fresh_until` plus `max_staleness`: past it the set is not used at all.
    usable_until: i64,
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
    /// True while a fetch runs. Every decision to start one is made under this lock, which
    /// is never held across an `.await` (see `begin`).
    running: Mutex<bool>,
    /// The last finished fetch attempt and how many there were, watched by those waiting
    /// for one.
    finished: watch::Sender<Attempt>,
    /// Start of the last fetch made on demand (unknown `kid` or no keys), Unix seconds.
    last_demand: AtomicI64,
    /// When the last attempt ended, if it failed (cut short included): the background
    /// refresh retries `retry_interval` later (see [`run_refresher`]).
    last_failure: Mutex<Option<tokio::time::Instant>>,
    /// When a demand fetch cut short last gave back its cooldown, Unix seconds.
    last_refund: AtomicI64,
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
            running: Mutex::new(false),
            finished: watch::Sender::new(Attempt {
                count: 0,
                outcome: Ok(()),
                cut_short: false,
            }),
            last_demand: AtomicI64::new(i64::MIN),
            last_failure: Mutex::new(None),
            last_refund: AtomicI64::new(i64::MIN),
            failures: AtomicU64::new(0),
        })
    }

    /// The key for a token header, fetching on demand when the `kid` is unknown (within the
    /// cooldown) or nothing has been fetched yet. Returns the key and the set's epoch.
    ///
    /// Waits for a fetch (its own, or one under way) for at most `max_fetch_wait`: within
    /// the cooldown with no fetch running, an unknown `kid` is answered at once. When the
    /// fetch waited for is cut short (the runtime that ran it shut down), it asks once
    /// more, within the same bound: it fetches on its own runtime when the cooldown allows
    /// (the fetch cut short gave it back, or was not one on demand), else it is answered
    /// with the keys at hand.
    pub(crate) async fn key_for(
        self: &Arc<Self>,
        header: &Header,
    ) -> Result<(VerifyingKey, u64), Error> {
        // Read before the lookup: a fetch finishing in between then counts as shared.
        let mut finished = self.finished.subscribe();
        let seen = finished.borrow_and_update().count;
        let first = self.lookup(header);
        match &first {
            Err(e) if needs_fetch(e) => {}
            _ => return first,
        }
        tracing::debug!(
            target: "tessera::auth",
            kid = header.kid().unwrap_or_default(),
            "kid not in the key set"
        );
        // Zero never waits: even a zero timeout would park the request until the timer's
        // next tick, behind every other task of the runtime.
        if let Flight::Running = self.begin(seen, true)?
            && !self.opts.max_fetch_wait.is_zero()
        {
            // No deadline when the bound is too far to represent (`Duration::MAX`): then the
            // request waits for the fetch, which its own timeouts bound.
            let deadline = tokio::time::Instant::now().checked_add(self.opts.max_fetch_wait);
            let mut seen = seen;
            let mut again = true;
            // Failures are logged by the fetch; the lookup below reports what is missing.
            // Past the bound the fetch goes on in its task, for the requests after this one.
            while let Ok(Ok(a)) = {
                let fetched = finished.wait_for(|a| a.count != seen);
                match deadline {
                    Some(deadline) => tokio::time::timeout_at(deadline, fetched).await,
                    None => Ok(fetched.await),
                }
            } {
                let (count, cut_short) = (a.count, a.cut_short);
                drop(a);
                // A fetch cut short (its runtime shut down) says nothing about the issuer,
                // and gave back the cooldown it spent: ask once more, on this runtime.
                if !(cut_short && std::mem::take(&mut again)) {
                    break;
                }
                seen = count;
                if !matches!(self.begin(seen, true), Ok(Flight::Running)) {
                    break;
                }
            }
        }
        self.lookup(header)
    }

    /// The key for `header` in the set held now: [`Error::KeysUnavailable`] without one,
    /// [`Error::KeysStale`] when it is stale beyond `max_staleness`.
    fn lookup(&self, header: &Header) -> Result<(VerifyingKey, u64), Error> {
        let Some(keys) = self.current.load_full() else {
            return Err(Error::KeysUnavailable);
        };
        if self.clock.now() > keys.usable_until {
            return Err(Error::KeysStale);
        }
        let key = keys.set.select(header)?;
        Ok((key.clone(), keys.epoch))
    }

    /// The cooldown rule, checked under the `running` lock: when no demand fetch started
    /// within the cooldown, restarts it and returns the start of the demand fetch before
    /// (for [`JwksCache::refund_demand`]); `None` within the cooldown.
    ///
    /// A clock now before the last demand fetch was stepped back (an NTP correction): that
    /// ends the cooldown, rather than stretching it by the size of the step, during which
    /// a rotated key would be refused.
    fn spend_demand(&self) -> Option<i64> {
        let now = self.clock.now();
        let cooldown = secs(self.opts.unknown_kid_cooldown);
        let last = self.last_demand.load(Ordering::Acquire);
        if now >= last && now.saturating_sub(last) < cooldown {
            return None;
        }
        self.last_demand.store(now, Ordering::Release);
        Some(last)
    }

    /// Gives back the cooldown a demand fetch spent when its task ended before the fetch
    /// did (its runtime shut down: a verifier shared by several runtimes, or a runtime per
    /// call), under the `running` lock: the issuer's answer, if any, was never read, so the
    /// next request with an unknown `kid`, on a live runtime, may fetch at once instead of
    /// being refused for the whole cooldown. At most once per cooldown, so runtimes that
    /// keep shutting down mid-fetch (a slow issuer and a runtime per request) cost the
    /// issuer at most two demand fetches per cooldown, not one per request.
    fn refund_demand(&self, previous: i64) {
        let now = self.clock.now();
        let cooldown = secs(self.opts.unknown_kid_cooldown);
        let last = self.last_refund.load(Ordering::Acquire);
        if now >= last && now.saturating_sub(last) < cooldown {
            return;
        }
        self.last_refund.store(now, Ordering::Release);
        self.last_demand.store(previous, Ordering::Release);
    }

    /// The first attempt that starts after this call: the one after the attempt under way,
    /// if any, else the next. For [`JwksCache::refresh`], on behalf of a caller who must
    /// see the issuer's key set as it is now, not as a fetch begun before the call found it.
    pub(crate) fn next_attempt(&self) -> u64 {
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        // Under the lock `Landing` publishes under: the count and `running` agree.
        let count = self.finished.borrow().count;
        count.saturating_add(1).saturating_add(u64::from(*running))
    }

    /// Waits until attempt number `ticket` (attempts are numbered from 1, one at a time)
    /// or a later one has finished, starting it when no fetch is under way, and reports how
    /// the last finished attempt ended. On failure the previous set stays in place.
    ///
    /// `attempts() + 1` joins a fetch under way (the background refresh: any fetch that
    /// ends now is a refresh); [`JwksCache::next_attempt`] waits for the fetch under way,
    /// if any, to end and then shares the next one, so the answer is the issuer's as of a
    /// request sent after the call. Waiting callers share that next fetch, so any number
    /// of them cost at most one fetch after the one under way. No bound but the fetch's own
    /// timeouts.
    ///
    /// The fetch runs on the runtime of the caller that started it. When its task ends
    /// before the fetch does (that runtime shut down: a verifier shared by several
    /// runtimes), this asks again, once, and so fetches on its own runtime: the end of
    /// another caller's runtime says nothing about the issuer. Only once, so a caller whose
    /// own runtime is shutting down gets the error rather than spinning.
    ///
    /// # Errors
    /// How the attempt waited for ended, whoever started it; [`Error::NoRuntime`] when a
    /// fetch must start outside a Tokio runtime.
    pub(crate) async fn refresh(self: &Arc<Self>, mut ticket: u64) -> Result<(), Error> {
        let mut finished = self.finished.subscribe();
        // The outcome of an attempt cut short, once this caller has asked again.
        let mut cut: Option<Result<(), Error>> = None;
        loop {
            let count = finished.borrow_and_update().count;
            if count < ticket {
                // Starts attempt `ticket` unless a fetch is under way (this caller's, or one
                // before it: then it asks again when that one ends).
                match self.begin(ticket.saturating_sub(1), false) {
                    Ok(Flight::Running | Flight::Finished) => {}
                    // Not for a refresh (the cooldown applies to fetches on demand only).
                    Ok(Flight::CoolingDown) => return Ok(()),
                    // No runtime to fetch on here: an attempt cut short is the answer.
                    Err(e) => return cut.unwrap_or(Err(e)),
                }
                if finished.wait_for(|a| a.count != count).await.is_err() {
                    // Unreachable: `self` owns the sender. Still an error, not a success.
                    return Err(self.ended_early());
                }
                continue;
            }
            let (outcome, cut_short) = {
                let a = finished.borrow();
                (a.outcome.clone(), a.cut_short)
            };
            if !cut_short || cut.is_some() {
                return outcome;
            }
            ticket = count.saturating_add(1);
            cut = Some(outcome);
        }
    }

    /// One fetch at a time. Everyone who needed keys while a fetch ran shares its result;
    /// a fetch on demand (unknown `kid`, no keys) also needs the cooldown to allow it. All
    /// of it is decided under the `running` lock, so no two callers can both decide to
    /// fetch, and nobody holds the lock while the network is slow.
    ///
    /// The fetch runs in its own task: the caller may go away (its client disconnected, a
    /// timeout fired, `max_fetch_wait` passed) without cancelling a fetch that has already
    /// spent the cooldown. Were it cancelled, a rotated key would stay unknown until the
    /// cooldown ended, as often as anyone sends a made-up `kid` and hangs up.
    ///
    /// # Errors
    /// [`Error::NoRuntime`] outside a Tokio runtime (the HTTP client needs one anyway).
    fn begin(self: &Arc<Self>, seen: u64, on_demand: bool) -> Result<Flight, Error> {
        let (runtime, mut landing) = {
            let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
            if *running {
                return Ok(Flight::Running);
            }
            if self.finished.borrow().count != seen {
                return Ok(Flight::Finished);
            }
            // Before the cooldown is spent: without a runtime nothing is fetched.
            let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
            let demand = if on_demand {
                match self.spend_demand() {
                    Some(previous) => Some(previous),
                    None => return Ok(Flight::CoolingDown),
                }
            } else {
                None
            };
            *running = true;
            (
                runtime,
                Landing {
                    cache: Arc::clone(self),
                    outcome: None,
                    demand,
                },
            )
        };
        // The guard is made before the task and moved into it, so it ends the attempt
        // however the task ends: finished, panicked, or dropped before it ever ran (its
        // runtime shut down first, as a short-lived `block_on` runtime does). Made inside
        // the task, it would not exist in that last case, and `running` would stay set for
        // good: every later caller would wait for a fetch that never ends. Spawned after
        // the lock is released, since dropping the guard takes it.
        runtime.spawn(async move {
            let outcome = landing.cache.fetch_and_store().await;
            landing.outcome = Some(outcome);
            drop(landing);
        });
        Ok(Flight::Running)
    }

    /// The error for an attempt whose task ended before its fetch did.
    fn ended_early(&self) -> Error {
        Error::Fetch {
            url: self.locator_url().to_string(),
            reason: "the fetch task ended before the fetch did (its runtime shut down, or \
                     it panicked)"
                .into(),
        }
    }

    /// Fetches the key set and puts it in place (or keeps the previous one on failure).
    /// Called by the fetch task only.
    async fn fetch_and_store(&self) -> Result<(), Error> {
        let result = self.fetch().await;
        match result {
            Ok(keys) => {
                if keys.set.is_empty() && keys.entries == 0 {
                    tracing::warn!(
                        jwks_uri = %keys.jwks_uri,
                        "the issuer publishes an empty key set: every token is refused until \
                         it publishes a key"
                    );
                } else if keys.set.is_empty() {
                    tracing::warn!(
                        jwks_uri = %keys.jwks_uri,
                        entries = keys.entries,
                        "the issuer's key set has no key this verifier can use (unsupported \
                         key types or algorithms, encryption keys, malformed, duplicated or \
                         leaked keys): every token is refused until it publishes one"
                    );
                } else {
                    tracing::debug!(
                        target: "tessera::auth",
                        keys = keys.set.len(),
                        epoch = keys.epoch,
                        "key set fetched"
                    );
                }
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
                match self.current.load().as_ref() {
                    Some(k) if self.clock.now() > k.usable_until => tracing::error!(
                        error = %e,
                        fresh_until = k.fresh_until,
                        "key set refresh failed, and the key set held is stale beyond \
                         `max_staleness`: every token is refused until a refresh succeeds"
                    ),
                    held => tracing::warn!(
                        error = %e,
                        serving_stale_keys = held.is_some(),
                        "key set refresh failed"
                    ),
                }
                Err(e)
            }
        }
    }

    /// The configured issuer or JWKS URL, for errors.
    fn locator_url(&self) -> &Url {
        match &self.locator {
            Locator::Issuer { url, .. } | Locator::JwksUri(url) => url,
        }
    }

    /// Number of finished fetch attempts.
    pub(crate) fn attempts(&self) -> u64 {
        self.finished.borrow().count
    }

    pub(crate) fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The epoch of the set held, if it may be used now: a set stale beyond `max_staleness`
    /// has none, so no verified-token cache entry of any epoch is accepted either.
    pub(crate) fn epoch(&self) -> Option<u64> {
        self.current
            .load()
            .as_ref()
            .filter(|k| self.clock.now() <= k.usable_until)
            .map(|k| k.epoch)
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
            usable_until: k.usable_until,
            jwks_uri: k.jwks_uri.to_string(),
        })
    }

    /// How long until the background refresh may retry: `retry_interval` after the last
    /// attempt ended, when it failed; zero after a success.
    fn until_retry(&self) -> Duration {
        let failed = *self
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        failed.map_or(Duration::ZERO, |at| {
            self.opts.retry_interval.saturating_sub(at.elapsed())
        })
    }

    /// How long until `keys` (the set held) is due for a background refresh: zero without
    /// a set or once its refresh time has come.
    ///
    /// Read from the set held, not from the background task's own last fetch: whoever
    /// fetched it (that task, `refresh_keys`, or a request with an unknown `kid`) refreshed
    /// the keys, and the next refresh counts from that fetch.
    fn until_refresh(&self, keys: Option<&CachedKeys>) -> Duration {
        let Some(keys) = keys else {
            return Duration::ZERO;
        };
        let wait = keys.refresh_at.saturating_sub(self.clock.now());
        Duration::from_secs(u64::try_from(wait).unwrap_or(0))
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
        // Only a document that is not a JWK Set at all fails here (RFC 7517 §5: a JSON
        // object whose `keys` are JSON objects; serde alone would read `[[]]` as an empty
        // set). An entry that is not a JWK (a member of the wrong type, `"n": 123` or
        // `"key_ops": "sign"`, a missing `kty`) is left out like any other key unusable
        // here, below: one odd entry must not take down the keys beside it.
        let (jwks, unread) = JwkSet::from_json_lenient(text).map_err(|e| invalid(e.to_string()))?;
        log_unread_entries(&unread);
        // RFC 7517 §5: a JWK Set is the set of keys its issuer publishes, and entries a
        // verifier does not understand are ignored ("Implementations SHOULD ignore JWKs
        // within a JWK Set that use 'kty' values that are not understood by them, that are
        // missing required members, or for which values are out of the supported ranges").
        // So the keys usable here replace the set held, whatever else the set contains, and
        // even when that is none: an empty `keys` array (the issuer trusts no key now, say
        // while it replaces a compromised one), or only entries this verifier cannot use (a
        // key type or algorithm it does not support, encryption keys, malformed or leaked
        // keys). Either way the issuer no longer publishes the keys held, and keeping them
        // would accept tokens signed by keys it withdrew, for up to `max_staleness`. Only a
        // document that is not a JWK Set at all is a failed fetch that keeps them.
        let public = usable_public_keys(&jwks);
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
            entries: jwks.keys.len().saturating_add(unread.len()),
            epoch,
            fetched_at: now,
            fresh_until: now.saturating_add(ttl),
            usable_until: now
                .saturating_add(ttl)
                .saturating_add(secs(self.opts.max_staleness)),
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

/// A finished fetch attempt: how many there have been, and how the last one ended.
#[derive(Debug)]
struct Attempt {
    count: u64,
    outcome: Result<(), Error>,
    /// The fetch task ended before the fetch did (its runtime shut down, or it panicked):
    /// the outcome says nothing about the issuer.
    cut_short: bool,
}

/// What a caller found when it asked for a fetch (see [`JwksCache::begin`]).
enum Flight {
    /// A fetch is running: started by this caller, or already under way. Wait for the
    /// attempt count to move.
    Running,
    /// An attempt finished since the caller read the count: its result is in place.
    Finished,
    /// A fetch on demand is not allowed yet (the unknown-`kid` cooldown).
    CoolingDown,
}

/// Ends a fetch: clears `running` and publishes the attempt (counted, with its outcome)
/// under the lock `begin` decides under, so a caller that sees no fetch running also sees
/// its attempt counted. Without an outcome (the task panicked or was dropped) the attempt
/// counts as failed, and a demand fetch gives back the cooldown it spent.
struct Landing {
    cache: Arc<JwksCache>,
    outcome: Option<Result<(), Error>>,
    /// For a fetch on demand: the start of the demand fetch before it, to give the
    /// cooldown back if this one is cut short ([`JwksCache::refund_demand`]).
    demand: Option<i64>,
}

impl Drop for Landing {
    fn drop(&mut self) {
        let cut_short = self.outcome.is_none();
        let outcome = self.outcome.take().unwrap_or_else(|| {
            self.cache.failures.fetch_add(1, Ordering::Relaxed);
            Err(self.cache.ended_early())
        });
        let mut running = self
            .cache
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if cut_short && let Some(previous) = self.demand {
            self.cache.refund_demand(previous);
        }
        *self
            .cache
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner) =
            outcome.is_err().then(tokio::time::Instant::now);
        *running = false;
        self.cache.finished.send_modify(|a| {
            a.count = a.count.wrapping_add(1);
            a.outcome = outcome;
            a.cut_short = cut_short;
        });
    }
}

/// Whether a failed lookup may be cured by fetching the key set again.
fn needs_fetch(e: &Error) -> bool {
    matches!(
        e,
        Error::KeysUnavailable
            | Error::KeysStale
            | Error::Token(tessera_jose::Error::UnknownKid { .. })
    )
}

/// The background refresher: fetches at start, then shortly before the set goes stale,
/// and retries `retry_interval` after a failure. Runs until aborted (when the last verifier
/// clone drops).
///
/// The retry counts from the last failed fetch, whoever made it and however it ended (cut
/// short included), not from within this task: the task is started again on the caller's
/// runtime whenever the one it ran on has shut down ([`crate::task`]), and a verifier used
/// from a runtime per call starts it on every call. Were the wait its own, each restart
/// would fetch at once while the set is due: one fetch per call from a failing issuer, or
/// from one whose answers take longer than a call.
///
/// It waits for the refresh time of the set held, and looks again whenever a fetch ends: a
/// fetch made meanwhile (an unknown `kid`, `refresh_keys`) moved that time, either later
/// (fetching at the old time would only ask the issuer again for what was fetched a moment
/// ago) or sooner (its answer had a shorter `max-age`, as an issuer gives before a
/// rotation: sleeping out the lifetime of the set it replaced would keep a key the issuer
/// withdrew in use that much longer).
///
/// A set once due stays due until a fetch replaces it, whatever the clock says later: when
/// the wait for it ran its full time, and when its refresh failed (the retry comes
/// `retry_interval` later). A clock stepped back meanwhile (an NTP correction) would
/// otherwise put the refresh off by the size of the step, the same mistake the
/// unknown-`kid` cooldown avoids.
pub(crate) async fn run_refresher(cache: Arc<JwksCache>) {
    let mut fetches = cache.finished.subscribe();
    // The set found due, kept while it is the set held.
    let mut due: Option<Arc<CachedKeys>> = None;
    loop {
        // Fetches ended from here on wake the wait below.
        fetches.borrow_and_update();
        let held = cache.current.load_full();
        let mut wait = match (&held, &due) {
            (Some(h), Some(d)) if Arc::ptr_eq(h, d) => Duration::ZERO,
            _ => cache.until_refresh(held.as_deref()),
        };
        if wait.is_zero() {
            // Due, but not before `retry_interval` has passed since the last failed fetch.
            wait = cache.until_retry();
        }
        if !wait.is_zero() {
            // The cache owns the sender, so `changed` cannot fail; were it to, this would
            // wait out the time rather than spin.
            let fetched = async {
                if fetches.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            if tokio::time::timeout(wait, fetched).await.is_err() {
                due = held;
            }
            continue;
        }
        due = held;
        // A fetch under way is as good as a new one: join it. A failure is noted by the
        // attempt, and the wait above is the retry.
        let _ = cache.refresh(cache.attempts().saturating_add(1)).await;
    }
}

/// Logs the entries of a fetched JWK Set that are not JWKs (RFC 7517 §5: ignored), by
/// index and reason, never their content: the first few one by one, then how many in all.
fn log_unread_entries(unread: &[(usize, tessera_jose::Error)]) {
    const LOGGED: usize = 16;
    for (index, why) in unread.iter().take(LOGGED) {
        tracing::debug!(target: "tessera::auth", index, reason = %why, "JWKS entry skipped");
    }
    if unread.len() > LOGGED {
        tracing::debug!(
            target: "tessera::auth",
            skipped = unread.len(),
            "JWKS entries skipped (only the first {LOGGED} logged)"
        );
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
