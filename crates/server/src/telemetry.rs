//! The tracing subscriber (installed once by the binary) and request logging.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::panic::AssertUnwindSafe;

use crate::error::AppError;
use crate::metrics::{self, Metrics, RouteTable};
use crate::session::CSRF_HEADER;
use crate::shard::Sharded;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::FmtContext;
use tracing_subscriber::fmt::format::{FormatEvent, FormatFields, Writer};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;
use crate::error::ErrorDetail;

/// Builds and installs the global subscriber: human or JSON lines on stderr, filtered by
/// `TESSERA_LOG`, else `RUST_LOG` (default `info`). Every event logged while a request is
/// handled carries its id (`request_id`; see [`WithRequestId`]). Call once, from `main`.
/// A filter that does not parse is replaced by `info`, with a warning that names it.
///
/// # Errors
/// If a subscriber was already installed.
pub fn init(format: LogFormat) -> Result<(), String> {
    let mut refused = None;
    let mut filter = LOG_FILTER_ENV
        .iter()
        .find_map(|&name| std::env::var_os(name).map(|value| (name, value)))
        .and_then(|(name, value)| {
            let parsed = value
                .to_str()
                .ok_or_else(|| "it is not UTF-8".to_owned())
                .and_then(|text| EnvFilter::try_new(text).map_err(|e| e.to_string()));
            parsed
                .map_err(|e| refused = Some(format!("{name}: {e}")))
                .ok()
        })
        .unwrap_or_else(|| EnvFilter::new("info"));
    // sqlx logs each connect parameter it does not know together with its value
    // (`?sslpassword=…`, a mistyped `Password=`): never let that through, whatever
    // RUST_LOG says. (A directive added last overrides the same target's.)
    if let Ok(directive) = "sqlx_postgres::options::parse=error".parse() {
        filter = filter.add_directive(directive);
    }
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
    .map_err(|e| e.to_string())?;
    if let Some(why) = refused {
        tracing::warn!("the log filter was not understood, so the level is `info`: {why}");
    }
    Ok(())
}

/// Where the log filter is read from, first found wins: Tessera's own variable, then the
/// usual one of Rust programs.
const LOG_FILTER_ENV: [&str; 2] = ["TESSERA_LOG", "RUST_LOG"];

tokio::task_local! {
    /// The request the current task is handling.
    static CURRENT_REQUEST: Current;
}

/// What the handlers of a request can ask about it without an extension (an extension is
/// a heap allocation on every request).
#[derive(Clone, Debug)]
struct Current {
    id: RequestId,
    /// The client's address, when the request came through [`crate::listen`].
    peer: Option<SocketAddr>,
}

/// The id of the request being handled by the current task, if any.
#[must_use]
pub fn current_request_id() -> Option<RequestId> {
    CURRENT_REQUEST.try_with(|current| current.id.clone()).ok()
}

/// The address of the client whose request the current task is handling: the TCP peer,
/// which is the proxy's address behind a proxy (see [`crate::ratelimit::client_ip`]).
/// `None` outside a request, or for a request that did not come from a socket (tests that
/// call the router directly).
#[must_use]
pub fn current_peer() -> Option<SocketAddr> {
    CURRENT_REQUEST
        .try_with(|current| current.peer)
        .ok()
        .flatten()
}

/// A request's id: the client's `x-request-id` when it sent a valid one, otherwise one the
/// server generated. A generated id is kept inline, so passing it to the handler and the log
/// lines allocates nothing.
#[derive(Clone, Debug)]
pub struct RequestId(IdRepr);

#[derive(Clone, Debug)]
enum IdRepr {
    Generated([u8; uuid::fmt::Hyphenated::LENGTH]),
    Given(HeaderValue),
}

impl RequestId {
    /// The id as text (always visible ASCII).
    #[must_use]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            IdRepr::Generated(text) => std::str::from_utf8(text).unwrap_or("-"),
            IdRepr::Given(value) => value.to_str().unwrap_or("-"),
        }
    }

    /// The id as a header value, for the response.
    #[must_use]
    pub fn to_header(&self) -> HeaderValue {
        match &self.0 {
            IdRepr::Generated(text) => {
                HeaderValue::from_bytes(text).unwrap_or_else(|_| HeaderValue::from_static("-"))
            }
            IdRepr::Given(value) => value.clone(),
        }
    }

    /// The request's own id if it carries exactly one [valid](is_valid_request_id)
    /// `x-request-id`, otherwise a new one from `ids`.
    fn for_request(headers: &HeaderMap, ids: &RequestIds) -> Self {
        let mut given = headers.get_all(REQUEST_ID).iter();
        match (given.next(), given.next()) {
            (Some(id), None) if is_valid_request_id(id.as_bytes()) => {
                Self(IdRepr::Given(id.clone()))
            }
            _ => ids.next_id(),
        }
    }
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
        let id = id.as_str();
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
    /// Shard `i` counts the sequence numbers `i`, `i + SHARDS`, `i + 2 × SHARDS`, …, so
    /// each thread draws from its own cache line and no number is drawn twice.
    next: Sharded<AtomicU64>,
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
            next: Sharded::default(),
        })
    }

    /// The next id.
    pub fn next_id(&self) -> RequestId {
        let shard = crate::shard::index();
        let k = self.next.shard(shard).fetch_add(1, Ordering::Relaxed);
        // Wraps after 2^60 ids per shard: centuries at any request rate.
        let n = k
            .wrapping_mul(crate::shard::SHARDS as u64)
            .wrapping_add(shard as u64);
        let hi = splitmix64(n ^ self.seed[0]);
        let lo = splitmix64(n.wrapping_add(self.seed[1]));
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&hi.to_be_bytes());
        bytes[8..].copy_from_slice(&lo.to_be_bytes());
        let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        id.hyphenated().encode_lower(&mut text);
        RequestId(IdRepr::Generated(text))
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

/// The per-request layer: everything the server does around every request, in one service
/// wrapped around the whole router.
///
/// One hand-written service instead of seven stacked layers (request id, panics, metrics,
/// the request log line, the request timeout, sensitive-header marking and the security
/// headers), and outside the router rather than a `Router::layer`: axum boxes a layer's
/// service once per route and clones and boxes it again on every request, and each tower-http
/// layer added a clone, a wrapper future and a move of the future beneath it. Its future
/// ([`ObserveFuture`]) is a plain struct: no box and no async state machine per request
/// (`docs/BENCHMARKS.md` has the instruction counts).
///
/// For each request:
/// - `Authorization`, `Cookie` and the CSRF header are marked sensitive (their values are
///   redacted from any `Debug` output), as `Set-Cookie` is on the response.
/// - An incoming `x-request-id` is kept only if [valid](is_valid_request_id) and single,
///   otherwise one is generated; handlers and audit read it with [`current_request_id`],
///   and it goes on the response. Everything logged while the request is handled carries
///   the id ([`WithRequestId`]).
/// - The request body limit (`max_body_bytes`) is set for the extractors.
/// - The handler runs under the request timeout (`request_timeout`): past it the client
///   gets a 503 `temporarily_unavailable`. The timer is armed only if the handler does not
///   finish on its first poll, so handlers that never wait (a cached token check) never
///   touch the timer wheel; the deadline still counts from the start of the request.
/// - A panicking handler is answered with a generic 500 instead of a dropped connection.
/// - The request is counted and timed under its route template (`RouteTable`) and
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
    routes: RouteTable,
    timeout: Duration,
    hsts: Option<HeaderValue>,
    body_limit: Option<DefaultBodyLimit>,
}

impl ObserveLayer {
    /// The layer, reporting to `metrics` under the templates of `routes`, with request ids
    /// from `ids`, answering 503 after `timeout`, sending `hsts` (the
    /// `Strict-Transport-Security` value) if given, and limiting request bodies to
    /// `body_limit` bytes if given (for axum's body extractors; see [`DefaultBodyLimit`]).
    #[must_use]
    pub(crate) fn new(
        metrics: Arc<Metrics>,
        ids: Arc<RequestIds>,
        routes: RouteTable,
        timeout: Duration,
        hsts: Option<HeaderValue>,
        body_limit: Option<usize>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                metrics,
                ids,
                routes,
                timeout,
                hsts,
                body_limit: body_limit.map(DefaultBodyLimit::max),
            }),
        }
    }
}

impl<S> tower::Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// See [`ObserveLayer`].
#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
    shared: Arc<Shared>,
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

impl<S, B> tower::Service<http::Request<B>> for Observe<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        start(&self.shared, &mut self.inner, req, None)
    }
}

/// The service [`crate::App`] wraps: the router, under CORS when configured.
type AppInner = tower::util::Either<tower_http::cors::Cors<axum::Router>, axum::Router>;

/// Requests from [`crate::listen`]'s connections, with the client's address. Only for the
/// server's own stack ([`crate::App`]): the router, under CORS when configured, is always
/// ready (`poll_ready` returns `Ready` unconditionally), so it is called without asking. A
/// layer that could refuse (a concurrency limit, say) would change the type and so need an
/// impl of its own that polls for readiness.
impl crate::listen::Serve for Observe<AppInner> {
    type Future = ObserveFuture<<AppInner as tower::Service<Request>>::Future>;

    fn serve(&self, req: http::Request<hyper::body::Incoming>, peer: SocketAddr) -> Self::Future {
        start(&self.shared, &mut self.inner.clone(), req, Some(peer))
    }
}

/// Starts `req` on `inner`: the request's id and route, the body limit, the handler called
/// under the request's task-local (id and `peer`).
fn start<S, B>(
    shared: &Arc<Shared>,
    inner: &mut S,
    req: http::Request<B>,
    peer: Option<SocketAddr>,
) -> ObserveFuture<S::Future>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let start = Instant::now();
    // An empty body (a GET, say) cannot exceed any limit: no need for the extension that
    // carries the limit to the body extractors (a map allocated for every request).
    let has_body = !req.body().is_end_stream();
    let mut req = req.map(Body::new);
    mark_sensitive(req.headers_mut(), is_secret_request_header);
    if has_body && let Some(limit) = shared.body_limit {
        limit.apply(&mut req);
    }
    let current = Current {
        id: RequestId::for_request(req.headers(), &shared.ids),
        peer,
    };
    let method = metrics::method_label(req.method());
    let head = req.method() == http::Method::HEAD;
    let route = shared.routes.lookup(req.uri().path());
    // A handler that panics when called (rather than while running) is answered like
    // one that panics later.
    let inner = std::panic::catch_unwind(AssertUnwindSafe(|| {
        CURRENT_REQUEST.sync_scope(current.clone(), || inner.call(req))
    }))
    .ok();
    shared.metrics.in_flight.inc();
    ObserveFuture {
        inner,
        timer: None,
        request: Some(InFlight {
            shared: Arc::clone(shared),
            start,
            current,
            method,
            head,
            route,
        }),
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Observe`]: the handler's own, polled under the request's id (a
    /// task-local), its deadline and a panic guard; then the response's headers, metrics and
    /// log line.
    pub struct ObserveFuture<F> {
        #[pin]
        inner: Option<F>,
        // Armed only when the handler waits (see `poll`). Outside tokio's cooperative budget,
        // as in `tokio::time::timeout`: a handler that spends the task's budget on every
        // poll must still be stopped at the deadline.
        #[pin]
        timer: Option<tokio::task::Unconstrained<tokio::time::Sleep>>,
        // Taken when the response is ready.
        request: Option<InFlight>,
    }

    impl<F> PinnedDrop for ObserveFuture<F> {
        // A handler's future dropped before it finished (the client went away) is dropped
        // under the request's id, like everything else it does.
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if this.inner.is_some()
                && let Some(request) = this.request.as_ref()
            {
                CURRENT_REQUEST.sync_scope(request.current.clone(), || this.inner.set(None));
            }
        }
    }
}

impl<F> std::fmt::Debug for ObserveFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObserveFuture")
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

impl<F> Future for ObserveFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(request) = this.request.as_ref() else {
            // Polled again after it finished (a caller bug): answer, never panic.
            return Poll::Ready(Ok(AppError::internal(
                "request future polled after completion",
            )
            .into_response()));
        };
        let outcome = match this.inner.as_mut().as_pin_mut() {
            None => Outcome::Panicked,
            Some(inner) => {
                let polled = CURRENT_REQUEST.sync_scope(request.current.clone(), || {
                    std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx)))
                });
                match polled {
                    Ok(Poll::Ready(Ok(response))) => Outcome::Response(response),
                    Ok(Poll::Ready(Err(never))) => match never {},
                    Err(_) => Outcome::Panicked,
                    Ok(Poll::Pending) => {
                        // Most requests finish on their first poll and never create a timer;
                        // the deadline counts from the start of the request all the same.
                        if this.timer.is_none()
                            // A timeout too large to add to the clock means no deadline.
                            && let Some(deadline) = request.start.checked_add(request.shared.timeout)
                        {
                            this.timer.set(Some(tokio::task::unconstrained(
                                tokio::time::sleep_until(deadline.into()),
                            )));
                        }
                        match this.timer.as_mut().as_pin_mut().map(|t| t.poll(cx)) {
                            Some(Poll::Ready(())) => Outcome::TimedOut,
                            _ => return Poll::Pending,
                        }
                    }
                }
            }
        };
        // The handler's future (and what it holds) goes before the response is finished,
        // under the request's id.
        CURRENT_REQUEST.sync_scope(request.current.clone(), || this.inner.set(None));
        this.timer.set(None);
        match this.request.take() {
            Some(request) => Poll::Ready(Ok(request.finish(outcome))),
            None => Poll::Ready(Ok(
                AppError::internal("request finished twice").into_response()
            )),
        }
    }
}

/// What [`ObserveFuture`] knows about its request while it runs. Dropping it (the response
/// was sent, or the client went away and the future was dropped) decrements the in-flight
/// gauge.
#[derive(Debug)]
struct InFlight {
    shared: Arc<Shared>,
    start: Instant,
    current: Current,
    method: &'static str,
    /// A `HEAD` request: its answer has no body (RFC 9110 §9.3.2). axum strips the handler's
    /// body inside the router; the bodies made here (timeout, panic, generic 5xx) are
    /// stripped in [`InFlight::finish`].
    head: bool,
    route: metrics::RouteId,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.metrics.in_flight.dec();
    }
}

impl InFlight {
    /// The response for `outcome`, with the headers every response gets; the request is
    /// counted, timed and (when it failed, or at `debug`) logged.
    fn finish(self, outcome: Outcome) -> Response {
        let mut response = match outcome {
            Outcome::Response(response) => response,
            Outcome::Panicked => AppError::internal("handler panicked").into_response(),
            Outcome::TimedOut => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        };
        let elapsed = self.start.elapsed();
        let status = response.status();
        let shared = &self.shared;
        let (route_label, handles) = shared.routes.get(self.route);
        let route = route_label.as_str();
        if status.is_server_error() || response.extensions().get::<ErrorDetail>().is_some() {
            let request_id = self.current.id.as_str();
            log_failure(self.method, route, status, request_id, elapsed, &response);
            if status.is_server_error() {
                response = generic_server_error(status, request_id, response);
            }
        } else if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!(
                method = self.method,
                route,
                status = status.as_u16(),
                request_id = self.current.id.as_str(),
                latency_ms = elapsed.as_secs_f64() * 1000.0,
                "request"
            );
        }
        shared
            .metrics
            .observe_request(handles, self.method, route_label, status.as_u16(), elapsed);
        let headers = response.headers_mut();
        mark_sensitive(headers, |name| name == header::SET_COOKIE);
        // Room for the three or four headers below in one step.
        headers.reserve(4);
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
        headers.insert(REQUEST_ID, self.current.id.to_header());
        if self.head {
            *response.body_mut() = Body::empty();
        }
        response
    }
}

enum Outcome {
    Response(Response),
    Panicked,
    TimedOut,
}

fn log_failure(
    method: &str,
    route: &str,
    status: StatusCode,
    request_id: &str,
    elapsed: Duration,
    response: &Response,
) {
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
        let mut routes = RouteTable::default();
        for t in ["/slow", "/wait", "/panic", "/own"] {
            routes.add(t);
        }
        ObserveLayer::new(
            Arc::new(Metrics::new()),
            Arc::new(RequestIds::new().unwrap()),
            routes,
            Duration::from_millis(200),
            hsts.then(|| HeaderValue::from_static("max-age=1")),
            None,
        )
        .layer(router)
    }

    /// A layer with no route table and no HSTS, reporting to `metrics`.
    fn plain_layer(
        metrics: &Arc<Metrics>,
        timeout: Duration,
        body_limit: Option<usize>,
    ) -> ObserveLayer {
        ObserveLayer::new(
            Arc::clone(metrics),
            Arc::new(RequestIds::new().unwrap()),
            RouteTable::default(),
            timeout,
            None,
            body_limit,
        )
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

    #[tokio::test]
    async fn a_handler_that_spends_its_budget_on_every_poll_still_times_out() {
        // Always ready, never done: each poll spends the task's cooperative budget, after
        // which tokio's resources (timers included) report Pending until the next poll.
        let router = Router::new().route(
            "/slow",
            get(|| async {
                loop {
                    tokio::task::consume_budget().await;
                }
                #[allow(unreachable_code)]
                "never"
            }),
        );
        let res = tokio::time::timeout(
            Duration::from_secs(10),
            observed(router, false).oneshot(get_req("/slow")),
        )
        .await
        .expect("the request timeout fired")
        .unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn answers_made_here_to_head_requests_have_no_body() {
        let router = Router::new().route(
            "/panic",
            get(|| async {
                if true {
                    panic!("boom");
                }
                "unreachable"
            }),
        );
        let req = Request::builder()
            .method("HEAD")
            .uri("/panic")
            .body(Body::empty())
            .unwrap();
        let res = observed(router, false).oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(res.headers().contains_key(REQUEST_ID));
        assert!(to_bytes(res.into_body(), 1 << 16).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_handler_dropped_midway_is_dropped_under_its_request_id() {
        struct Witness(Arc<std::sync::Mutex<Option<String>>>);
        impl Drop for Witness {
            fn drop(&mut self) {
                *self.0.lock().unwrap() = current_request_id().map(|id| id.as_str().to_owned());
            }
        }
        let seen = Arc::new(std::sync::Mutex::new(None));
        let keep = Arc::clone(&seen);
        let router = Router::new().route(
            "/slow",
            get(move || {
                let witness = Witness(Arc::clone(&keep));
                async move {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    drop(witness);
                    "late"
                }
            }),
        );
        let mut svc = observed(router, false);
        let mut req = get_req("/slow");
        req.headers_mut()
            .insert(REQUEST_ID, HeaderValue::from_static("gone-client-1"));
        let mut future = Box::pin(tower::Service::call(&mut svc, req));
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(future.as_mut().poll(&mut cx).is_pending());
        drop(future);
        assert_eq!(seen.lock().unwrap().as_deref(), Some("gone-client-1"));
    }

    #[tokio::test]
    async fn a_service_that_panics_when_called_is_answered_with_a_500() {
        let svc = tower::service_fn(
            |_req: Request| -> std::future::Ready<Result<Response, Infallible>> {
                panic!("at call time")
            },
        );
        let layer = plain_layer(&Arc::new(Metrics::new()), Duration::from_millis(200), None);
        let res = layer.layer(svc).oneshot(get_req("/any")).await.unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(res.headers().contains_key(REQUEST_ID));
        assert_eq!(body_json(res).await["error"], "server_error");
    }

    #[tokio::test]
    async fn the_body_limit_reaches_the_extractors() {
        let router = Router::new().route(
            "/wait",
            axum::routing::post(|body: axum::body::Bytes| async move { body.len().to_string() }),
        );
        let metrics = Arc::new(Metrics::new());
        let svc = plain_layer(&metrics, Duration::from_secs(5), Some(16)).layer(router);
        let post = |n: usize| {
            Request::builder()
                .method("POST")
                .uri("/wait")
                .body(Body::from(vec![b'x'; n]))
                .unwrap()
        };
        let res = svc.clone().oneshot(post(16)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let res = svc.oneshot(post(17)).await.unwrap();
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn a_request_dropped_while_waiting_leaves_the_in_flight_gauge() {
        let router = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        );
        let metrics = Arc::new(Metrics::new());
        let mut svc = plain_layer(&metrics, Duration::from_secs(60), None).layer(router);
        let mut future = Box::pin(tower::Service::call(&mut svc, get_req("/slow")));
        assert_eq!(metrics.in_flight.get(), 1);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(future.as_mut().poll(&mut cx).is_pending());
        assert_eq!(metrics.in_flight.get(), 1);
        drop(future);
        assert_eq!(metrics.in_flight.get(), 0);
    }

    #[test]
    fn generated_request_ids_are_distinct_uuids() {
        let ids = RequestIds::new().unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = ids.next_id();
            let text = id.as_str();
            let parsed = uuid::Uuid::parse_str(text).unwrap();
            assert_eq!(parsed.get_version_num(), 4, "{text}");
            assert!(is_valid_request_id(text.as_bytes()));
            assert_eq!(id.to_header(), text);
            assert!(seen.insert(text.to_owned()), "repeated id {text}");
        }
        // Another process (another seed) starts elsewhere.
        let other = RequestIds::new().unwrap();
        assert!(!seen.contains(other.next_id().as_str()));
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
