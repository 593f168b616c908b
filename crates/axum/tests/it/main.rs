//! Integration tests of tessera-axum through its public API, over real sockets: a tiny axum
//! Router plays the issuer (JWKS, discovery, revocation feed) so every fetch can be counted
//! and every failure staged; the end-to-end tests run the real Tessera server
//! (tessera-testkit's `spawn_app`).
//!
//! Module map — where new tests go:
//! - `extractor`: `Authenticated<C>`, `Option<..>`, role/scope guards and the RFC 6750
//!   rejection table (missing / invalid / expired / wrong aud, iss, typ / revoked...).
//! - `jwks`: the remote key cache: discovery, rotation, unknown-kid cooldown, stale-if-error,
//!   single flight, Cache-Control bounds, size and redirect limits.
//! - `token_cache`: the verified-token cache: tampering, expiry and revocation on hits.
//! - `feed`: the revocation-feed client: failures against the fake issuer, then end to end
//!   against a running Tessera server.
//! - `interop`: PyJWT (in a cached venv), the tutorial's own code and the jsonwebtoken crate
//!   against Tessera and tessera-axum.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::needless_pass_by_value,
    clippy::new_without_default,
    unreachable_pub,
    missing_docs,
    reason = "tests: a failure should panic with context; helpers are documented where not obvious"
)]

mod extractor;
mod feed;
mod interop;
mod jwks;
mod token_cache;

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tessera_axum::Clock;
use tessera_jose::{Algorithm, JwkSet, SigningKey};

/// Wall-clock seconds now.
pub fn unix_now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// A clock the test moves by hand.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new() -> Self {
        Self(Arc::new(AtomicI64::new(unix_now())))
    }

    pub fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }

    pub fn shared(&self) -> Arc<dyn Clock> {
        Arc::new(self.clone())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A fresh ES256 key with a kid.
pub fn es256(kid: &str) -> SigningKey {
    SigningKey::generate(Algorithm::Es256)
        .unwrap()
        .with_kid(kid)
}

/// Signs a claims object with a header `typ` (if any).
pub fn sign(key: &SigningKey, claims: &Value, typ: Option<&str>) -> String {
    key.sign_jws(&serde_json::to_vec(claims).unwrap(), typ, None)
        .unwrap()
}

/// Flips one character of a token at `index` (from the start), keeping it base64url.
pub fn flip(token: &str, index: usize) -> String {
    let mut bytes = token.as_bytes().to_vec();
    let b = bytes[index];
    bytes[index] = if b == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

/// State of the fake issuer.
pub struct IssuerState {
    pub jwks: Mutex<String>,
    pub cache_control: Mutex<Option<String>>,
    /// The `Age` header of JWKS answers, if any.
    pub age: Mutex<Option<String>>,
    pub fail: AtomicBool,
    pub delay: Mutex<Duration>,
    pub jwks_fetches: AtomicUsize,
    /// JWKS requests answered (after any delay).
    pub jwks_answered: AtomicUsize,
    pub discovery_fetches: AtomicUsize,
    /// The `jwks_uri` the discovery document names (default: this server's).
    pub jwks_uri: Mutex<Option<String>>,
    /// The `issuer` the discovery document names (default: this server's base).
    pub issuer: Mutex<Option<String>>,
    pub base: Mutex<String>,
    /// Revocation events served by `/revocations`.
    pub events: Mutex<Vec<Value>>,
    pub feed_polls: AtomicUsize,
    pub feed_secret: Mutex<String>,
    /// The feed answers every poll with all its events, whatever `since` says.
    pub feed_ignores_since: AtomicBool,
    /// How long the feed holds each answer, which reflects the events as they were when the
    /// request arrived.
    pub feed_delay: Mutex<Duration>,
}

/// A fake issuer on a real socket: JWKS, discovery, a revocation feed, and bad answers on
/// demand.
#[derive(Clone)]
pub struct Issuer {
    pub base: String,
    pub state: Arc<IssuerState>,
}

impl Issuer {
    pub async fn start(keys: &[&SigningKey]) -> Self {
        let state = Arc::new(IssuerState {
            jwks: Mutex::new(String::new()),
            cache_control: Mutex::new(Some("public, max-age=300".into())),
            age: Mutex::new(None),
            fail: AtomicBool::new(false),
            delay: Mutex::new(Duration::ZERO),
            jwks_fetches: AtomicUsize::new(0),
            jwks_answered: AtomicUsize::new(0),
            discovery_fetches: AtomicUsize::new(0),
            jwks_uri: Mutex::new(None),
            issuer: Mutex::new(None),
            base: Mutex::new(String::new()),
            events: Mutex::new(Vec::new()),
            feed_polls: AtomicUsize::new(0),
            feed_secret: Mutex::new("feed-secret".into()),
            feed_ignores_since: AtomicBool::new(false),
            feed_delay: Mutex::new(Duration::ZERO),
        });
        let router = Router::new()
            .route("/jwks.json", get(jwks))
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/redirect", get(redirect))
            .route("/big", get(big))
            .route("/revocations", get(revocations))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        *state.base.lock().unwrap() = base.clone();
        let issuer = Self { base, state };
        issuer.set_keys(keys);
        issuer
    }

    pub fn set_keys(&self, keys: &[&SigningKey]) {
        let set = JwkSet {
            keys: keys.iter().map(|k| k.to_public_jwk().unwrap()).collect(),
        };
        *self.state.jwks.lock().unwrap() = set.to_json();
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks.json", self.base)
    }

    pub fn set_cache_control(&self, value: Option<&str>) {
        *self.state.cache_control.lock().unwrap() = value.map(str::to_owned);
    }

    pub fn set_age(&self, value: Option<&str>) {
        *self.state.age.lock().unwrap() = value.map(str::to_owned);
    }

    pub fn set_failing(&self, fail: bool) {
        self.state.fail.store(fail, Ordering::SeqCst);
    }

    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    pub fn jwks_fetches(&self) -> usize {
        self.state.jwks_fetches.load(Ordering::SeqCst)
    }

    pub fn jwks_answered(&self) -> usize {
        self.state.jwks_answered.load(Ordering::SeqCst)
    }

    pub fn revoke(&self, kind: &str, subject: &str, created_at: i64) {
        let mut events = self.state.events.lock().unwrap();
        let id = i64::try_from(events.len()).unwrap() + 1;
        events.push(json!({
            "id": id, "kind": kind, "subject": subject,
            "created_at": created_at, "expires_at": created_at + 3600,
        }));
    }
}

/// The key set, answered after the issuer's `delay` as it was when the request arrived (a
/// rotation during the delay is not in the answer).
async fn jwks(State(s): State<Arc<IssuerState>>) -> Response {
    s.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let answer = if s.fail.load(Ordering::SeqCst) {
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    } else {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "application/jwk-set+json".parse().unwrap(),
        );
        if let Some(cc) = s.cache_control.lock().unwrap().clone() {
            headers.insert(header::CACHE_CONTROL, cc.parse().unwrap());
        }
        if let Some(age) = s.age.lock().unwrap().clone() {
            headers.insert(header::AGE, age.parse().unwrap());
        }
        let body = s.jwks.lock().unwrap().clone();
        (headers, body).into_response()
    };
    let delay = *s.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    s.jwks_answered.fetch_add(1, Ordering::SeqCst);
    answer
}

async fn discovery(State(s): State<Arc<IssuerState>>) -> Response {
    s.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    if s.fail.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let base = s.base.lock().unwrap().clone();
    let issuer = s.issuer.lock().unwrap().clone().unwrap_or(base.clone());
    let jwks_uri = s
        .jwks_uri
        .lock()
        .unwrap()
        .clone()
        .unwrap_or(format!("{base}/jwks.json"));
    axum::Json(json!({ "issuer": issuer, "jwks_uri": jwks_uri })).into_response()
}

/// Redirects to the same path on another origin (`localhost` instead of `127.0.0.1`).
async fn redirect(State(s): State<Arc<IssuerState>>) -> Response {
    let other = s.base.lock().unwrap().replace("127.0.0.1", "localhost");
    (
        StatusCode::FOUND,
        [(header::LOCATION, format!("{other}/jwks.json"))],
    )
        .into_response()
}

/// A JWKS-shaped answer over the 256 KiB limit.
async fn big() -> Response {
    let filler = "x".repeat(300 * 1024);
    format!("{{\"keys\":[],\"pad\":\"{filler}\"}}").into_response()
}

async fn revocations(
    State(s): State<Arc<IssuerState>>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    use base64::Engine as _;
    s.feed_polls.fetch_add(1, Ordering::SeqCst);
    let expected = format!("svc:{}", s.feed_secret.lock().unwrap());
    let ok = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .is_some_and(|raw| raw == expected.as_bytes());
    if !ok || s.fail.load(Ordering::SeqCst) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let since: i64 = q
        .get("since")
        .and_then(|v| v.parse().ok())
        .filter(|_| !s.feed_ignores_since.load(Ordering::SeqCst))
        .unwrap_or(0);
    let limit: usize = q
        .get("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    let events: Vec<Value> = s
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e["id"].as_i64().unwrap() > since)
        .take(limit)
        .cloned()
        .collect();
    let cursor = events.last().map_or(since, |e| e["id"].as_i64().unwrap());
    let delay = *s.feed_delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    axum::Json(json!({ "events": events, "cursor": cursor })).into_response()
}

/// A single-threaded runtime of its own, for tests of a verifier that outlives the runtime
/// it was built on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Polls `check` every 50 ms until it holds or `deadline` passes.
pub async fn eventually(deadline: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let start = tokio::time::Instant::now();
    loop {
        if check().await {
            return true;
        }
        if start.elapsed() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
