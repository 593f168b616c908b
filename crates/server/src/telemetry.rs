//! The tracing subscriber (installed once by the binary) and request logging.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::header;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt as _;
use std::panic::AssertUnwindSafe;

use crate::error::AppError;
use crate::metrics::{self, Metrics, Route};
use crate::session::CSRF_HEADER;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;
use crate::error::ErrorDetail;

/// Builds and installs the global subscriber: human or JSON lines on stderr, filtered by
/// `RUST_LOG` (default `info`). Every event logged while a request is handled carries its
/// id (`request_id`; see [`WithRequestId`]). Call once, from `main`.
///
/// # Errors
/// If a subscriber was already installed.
pub fn init(format: LogFormat) -> Result<(), String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: escape codes in a log file or a journal are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder
            .map_event_format(|inner| WithRequestId { inner, json: false })
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .map_event_format(|inner| WithRequestId { inner, json: true })
            .try_init(),
    }
    .map_err(|e| e.to_string())
}

tokio::task_local! {
    /// The id of the request the current task is handling.
    static CURRENT_REQUEST_ID: HeaderValue;
}

/// The id of the request being handled by the current task, if any.
#[must_use]
pub fn current_request_id() -> Option<HeaderValue> {
    CURRENT_REQUEST_ID.try_with(Clone::clone).ok()
}

/// An event formatter that adds the current request's id to every event logged while a
/// request is handled: `request_id=<id>` at the end of a human line, a top-level
/// `"request_id"` member in JSON. Events that name a `request_id` field themselves (audit
/// events) are left as they are.
///
/// Why not a `request` span: the formatting layer formats a span's fields when the span is
/// created, on every request, whether or not anything is logged inside it; on a cached
/// `/users/me` that was 14 % of the request (83.7k req/s without it, 72.1k with it, in one
/// run). The id is kept in a task-local instead, and costs something only when an event is
/// actually written.
#[derive(Debug)]
pub struct WithRequestId<F> {
    inner: F,
    json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithRequestId<F>
where
    F: FormatEvent<S, N>,
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let Some(id) = current_request_id() else {
            return self.inner.format_event(ctx, writer, event);
        };
        let mut named = false;
        event.record(
            &mut |field: &tracing::field::Field, _: &dyn std::fmt::Debug| {
                named |= field.name() == "request_id";
            },
        );
        if named {
            return self.inner.format_event(ctx, writer, event);
        }
        let id = id.to_str().unwrap_or("-");
        let mut line = String::with_capacity(256);
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        let body = line.strip_suffix('\n').unwrap_or(&line);
        if self.json {
            let quoted = serde_json::to_string(id).map_err(|_| std::fmt::Error)?;
            match body.strip_prefix('{') {
                Some(rest) if rest.starts_with('}') => {
                    writeln!(writer, "{{\"request_id\":{quoted}}}")
                }
                Some(rest) => writeln!(writer, "{{\"request_id\":{quoted},{rest}"),
                None => writeln!(writer, "{body}"),
            }
        } else {
            // Valid ids are visible ASCII without spaces: nothing to quote.
            writeln!(writer, "{body} request_id={id}")
        }
    }
}

/// The longest `x-request-id` accepted from a client.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// True for a client-supplied request id worth propagating: 1 to 128 visible ASCII
/// characters (no spaces or control characters, so it cannot forge log lines or headers).
#[must_use]
pub fn is_valid_request_id(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_REQUEST_ID_LEN && id.iter().all(u8::is_ascii_graphic)
}

/// The request-id header (de facto standard; echoed on every response).
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids for requests that come without a valid one: UUID-shaped (version 4 layout),
/// unique within the process (a counter through a bijective mixer) and, with a random
/// per-process seed, across instances in practice. Not secret, so no system call per
/// request: the kernel CSPRNG is read once, at startup.
#[derive(Debug)]
pub struct RequestIds {
    seed: [u64; 2],
    next: AtomicU64,
}

impl RequestIds {
    /// A generator seeded from the CSPRNG.
    ///
    /// # Errors
    /// If the CSPRNG fails.
    pub fn new() -> Result<Self, String> {
        let seed = tessera_jose::crypto::random_array::<16>().map_err(|e| e.to_string())?;
        let (a, b) = seed.split_at(8);
        let word = |s: &[u8]| u64::from_le_bytes(s.try_into().unwrap_or_default());
        Ok(Self {
            seed: [word(a), word(b)],
            next: AtomicU64::new(0),
        })
    }

    /// The next id.
    pub fn next_id(&self) -> HeaderValue {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let hi = splitmix64(n ^ self.seed[0]);
        let lo = splitmix64(n.wrapping_add(self.seed[1]));
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&hi.to_be_bytes());
        bytes[8..].copy_from_slice(&lo.to_be_bytes());
        let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        HeaderValue::from_bytes(id.hyphenated().encode_lower(&mut text).as_bytes())
            .unwrap_or_else(|_| HeaderValue::from_static("-"))
    }
}

/// SplitMix64's output function: a bijection on `u64`, so distinct counters give distinct
/// ids.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The per-request layer: everything the server does around every handler, in one service.
///
/// One hand-written service instead of seven stacked layers (request id, panics, metrics,
/// the request log line, the request timeout, sensitive-header marking and the security
/// headers). axum applies `Router::layer` to every route and clones the whole stack on
/// every request, and each tower-http layer added a clone, a wrapper future and a move of
/// the future beneath it; on a cached `/users/me` the seven layers cost more than the
/// token check (`docs/BENCHMARKS.md`).
///
/// For each request:
/// - `Authorization`, `Cookie` and the CSRF header are marked sensitive (their values are
///   redacted from any `Debug` output), as `Set-Cookie` is on the response.
/// - An incoming `x-request-id` is kept only if [valid](is_valid_request_id) and single,
///   otherwise one is generated; handlers and audit read it with [`current_request_id`],
///   and it goes on the response. Everything logged while the request is handled carries the id
///   ([`WithRequestId`]).
/// - The handler runs under the request timeout (`request_timeout`): past it the client
///   gets a 503 `temporarily_unavailable`. The timer is armed only if the handler does not
///   finish on its first poll, so handlers that never wait (a cached token check) never
///   touch the timer wheel; the deadline still counts from the start of the request.
/// - A panicking handler is answered with a generic 500 instead of a dropped connection.
/// - The request is counted and timed under its matched route ([`crate::metrics`]) and
///   logged once (method, route, status, latency, id; at `debug` unless it failed); an
///   error response's internal detail is logged, and any 5xx body is replaced by a generic
///   one carrying the request id.
/// - Every response gets `X-Content-Type-Options: nosniff`, `Cache-Control: no-store`
///   unless the handler chose its own, and, when the listener speaks TLS, HSTS (RFC 6797;
///   sent over plain HTTP it would be ignored, §8.1).
///
/// Headers and bodies are never logged (tokens and passwords live there).
#[derive(Clone, Debug)]
pub struct ObserveLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    metrics: Arc<Metrics>,
    ids: Arc<RequestIds>,
    timeout: Duration,
    hsts: Option<HeaderValue>,
}

impl ObserveLayer {
    /// The layer, reporting to `metrics`, with request ids from `ids`, answering 503 after
    /// `timeout`, and sending `hsts` (the `Strict-Transport-Security` value) if given.
    #[must_use]
    pub fn new(
        metrics: Arc<Metrics>,
        ids: Arc<RequestIds>,
        timeout: Duration,
        hsts: Option<HeaderValue>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                metrics,
                ids,
                timeout,
                hsts,
            }),
        }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    /// axum calls this once per route (and once for the fallback), so each instance keeps
    /// the metric handles of the route it serves.
    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            shared: Arc::clone(&self.shared),
            handles: Arc::new(metrics::RouteHandles::default()),
        }
    }
}

/// See [`ObserveLayer`].
#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
    shared: Arc<Shared>,
    handles: Arc<metrics::RouteHandles>,
}

/// Decrements the in-flight gauge when the request ends, also when the client went away
/// and the future was dropped.
struct InFlight(Arc<Shared>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.in_flight.dec();
    }
}

/// Marks the values of the headers `is_secret` picks as sensitive (redacted from `Debug`
/// output). One pass over the map: cheaper than a lookup per name for the handful of headers
/// a request carries.
fn mark_sensitive(headers: &mut HeaderMap, is_secret: impl Fn(&HeaderName) -> bool) {
    for (name, value) in headers.iter_mut() {
        if is_secret(name) {
            value.set_sensitive(true);
        }
    }
}

/// Request headers whose values are secrets: credentials and the CSRF token.
fn is_secret_request_header(name: &HeaderName) -> bool {
    name == header::AUTHORIZATION || name == header::COOKIE || name == CSRF_HEADER
}

impl<S> tower::Service<Request> for Observe<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let start = Instant::now();
        mark_sensitive(req.headers_mut(), is_secret_request_header);
        let request_id = {
            let mut ids = req.headers().get_all(REQUEST_ID).iter();
            match (ids.next(), ids.next()) {
                (Some(id), None) if is_valid_request_id(id.as_bytes()) => id.clone(),
                // Handlers read it from the task-local (`current_request_id`), not from
                // the request's headers.
                _ => self.shared.ids.next_id(),
            }
        };
        let method = metrics::method_label(req.method());
        let route = Route(req.extensions().get::<MatchedPath>().cloned());
        // A panicking handler becomes a 500 (and is logged) instead of a dropped
        // connection, whether it panics when called or while running.
        let future = std::panic::catch_unwind(AssertUnwindSafe(|| {
            CURRENT_REQUEST_ID.sync_scope(request_id.clone(), || self.inner.call(req))
        }));
        self.shared.metrics.in_flight.inc();
        let in_flight = InFlight(Arc::clone(&self.shared));
        let handles = Arc::clone(&self.handles);
        Box::pin(async move {
            let shared = &in_flight.0;
            let outcome = match future {
                Ok(future) => {
                    let guarded =
                        AssertUnwindSafe(CURRENT_REQUEST_ID.scope(request_id.clone(), future))
                            .catch_unwind();
                    let deadline = tokio::time::Instant::from_std(start + shared.timeout);
                    match within(deadline, guarded).await {
                        Some(Ok(Ok(response))) => Outcome::Response(response),
                        Some(Ok(Err(never))) => match never {},
                        Some(Err(_)) => Outcome::Panicked,
                        None => Outcome::TimedOut,
                    }
                }
                Err(_) => Outcome::Panicked,
            };
            let mut response = match outcome {
                Outcome::Response(response) => response,
                Outcome::Panicked => AppError::internal("handler panicked").into_response(),
                Outcome::TimedOut => StatusCode::SERVICE_UNAVAILABLE.into_response(),
            };
            let elapsed = start.elapsed();
            let status = response.status();
            let route_label = route.as_str();
            if status.is_server_error() || response.extensions().get::<ErrorDetail>().is_some() {
                log_failure(method, route_label, status, &request_id, elapsed, &response);
                if status.is_server_error() {
                    response =
                        generic_server_error(status, request_id.to_str().unwrap_or("-"), response);
                }
            } else if tracing::enabled!(tracing::Level::DEBUG) {
                tracing::debug!(
                    method,
                    route = route_label,
                    status = status.as_u16(),
                    request_id = request_id.to_str().unwrap_or("-"),
                    latency_ms = elapsed.as_secs_f64() * 1000.0,
                    "request"
                );
            }
            shared
                .metrics
                .observe_request(&handles, method, route, status.as_u16(), elapsed);
            let headers = response.headers_mut();
            mark_sensitive(headers, |name| name == header::SET_COOKIE);
            headers.insert(
                HeaderName::from_static("x-content-type-options"),
                HeaderValue::from_static("nosniff"),
            );
            if !headers.contains_key(header::CACHE_CONTROL) {
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            }
            if let Some(hsts) = &shared.hsts {
                headers.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
            }
            headers.insert(REQUEST_ID, request_id);
            drop(in_flight);
            Ok(response)
        })
    }
}

enum Outcome {
    Response(Response),
    Panicked,
    TimedOut,
}

/// `future`'s output, or `None` if `deadline` passes first. The timer is created only if
/// the first poll leaves the future pending: most requests finish on their first poll, and
/// an unarmed deadline costs nothing.
async fn within<F: Future>(deadline: tokio::time::Instant, future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let first = std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(output) => Some(output),
        Poll::Pending => tokio::time::timeout_at(deadline, future).await.ok(),
    }
}

fn log_failure(
    method: &str,
    route: &str,
    status: StatusCode,
    request_id: &HeaderValue,
    elapsed: Duration,
    response: &Response,
) {
    let request_id = request_id.to_str().unwrap_or("-");
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    if let Some(ErrorDetail(detail)) = response.extensions().get::<ErrorDetail>() {
        tracing::error!(method, route, status = status.as_u16(), request_id, latency_ms, error = %detail, "request failed");
    } else if status.is_server_error() {
        tracing::error!(
            method,
            route,
            status = status.as_u16(),
            request_id,
            latency_ms,
            "request failed"
        );
    }
}

fn generic_server_error(status: StatusCode, request_id: &str, original: Response) -> Response {
    let (code, description) = if status == StatusCode::SERVICE_UNAVAILABLE {
        (
            "temporarily_unavailable",
            "the service is temporarily unavailable; retry shortly",
        )
    } else {
        ("server_error", "internal error")
    };
    // Keep a 503's own description (it is written for clients), replace everything else.
    if status == StatusCode::SERVICE_UNAVAILABLE
        && original.extensions().get::<ErrorDetail>().is_none()
        && is_json(&original)
    {
        return original;
    }
    let mut res = (
        status,
        axum::Json(serde_json::json!({
            "error": code,
            "error_description": description,
            "request_id": request_id,
        })),
    )
        .into_response();
    for name in ["retry-after", "www-authenticate"] {
        if let Some(v) = original.headers().get(name) {
            res.headers_mut().insert(name, v.clone());
        }
    }
    res.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    res
}

fn is_json(r: &Response<Body>) -> bool {
    r.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::Router;
    use axum::body::to_bytes;
    use axum::routing::get;
    use tower::{Layer as _, ServiceExt as _};

    fn observed(router: Router, hsts: bool) -> Observe<Router> {
        ObserveLayer::new(
            Arc::new(Metrics::new()),
            Arc::new(RequestIds::new().unwrap()),
            Duration::from_millis(200),
            hsts.then(|| HeaderValue::from_static("max-age=1")),
        )
        .layer(router)
    }

    fn get_req(path: &str) -> Request {
        Request::builder()
            .uri(path)
            .header("authorization", "Bearer secret")
            .body(Body::empty())
            .unwrap()
    }

    async fn body_json(res: Response) -> serde_json::Value {
        serde_json::from_slice(&to_bytes(res.into_body(), 1 << 16).await.unwrap()).unwrap()
    }

    #[tokio::test]
    async fn a_handler_past_the_request_timeout_gets_a_503_with_every_header() {
        let router = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        );
        let started = Instant::now();
        let res = observed(router, true)
            .oneshot(get_req("/slow"))
            .await
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()["x-content-type-options"], "nosniff");
        assert_eq!(res.headers()["cache-control"], "no-store");
        assert_eq!(res.headers()["strict-transport-security"], "max-age=1");
        let id = res.headers()[REQUEST_ID].to_str().unwrap().to_owned();
        let body = body_json(res).await;
        assert_eq!(body["error"], "temporarily_unavailable");
        assert_eq!(body["request_id"], id.as_str());
    }

    #[tokio::test]
    async fn a_handler_that_waits_but_finishes_in_time_is_answered() {
        let router = Router::new().route(
            "/wait",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                "done"
            }),
        );
        let res = observed(router, false)
            .oneshot(get_req("/wait"))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert!(res.headers().get("strict-transport-security").is_none());
        assert_eq!(to_bytes(res.into_body(), 64).await.unwrap(), "done");
    }

    #[tokio::test]
    async fn panics_become_a_generic_500_and_headers_are_marked_or_kept() {
        let router = Router::new()
            .route(
                "/panic",
                get(|| async {
                    if true {
                        panic!("boom");
                    }
                    "unreachable"
                }),
            )
            .route(
                "/own",
                get(|req: Request| async move {
                    // The credential is redacted from any Debug output of the request.
                    assert!(req.headers()["authorization"].is_sensitive());
                    assert!(!req.headers()["host"].is_sensitive());
                    assert!(current_request_id().is_some());
                    (
                        [
                            ("cache-control", "max-age=60"),
                            ("set-cookie", "a=b; HttpOnly"),
                        ],
                        "mine",
                    )
                }),
            );
        let svc = observed(router, false);
        let res = svc.clone().oneshot(get_req("/panic")).await.unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(res.headers()["x-content-type-options"], "nosniff");
        let body = body_json(res).await;
        assert_eq!(body["error"], "server_error");
        assert!(!body.to_string().contains("boom"));

        let mut req = get_req("/own");
        req.headers_mut()
            .insert("host", HeaderValue::from_static("example.test"));
        req.headers_mut()
            .insert(REQUEST_ID, HeaderValue::from_static("client-id-1"));
        let res = svc.oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(
            res.headers()["cache-control"],
            "max-age=60",
            "the handler's own"
        );
        assert!(res.headers()["set-cookie"].is_sensitive());
        assert_eq!(res.headers()[REQUEST_ID], "client-id-1");
    }

    #[test]
    fn generated_request_ids_are_distinct_uuids() {
        let ids = RequestIds::new().unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = ids.next_id();
            let text = id.to_str().unwrap();
            let parsed = uuid::Uuid::parse_str(text).unwrap();
            assert_eq!(parsed.get_version_num(), 4, "{text}");
            assert!(is_valid_request_id(id.as_bytes()));
            assert!(seen.insert(text.to_owned()), "repeated id {text}");
        }
        // Another process (another seed) starts elsewhere.
        let other = RequestIds::new().unwrap();
        assert!(!seen.contains(other.next_id().to_str().unwrap()));
    }

    #[test]
    fn request_ids_are_short_visible_ascii() {
        assert!(is_valid_request_id(b"abc-123_XYZ.~"));
        assert!(is_valid_request_id(&[b'a'; 128]));
        assert!(!is_valid_request_id(&[b'a'; 129]));
        assert!(!is_valid_request_id(b""));
        assert!(!is_valid_request_id(b"has space"));
        assert!(!is_valid_request_id(b"line\nbreak"));
        assert!(!is_valid_request_id("caf\u{e9}".as_bytes()));
    }
}
