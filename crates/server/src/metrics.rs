//! Prometheus metrics (`GET /metrics`), one registry per server.
//!
//! Each [`Metrics`] owns its own [`Registry`] (STYLE §2.4: no process-global recorder), so
//! several servers in one process (tests) never share counters. Request metrics are
//! labelled by the *matched route* (`/users/{user}`), never the raw URI, by method and by
//! status class, which keeps the number of series bounded whatever clients send.
//!
//! Domain events come from two places, keeping `tessera-auth` free of HTTP: the token
//! endpoint inspects the result of each login (outcome counter), and the audit observer
//! ([`tessera_auth::audit::AuditObserver`]) counts lockouts and refresh-token reuse.
//! Gauges that describe state (live sessions, signing key ages, password-hashing queue)
//! are computed at scrape time.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{
    EncodeLabelSet, EncodeLabelValue, EncodeMetric, LabelValueEncoder, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;
use tessera_auth::AuthError;
use tessera_auth::audit::{AuditEvent, AuditObserver};

use crate::AppState;
use crate::error::AppError;
use crate::shard::Sharded;

/// How long a scrape waits for the database's readiness ping (`tessera_database_up`).
const PING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a scrape waits for the live-session count (an index walk that grows with the
/// number of live sessions) once the database has answered the ping.
const ACTIVE_SESSIONS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// The route label for requests no route matched (404s): one series, not one per path.
const UNMATCHED: &str = "<unmatched>";

/// Latency buckets in seconds: 0.5 ms to ~16 s (token checks are sub-millisecond, an
/// Argon2id login is tens of milliseconds, a slow database is seconds).
const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0,
    30.0,
];

/// A matched route template (`/admin/users/{user}`); `None` for requests no route matched.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Route(pub(crate) Option<&'static str>);

impl Route {
    pub(crate) fn as_str(&self) -> &'static str {
        self.0.unwrap_or(UNMATCHED)
    }
}

/// A route of a [`RouteTable`], or none.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RouteId(Option<usize>);

/// The route templates the server serves, matched against each request's path to label its
/// metrics, with the metric handles of each route.
///
/// The per-request layer sits outside axum's router ([`crate::telemetry::ObserveLayer`]):
/// inside it, as a `Router::layer`, axum would box the layer's service once per route and
/// clone and box it again on every request. Outside it, the router's own `MatchedPath`
/// is not visible, so the server keeps this table, filled by the same calls that add the
/// routes (see `app` in the crate root), and matches it with the router axum itself uses
/// (`matchit`): one lookup of a few hundred instructions per request.
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    matcher: matchit::Router<usize>,
    routes: Vec<(&'static str, RouteHandles)>,
    unmatched: RouteHandles,
}

impl RouteTable {
    /// Adds a route template (axum's syntax: `{param}`, `{*rest}`). Adding one twice is a
    /// no-op.
    pub(crate) fn add(&mut self, template: &'static str) {
        if self.routes.iter().any(|(t, _)| *t == template) {
            return;
        }
        match self.matcher.insert(template, self.routes.len()) {
            Ok(()) => self.routes.push((template, RouteHandles::default())),
            // axum refuses the same templates (it panics when the route is added), so the
            // server never gets here; a route that did would be counted as unmatched.
            Err(e) => tracing::error!(template, error = %e, "route template not labelled"),
        }
    }

    /// The route `path` matches (axum's rules: the same router, the same templates).
    pub(crate) fn lookup(&self, path: &str) -> RouteId {
        match self.matcher.at(path) {
            Ok(m) => RouteId(Some(*m.value)),
            Err(_) => RouteId(None),
        }
    }

    /// The label and handles of a route [looked up](Self::lookup) in this table.
    pub(crate) fn get(&self, id: RouteId) -> (Route, &RouteHandles) {
        match id.0.and_then(|i| self.routes.get(i)) {
            Some((template, handles)) => (Route(Some(template)), handles),
            None => (Route(None), &self.unmatched),
        }
    }

    /// The templates, in the order they were added.
    pub(crate) fn templates(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.routes.iter().map(|(t, _)| *t)
    }
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Route {}

impl std::hash::Hash for Route {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// The request counters and latency histograms of one route, resolved on its first
/// request of each method and status class, so that later requests update them directly
/// instead of looking their labels up in the two families (two read locks and two SipHash
/// computations per request). The server keeps one per route, in its [`RouteTable`].
#[derive(Debug)]
pub(crate) struct RouteHandles {
    slots: [OnceLock<Handles>; METHODS * STATUS_CLASSES],
}

impl Default for RouteHandles {
    fn default() -> Self {
        Self {
            slots: std::array::from_fn(|_| OnceLock::new()),
        }
    }
}

#[derive(Debug)]
struct Handles {
    route: Route,
    requests: RequestCounter,
    latency: LatencyHistogram,
}

/// How many values [`method_label`] and [`status_class`] return.
const METHODS: usize = 8;
const STATUS_CLASSES: usize = 5;

fn method_index(label: &str) -> usize {
    match label {
        "GET" => 0,
        "POST" => 1,
        "PUT" => 2,
        "DELETE" => 3,
        "PATCH" => 4,
        "HEAD" => 5,
        "OPTIONS" => 6,
        _ => 7,
    }
}

fn status_index(class: &str) -> usize {
    match class {
        "1xx" => 0,
        "2xx" => 1,
        "3xx" => 2,
        "4xx" => 3,
        _ => 4,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: Route,
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KeyLabels {
    kid: String,
    alg: String,
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CertLabels {
    cert: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

/// A request counter, sharded per thread ([`crate::shard`]): an increment touches only the
/// calling thread's cache line.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestCounter(Arc<Sharded<AtomicU64>>);

impl RequestCounter {
    fn inc(&self) {
        self.0.local().fetch_add(1, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .fold(0, u64::wrapping_add)
    }
}

impl TypedMetric for RequestCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for RequestCounter {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A gauge with no sample until it is first set: a value read from the database that has
/// not been read yet is absent, not 0.
#[derive(Debug, Clone, Default)]
struct LateGauge(Arc<OnceLock<Gauge>>);

impl LateGauge {
    fn set(&self, v: i64) {
        self.0.get_or_init(Gauge::default).set(v);
    }
}

impl TypedMetric for LateGauge {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for LateGauge {
    fn encode(&self, encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        match self.0.get() {
            Some(g) => g.encode(encoder),
            None => Ok(()),
        }
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The requests being served: incremented when one starts and decremented when it ends,
/// often on different threads, so only the sum over the shards means anything.
#[derive(Debug, Clone, Default)]
pub(crate) struct InFlightGauge(Arc<Sharded<AtomicI64>>);

impl InFlightGauge {
    pub(crate) fn inc(&self) {
        self.0.local().fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dec(&self) {
        self.0.local().fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> i64 {
        // The shards are read one after the other: a request that ended meanwhile may be
        // seen ending without being seen starting.
        self.0
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .fold(0, i64::wrapping_add)
            .max(0)
    }
}

impl TypedMetric for InFlightGauge {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for InFlightGauge {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.get())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A latency histogram updated with atomic adds only, sharded per thread
/// ([`crate::shard`]). `prometheus_client`'s own `Histogram` takes a mutex on every
/// observation, which the two cores fought over on every request of a hot route; here an
/// observation is two relaxed atomic additions (its bucket and the sum, kept in
/// nanoseconds) on the calling thread's own cache lines. A scrape may see a bucket and the
/// sum a few requests apart, as Prometheus allows for concurrent updates.
#[derive(Debug, Clone, Default)]
pub(crate) struct LatencyHistogram(Arc<Sharded<LatencyShard>>);

#[derive(Debug, Default)]
pub(crate) struct LatencyShard {
    /// Observations per bucket (not cumulative): one per bound, then `+Inf`.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl LatencyHistogram {
    fn observe(&self, elapsed: std::time::Duration) {
        let seconds = elapsed.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        let shard = self.0.local();
        if let Some(bucket) = shard.buckets.get(i) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        shard.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for LatencyHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for LatencyHistogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut buckets = [(0.0, 0_u64); LATENCY_BUCKETS.len() + 1];
        let bounds = LATENCY_BUCKETS
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY));
        for (slot, bound) in buckets.iter_mut().zip(bounds) {
            slot.0 = bound;
        }
        let mut sum_nanos = 0_u64;
        for shard in self.0.iter() {
            for (slot, count) in buckets.iter_mut().zip(&shard.buckets) {
                slot.1 = slot.1.wrapping_add(count.load(Ordering::Relaxed));
            }
            sum_nanos = sum_nanos.wrapping_add(shard.sum_nanos.load(Ordering::Relaxed));
        }
        let count = buckets.iter().map(|(_, n)| n).sum();
        #[allow(clippy::cast_precision_loss)] // nanoseconds: exact up to 104 days of latency
        let sum = sum_nanos as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The server's metrics and the registry that exposes them.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, RequestCounter>,
    latency: Family<RequestLabels, LatencyHistogram>,
    pub(crate) in_flight: InFlightGauge,
    logins: Family<OutcomeLabels, Counter>,
    refresh_reuse: Counter,
    lockouts: Counter,
    active_sessions: LateGauge,
    database_up: Gauge,
    key_age: Family<KeyLabels, Gauge>,
    hash_queue: Gauge,
    hash_in_flight: Gauge,
    tls_reloads: Family<OutcomeLabels, Counter>,
    tls_expiry: Family<CertLabels, Gauge>,
    /// Held while a scrape rebuilds the key-age series and encodes: `key_age` is cleared
    /// and refilled on every scrape, and a concurrent scrape must not encode it half-empty.
    render_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every Tessera metric registered.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tessera");
        let requests = Family::<RequestLabels, RequestCounter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, matched route and status class",
            requests.clone(),
        );
        let latency = Family::<RequestLabels, LatencyHistogram>::default();
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency in seconds by method, matched route and status class",
            latency.clone(),
        );
        let in_flight = InFlightGauge::default();
        registry.register(
            "http_requests_in_flight",
            "HTTP requests being served",
            in_flight.clone(),
        );
        let logins = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "logins",
            "Password and second-factor logins by outcome",
            logins.clone(),
        );
        let refresh_reuse = Counter::default();
        registry.register(
            "refresh_token_reuse_detected",
            "Replays of a rotated refresh token (each revoked its whole session)",
            refresh_reuse.clone(),
        );
        let lockouts = Counter::default();
        registry.register(
            "lockouts",
            "Usernames locked after too many failed logins",
            lockouts.clone(),
        );
        let active_sessions = LateGauge::default();
        registry.register(
            "active_sessions",
            "Live login sessions (not revoked, not expired), counted at scrape time",
            active_sessions.clone(),
        );
        let database_up = Gauge::default();
        registry.register(
            "database_up",
            "1 if the database answered this scrape's readiness ping (as /readyz) within a second, else 0 (tessera_active_sessions then keeps its last value)",
            database_up.clone(),
        );
        let key_age = Family::<KeyLabels, Gauge>::default();
        registry.register(
            "signing_key_age_seconds",
            "Age of each stored signing key in seconds, by kid, algorithm and state",
            key_age.clone(),
        );
        let hash_queue = Gauge::default();
        registry.register(
            "password_hash_queue_depth",
            "Logins waiting for a password-hashing slot",
            hash_queue.clone(),
        );
        let hash_in_flight = Gauge::default();
        registry.register(
            "password_hash_in_flight",
            "Password hashes running now (bounded by limits.max_concurrent_hashes)",
            hash_in_flight.clone(),
        );
        let tls_reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "tls_reloads",
            "TLS certificate reloads by outcome (success, error)",
            tls_reloads.clone(),
        );
        let tls_expiry = Family::<CertLabels, Gauge>::default();
        registry.register(
            "tls_certificate_expiry_timestamp_seconds",
            "When the served TLS certificate (the first of tls.cert) expires: its notAfter, Unix seconds",
            tls_expiry.clone(),
        );
        let build = Family::<VersionLabels, Gauge>::default();
        build
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register("build_info", "Tessera version (always 1)", build);
        Self {
            registry,
            requests,
            latency,
            in_flight,
            logins,
            refresh_reuse,
            lockouts,
            active_sessions,
            database_up,
            key_age,
            hash_queue,
            hash_in_flight,
            tls_reloads,
            tls_expiry,
            render_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Counts the outcome of a password or second-factor login.
    pub fn record_login<T>(&self, result: &Result<T, AuthError>) {
        let outcome = match result {
            Ok(_) => "success",
            Err(AuthError::InvalidCredentials) => "invalid_credentials",
            Err(AuthError::Locked { .. }) => "locked",
            Err(AuthError::MfaRequired { .. }) => "mfa_required",
            Err(AuthError::AccountDisabled) => "disabled",
            Err(AuthError::InvalidGrant(_)) => "invalid_grant",
            Err(AuthError::TooManyAttempts { .. }) => "too_many_attempts",
            Err(AuthError::InvalidScope(_)) => "invalid_scope",
            Err(AuthError::Unavailable(_)) => "unavailable",
            Err(_) => "error",
        };
        self.logins.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Counts a TLS certificate reload.
    pub fn record_tls_reload(&self, ok: bool) {
        let outcome = if ok { "success" } else { "error" };
        self.tls_reloads
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// The served certificate chain's expiry, or no series when its dates are unknown.
    pub(crate) fn set_tls_expiry(&self, cert: &std::path::Path, expires_at: Option<i64>) {
        let labels = CertLabels {
            cert: cert.display().to_string(),
        };
        match expires_at {
            Some(t) => {
                self.tls_expiry.get_or_create(&labels).set(t);
            }
            None => {
                self.tls_expiry.remove(&labels);
            }
        }
    }

    /// Counts and times one request under its method, matched route and status class.
    pub(crate) fn observe_request(
        &self,
        handles: &RouteHandles,
        method: &'static str,
        route: Route,
        status: u16,
        elapsed: std::time::Duration,
    ) {
        let status = status_class(status);
        let slot = handles
            .slots
            .get(method_index(method) * STATUS_CLASSES + status_index(status));
        if let Some(cached) = slot.and_then(OnceLock::get)
            && cached.route == route
        {
            cached.requests.inc();
            cached.latency.observe(elapsed);
            return;
        }
        let labels = RequestLabels {
            method,
            route,
            status,
        };
        let requests = self.requests.get_or_create(&labels).clone();
        let latency = self.latency.get_or_create(&labels).clone();
        requests.inc();
        latency.observe(elapsed);
        if let Some(slot) = slot {
            // Taken by the first request of this method and status class on this route; a
            // route seen under another label (not expected) is looked up every time.
            let _ = slot.set(Handles {
                route: labels.route,
                requests,
                latency,
            });
        }
    }

    /// Refreshes the scrape-time gauges and renders the registry (OpenMetrics text).
    async fn render(&self, state: &AppState) -> Result<String, AppError> {
        let now = state.auth.now();
        let hasher = state.auth.hasher();
        self.hash_queue
            .set(i64::try_from(hasher.queue_depth()).unwrap_or(i64::MAX));
        self.hash_in_flight
            .set(i64::try_from(hasher.in_flight()).unwrap_or(i64::MAX));
        // The values read from the database, before taking the render lock so that
        // concurrent scrapes do not queue behind each other's waits. While the database does
        // not answer, the scrape still succeeds within about a second (the request counters,
        // 503 rates and hashing queue matter most during an outage): `tessera_database_up`
        // is 0 and `tessera_active_sessions` keeps its last value.
        let up = matches!(
            tokio::time::timeout(PING_TIMEOUT, tessera_auth::store::Store::ping(state.db())).await,
            Ok(Ok(()))
        );
        let live = if up {
            match tokio::time::timeout(
                ACTIVE_SESSIONS_TIMEOUT,
                tessera_auth::store::SessionStore::count_live_sessions(state.db(), now),
            )
            .await
            {
                Ok(Ok(live)) => Some(live),
                Ok(Err(e)) => {
                    tracing::warn!(target: "tessera::metrics", error = %AuthError::from(e), "tessera_active_sessions not refreshed: the count failed");
                    None
                }
                Err(_) => {
                    tracing::warn!(target: "tessera::metrics", "tessera_active_sessions not refreshed: counting took over 3 s");
                    None
                }
            }
        } else {
            tracing::warn!(target: "tessera::metrics", "the database did not answer within a second: tessera_database_up 0, tessera_active_sessions not refreshed");
            None
        };
        // One render at a time: each scrape's database outcome and key ages are what it
        // encodes.
        let _rendering = self.render_lock.lock().await;
        self.database_up.set(i64::from(up));
        if let Some(live) = live {
            self.active_sessions
                .set(i64::try_from(live).unwrap_or(i64::MAX));
        }
        self.key_age.clear();
        for key in &state.auth.key_ring().keys {
            self.key_age
                .get_or_create(&KeyLabels {
                    kid: key.kid.clone(),
                    alg: key.alg.clone(),
                    state: key.state.as_str(),
                })
                .set(now.saturating_sub(key.created_at).max(0));
        }
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .map_err(|e| AppError::internal(format!("encoding metrics: {e}")))?;
        Ok(out)
    }
}

impl AuditObserver for Metrics {
    fn observe(&self, event: &AuditEvent) {
        match event.event.as_str() {
            "lockout" => {
                self.lockouts.inc();
            }
            "refresh_reuse" => {
                self.refresh_reuse.inc();
            }
            _ => {}
        }
    }
}

/// Bounded method label: the standard methods by name, anything else as `other`.
pub(crate) fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// `GET /metrics`: the registry in the OpenMetrics text format, which Prometheus scrapes
/// natively.
pub async fn metrics_handler(State(state): State<AppState>) -> Result<Response, AppError> {
    let body = state.metrics.render(&state).await?;
    let mut res = body.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes_cover_every_code() {
        assert_eq!(status_class(101), "1xx");
        assert_eq!(status_class(200), "2xx");
        assert_eq!(status_class(304), "3xx");
        assert_eq!(status_class(429), "4xx");
        assert_eq!(status_class(503), "5xx");
        assert_eq!(status_class(999), "5xx");
    }

    #[test]
    fn unusual_methods_share_one_label() {
        let m = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&m), "other");
        assert_eq!(method_label(&Method::GET), "GET");
    }

    #[test]
    fn the_route_table_labels_paths_by_template() {
        let mut table = RouteTable::default();
        for t in ["/users/me", "/users/{user}", "/docs/{*rest}", "/users/me"] {
            table.add(t);
        }
        assert_eq!(
            table.templates().collect::<Vec<_>>(),
            ["/users/me", "/users/{user}", "/docs/{*rest}"]
        );
        let label = |path: &str| table.get(table.lookup(path)).0.as_str();
        let handles = |path: &str| table.get(table.lookup(path)).1;
        assert_eq!(label("/users/me"), "/users/me");
        assert_eq!(label("/users/alice"), "/users/{user}");
        assert_eq!(label("/docs/swagger-ui.css"), "/docs/{*rest}");
        assert_eq!(label("/users/alice/"), UNMATCHED);
        assert_eq!(label("/users"), UNMATCHED);
        assert_eq!(label("/nope"), UNMATCHED);
        // Each template has its own handles; unmatched paths share one set.
        assert!(!std::ptr::eq(handles("/users/me"), handles("/users/bob")));
        assert!(std::ptr::eq(handles("/users/bob"), handles("/users/alice")));
        assert!(std::ptr::eq(handles("/a"), handles("/b")));
    }

    #[test]
    fn cached_route_handles_count_under_the_right_labels() {
        let m = Metrics::new();
        let handles = RouteHandles::default();
        let ms = std::time::Duration::from_millis(1);
        let me = Route(Some("/users/me"));
        m.observe_request(&handles, "GET", me, 200, ms);
        m.observe_request(&handles, "GET", me, 200, ms);
        m.observe_request(&handles, "GET", me, 401, ms);
        m.observe_request(&handles, "POST", me, 200, ms);
        // Another route through the same handles (not expected from the table): counted
        // under its own label, not the cached one.
        m.observe_request(&handles, "GET", Route(Some("/other")), 200, ms);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.registry).unwrap();
        let count = |labels: &str| {
            out.lines()
                .find(|l| l.starts_with("tessera_http_requests_total{") && l.contains(labels))
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_owned)
        };
        assert_eq!(
            count(r#"method="GET",route="/users/me",status="2xx""#).as_deref(),
            Some("2")
        );
        assert_eq!(
            count(r#"method="GET",route="/users/me",status="4xx""#).as_deref(),
            Some("1")
        );
        assert_eq!(
            count(r#"method="POST",route="/users/me",status="2xx""#).as_deref(),
            Some("1")
        );
        assert_eq!(
            count(r#"method="GET",route="/other",status="2xx""#).as_deref(),
            Some("1")
        );
        assert!(out.contains(
            r#"tessera_http_request_duration_seconds_count{method="GET",route="/users/me",status="2xx"} 2"#
        ), "{out}");
    }

    #[test]
    fn registries_are_per_instance() {
        let a = Metrics::new();
        let b = Metrics::new();
        a.lockouts.inc();
        assert_eq!(a.lockouts.get(), 1);
        assert_eq!(b.lockouts.get(), 0);
    }
}
