//! Accepting connections: TCP, optionally TLS (rustls), each connection served by hyper
//! (HTTP/1.1 or HTTP/2, told apart by the connection's first bytes) on a task of its own,
//! and graceful shutdown with a deadline.
//!
//! This is hyper-util's server connection builder with a small accept loop, rather than
//! axum-server, for the request path:
//! - The client's address is a field of the connection's service and reaches the handlers
//!   through the request's task-local ([`crate::telemetry::current_peer`]). axum-server added
//!   it to every request as an extension, next to its own connection handle: two heap
//!   allocations per request, freed on whichever worker finished the request.
//! - Each connection waits for the stop signal on a channel of its own. axum-server's
//!   connections polled three shutdown futures on every wake-up, two of them behind a lock
//!   shared by every connection.
//!
//! Shutdown ([`Connections::drain`]): the accept loops stop, idle keep-alive connections
//! close at once, a connection with a request in flight closes after its response (HTTP/1.1
//! `Connection: close`; HTTP/2 GOAWAY, RFC 9113 §6.8), and what is still open at the deadline
//! is closed by [`Connections::abort_all`].
//!
//! Idle connections (`limits.idle_timeout`): a connection with no request in flight that
//! has started none for the idle timeout is asked to close (as at shutdown), and dropped a
//! second later if it has not. This reaps idle keep-alive connections and clients that
//! send their request head a byte at a time (slowloris), which would otherwise hold a
//! socket and a task for as long as they like. Body reads and handlers run under the
//! per-request timeout instead (`limits.request_timeout`, [`crate::telemetry`]).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot, watch};
use tokio::task::AbortHandle;
use tokio::time::{Instant, Sleep};

/// How long a client has to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the accept loop waits after an accept error (say, out of file descriptors)
/// before trying again, so a failing listener does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What answers the requests of a connection, told the client's address.
pub trait Serve: Send + Sync + 'static {
    /// The response future.
    type Future: Future<Output = Result<Response, Infallible>> + Send + 'static;

    /// Handles `req`, which came from `peer`.
    fn serve(&self, req: http::Request<Incoming>, peer: SocketAddr) -> Self::Future;
}

/// The TLS configuration new handshakes use. A certificate reload replaces it whole;
/// connections already established keep the one they started with.
#[derive(Clone, Debug)]
pub struct TlsConfig(Arc<RwLock<Arc<rustls::ServerConfig>>>);

impl TlsConfig {
    /// Handshakes use `config` until the next [`TlsConfig::replace`].
    #[must_use]
    pub fn new(config: Arc<rustls::ServerConfig>) -> Self {
        Self(Arc::new(RwLock::new(config)))
    }

    /// Handshakes from now on use `config`.
    pub fn replace(&self, config: Arc<rustls::ServerConfig>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = config;
    }

    /// The configuration in use.
    #[must_use]
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The open connections of a server (every listener of it), each with its stop signal and
/// its task, so shutdown can ask each to finish and, at the deadline, close what is left.
#[derive(Debug, Default)]
pub struct Connections {
    open: Mutex<Open>,
    /// Woken when the last connection closes after [`Connections::drain`].
    emptied: Notify,
}

#[derive(Debug, Default)]
struct Open {
    next_id: u64,
    by_id: HashMap<u64, Entry>,
    draining: bool,
}

#[derive(Debug)]
struct Entry {
    stop: Option<oneshot::Sender<()>>,
    task: Option<AbortHandle>,
}

/// A connection's place in [`Connections`]; dropping it (the connection's task ended, or
/// was aborted) removes the connection.
#[derive(Debug)]
struct Registration {
    connections: Arc<Connections>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut open = self.connections.lock();
        open.by_id.remove(&self.id);
        if open.draining && open.by_id.is_empty() {
            drop(open);
            self.connections.emptied.notify_waiters();
        }
    }
}

impl Connections {
    fn lock(&self) -> MutexGuard<'_, Open> {
        // The map stays consistent whatever panicked while holding the lock.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new connection's registration and stop signal; `None` once draining.
    fn register(self: &Arc<Self>) -> Option<(Registration, oneshot::Receiver<()>)> {
        let mut open = self.lock();
        if open.draining {
            return None;
        }
        let id = open.next_id;
        open.next_id += 1;
        let (tx, rx) = oneshot::channel();
        open.by_id.insert(
            id,
            Entry {
                stop: Some(tx),
                task: None,
            },
        );
        drop(open);
        Some((
            Registration {
                connections: Arc::clone(self),
                id,
            },
            rx,
        ))
    }

    /// Records the task serving connection `id` (if it has not already finished).
    fn set_task(&self, id: u64, task: AbortHandle) {
        if let Some(entry) = self.lock().by_id.get_mut(&id) {
            entry.task = Some(task);
        }
    }

    /// How many connections are open.
    #[must_use]
    pub fn count(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Refuses new connections from now on and asks every open one to finish: idle ones
    /// close at once, busy ones after the response they are working on.
    pub fn drain(&self) {
        let mut open = self.lock();
        open.draining = true;
        for entry in open.by_id.values_mut() {
            if let Some(stop) = entry.stop.take() {
                let _ = stop.send(());
            }
        }
    }

    /// Resolves once [`Connections::drain`] was called and every connection has closed.
    pub async fn closed(&self) {
        loop {
            let emptied = self.emptied.notified();
            tokio::pin!(emptied);
            // Registered before the check, so a close between the two is not missed.
            emptied.as_mut().enable();
            {
                let open = self.lock();
                if open.draining && open.by_id.is_empty() {
                    return;
                }
            }
            emptied.await;
        }
    }

    /// Closes every connection still open (the shutdown deadline passed).
    pub fn abort_all(&self) {
        let tasks: Vec<AbortHandle> = self
            .lock()
            .by_id
            .values_mut()
            .filter_map(|entry| entry.task.take())
            .collect();
        for task in tasks {
            task.abort();
        }
    }
}

/// How every connection of a listener is served.
struct Settings {
    http: auto::Builder<TokioExecutor>,
    idle_timeout: Duration,
}

impl Settings {
    /// `io` served by hyper with `service`, until it closes, `stop` fires or it is idle too
    /// long.
    fn serve<I, T>(
        &self,
        io: I,
        service: PerConnection<T>,
        stop: oneshot::Receiver<()>,
    ) -> Graceful<auto::Connection<'_, TokioIo<WatchedIo<I>>, PerConnection<T>, TokioExecutor>>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        T: Serve,
    {
        let activity = Arc::clone(&service.activity);
        let io = WatchedIo {
            io,
            activity: Arc::clone(&activity),
        };
        Graceful::new(
            self.http.serve_connection(TokioIo::new(io), service),
            stop,
            activity,
            self.idle_timeout,
        )
    }
}

/// hyper's connection settings: HTTP/1.1 and HTTP/2 told apart per connection, with a
/// timer for HTTP/2 keep-alive pings. No hyper header read timeout: it allocates a timer
/// for every request; slow request heads are cut by the idle timeout ([`Graceful`]) with
/// one timer per connection instead.
fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());
    builder
}

/// Accepts connections on `listener` (TLS handshakes with `tls` when given) and serves each
/// with `app` on a task of its own, until `stop` turns true or the connections are drained.
pub async fn accept_loop<T: Serve>(
    listener: TcpListener,
    tls: Option<TlsConfig>,
    app: Arc<T>,
    connections: Arc<Connections>,
    idle_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let settings = Arc::new(Settings {
        http: builder(),
        idle_timeout,
    });
    // Set while accepting fails: the first failure is a warning, the retries (every
    // `ACCEPT_BACKOFF`) are logged at debug until a connection is accepted again.
    let mut failing = false;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.wait_for(|stopped| *stopped) => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                if failing {
                    tracing::debug!(error = %e, "accepting a connection failed again");
                } else {
                    tracing::warn!(error = %e, "accepting a connection failed; retrying every 50 ms");
                    failing = true;
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        if failing {
            tracing::info!("accepting connections again");
            failing = false;
        }
        // Responses go out in one write; don't hold them for the client's ACK.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let Some((registration, stop_connection)) = connections.register() else {
            return;
        };
        let id = registration.id;
        let task = tokio::spawn(connection(
            stream,
            peer,
            tls.clone(),
            PerConnection {
                app: Arc::clone(&app),
                peer,
                activity: Arc::default(),
            },
            Arc::clone(&settings),
            registration,
            stop_connection,
        ));
        connections.set_task(id, task.abort_handle());
    }
}

/// Serves one connection until it closes, the client goes away, or it is stopped.
async fn connection<T: Serve>(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsConfig>,
    service: PerConnection<T>,
    settings: Arc<Settings>,
    registration: Registration,
    mut stop: oneshot::Receiver<()>,
) {
    let result = match tls {
        None => settings.serve(stream, service, stop).await,
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let stream = tokio::select! {
                biased;
                // Stopping: a connection still shaking hands has nothing in flight.
                _ = &mut stop => return,
                done = handshake => match done {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
            };
            settings.serve(stream, service, stop).await
        }
    };
    if let Err(e) = result {
        // A client that resets or sends garbage: its business, not an operator's.
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
    drop(registration);
}

/// The hyper service of one connection: the app and the client's address.
struct PerConnection<T> {
    app: Arc<T>,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

impl<T: Serve> hyper::service::Service<http::Request<Incoming>> for PerConnection<T> {
    type Response = http::Response<TrackedBody>;
    type Error = Infallible;
    type Future = Tracked<T::Future>;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        if req.version() == http::Version::HTTP_2 {
            self.activity.http2.store(true, Ordering::Relaxed);
        }
        Tracked {
            inner: self.app.serve(req, self.peer),
            in_flight: Some(InFlight::start(&self.activity)),
        }
    }
}

/// What a connection's requests are doing, for its idle timeout. One word, so that a
/// request costs one atomic add when it starts and one when it ends: the high 32 bits count
/// the requests started (HTTP/2: streams), wrapping; the low 32 bits count those in flight.
/// Next to it, what the socket wrapper ([`WatchedIo`]) saw of the writes.
#[derive(Debug, Default)]
struct Activity {
    requests: AtomicU64,
    /// The last write or flush was left pending.
    write_blocked: AtomicBool,
    /// A write or flush that had been left pending went through since the last tick took
    /// this flag: the client is slowly taking what it was sent.
    wrote: AtomicBool,
    /// The connection speaks HTTP/2 (it has had a request).
    http2: AtomicBool,
}

/// One request started, and in flight.
const STARTED: u64 = (1 << 32) | 1;

impl Activity {
    /// (requests started, requests in flight).
    fn read(&self) -> (u32, u32) {
        let word = self.requests.load(Ordering::Acquire);
        // The two halves of the word (truncation intended).
        ((word >> 32) as u32, word as u32)
    }

    /// The connection's last write or flush could not complete: hyper holds bytes the
    /// client has not taken yet (the tail of a response to a slow reader).
    fn write_blocked(&self) -> bool {
        self.write_blocked.load(Ordering::Relaxed)
    }

    /// Whether a write held up by the client went through since the last call: a response
    /// making its way to a slow reader keeps its connection from being idle, one the
    /// client has stopped taking does not. (Writes that never wait, such as an HTTP/2
    /// PING's answer, do not count: they are not a response being taken.)
    fn take_wrote(&self) -> bool {
        // A load first: no read-modify-write on a tick that has nothing to clear.
        self.wrote.load(Ordering::Relaxed) && self.wrote.swap(false, Ordering::Relaxed)
    }

    /// Notes the outcome of a write or flush (`wrote`: it took bytes).
    fn note_write<T>(&self, r: &Poll<std::io::Result<T>>, wrote: bool) {
        if wrote && self.write_blocked.load(Ordering::Relaxed) {
            self.wrote.store(true, Ordering::Relaxed);
        }
        self.write_blocked.store(r.is_pending(), Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A connection's socket (or TLS stream), noting in its [`Activity`] whether the last
    /// write or flush was left pending.
    struct WatchedIo<I> {
        #[pin]
        io: I,
        activity: Arc<Activity>,
    }
}

impl<I: tokio::io::AsyncRead> tokio::io::AsyncRead for WatchedIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<I: tokio::io::AsyncWrite> tokio::io::AsyncWrite for WatchedIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.io.poll_write(cx, buf);
        this.activity
            .note_write(&r, matches!(r, Poll::Ready(Ok(n)) if n > 0));
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.io.poll_write_vectored(cx, bufs);
        this.activity
            .note_write(&r, matches!(r, Poll::Ready(Ok(n)) if n > 0));
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let r = this.io.poll_flush(cx);
        // A TLS stream writes its buffered records here.
        this.activity
            .note_write(&r, matches!(r, Poll::Ready(Ok(()))));
        r
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

/// A request in flight on its connection, until its response has been handed to hyper
/// whole (the last frame of its body polled) or it is dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.requests.fetch_add(STARTED, Ordering::AcqRel);
        Self(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.requests.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// A response future that counts as in flight on its connection, and passes that on to
    /// its response's body.
    struct Tracked<F> {
        #[pin]
        inner: F,
        in_flight: Option<InFlight>,
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for Tracked<F> {
    type Output = Result<http::Response<TrackedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = match this.inner.poll(cx) {
            Poll::Ready(Ok(res)) => res,
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => return Poll::Pending,
        };
        let in_flight = this.in_flight.take();
        Poll::Ready(Ok(res.map(|inner| TrackedBody {
            inner,
            _in_flight: in_flight,
        })))
    }
}

/// A response body that keeps its request in flight until hyper has taken its last frame
/// (or dropped it): a response still being sent to a slow reader is not an idle
/// connection, for the idle timeout or at shutdown.
pub struct TrackedBody {
    inner: axum::body::Body,
    _in_flight: Option<InFlight>,
}

impl hyper::body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A connection that starts a graceful shutdown when its stop signal arrives, or when it
    /// has been idle for the idle timeout; one still open `IDLE_CLOSE_GRACE` after an idle
    /// shutdown began is dropped.
    struct Graceful<C> {
        #[pin]
        conn: C,
        stop: Option<oneshot::Receiver<()>>,
        activity: Arc<Activity>,
        // Ticks every half of the idle timeout, so no timer is reset per request. A tick is
        // idle when nothing was in flight at it or at the tick before, and no request
        // started in between: the connection had no request for that whole period. Two
        // idle ticks in a row mean at least the idle timeout without a request, and less
        // than 1.5 of it (the last one may have ended just after the tick before the
        // first). The tick after that comes `IDLE_CLOSE_GRACE` later.
        #[pin]
        tick: Sleep,
        period: Duration,
        // Requests started, as of the last tick.
        seen: u32,
        // A request was in flight at the last tick.
        was_busy: bool,
        idle_ticks: u8,
        // The timer was polled since its last reset, so it will wake the task.
        armed: bool,
        // The stop signal came to an HTTP/1.1 connection (or one without a request yet):
        // from then on each tick closes it if nothing is in flight and no write is pending
        // (what keeps it open is a request head that never finished).
        stopping: bool,
    }
}

/// Idle ticks after which an idle connection is asked to close, and after which it is
/// dropped.
const IDLE_TICKS_TO_CLOSE: u8 = 2;
const IDLE_TICKS_TO_DROP: u8 = IDLE_TICKS_TO_CLOSE + 1;

/// How long a connection asked to close for idleness has before it is dropped: enough for
/// HTTP/2's GOAWAY and its ping, while a request head that never ends is cut soon after the
/// idle timeout (at most half of it, for timeouts under 2 s).
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

impl<C> Graceful<C> {
    fn new(
        conn: C,
        stop: oneshot::Receiver<()>,
        activity: Arc<Activity>,
        idle_timeout: Duration,
    ) -> Self {
        let period = idle_timeout / 2;
        Self {
            conn,
            stop: Some(stop),
            activity,
            tick: tokio::time::sleep(period),
            period,
            seen: 0,
            was_busy: false,
            idle_ticks: 0,
            armed: false,
            stopping: false,
        }
    }
}

/// A connection that can be asked to finish what it is doing and close.
trait GracefulConnection: Future {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, T> GracefulConnection for auto::Connection<'_, I, PerConnection<T>, TokioExecutor>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    T: Serve,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        auto::Connection::graceful_shutdown(self);
    }
}

impl<C, E> Future for Graceful<C>
where
    C: GracefulConnection<Output = Result<(), E>>,
{
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        // A dropped sender (the connection was forgotten) stops it too.
        if let Some(stop) = this.stop.as_mut()
            && Pin::new(stop).poll(cx).is_ready()
        {
            *this.stop = None;
            this.conn.as_mut().graceful_shutdown();
            // hyper closes an HTTP/1.1 connection between requests at once, and one with a
            // request after its response; but one with part of a request head waits for
            // the rest, which a stalled client never sends, holding the whole shutdown to
            // its deadline. Look again shortly.
            //
            // Not for HTTP/2: h2 takes a response's body whole and sends it as the
            // client's flow-control window allows (RFC 9113 §6.9), with nothing in flight
            // and no write pending here. Its GOAWAY (§6.8) closes the connection once its
            // streams are done; the idle timeout and the deadline still apply.
            if !this.activity.http2.load(Ordering::Relaxed) {
                *this.stopping = true;
                *this.armed = false;
                this.tick
                    .as_mut()
                    .reset(Instant::now() + IDLE_CLOSE_GRACE.min(*this.period));
            }
        }
        // Polling the timer registers the task's waker again and spends coop budget; on
        // every wake-up of the connection that was about 80 instructions per request
        // (callgrind, docs/BENCHMARKS.md). So it is polled once per tick, to arm it; until it fires,
        // `is_elapsed` (one load) is enough, and the task is woken when it does.
        loop {
            if !*this.armed {
                // With the task's coop budget spent, the poll registers nothing but wakes
                // the task again: arm it then. Otherwise a pending poll has registered the
                // waker, and a ready one means it fired already (`is_elapsed` says so).
                let had_budget = tokio::task::coop::has_budget_remaining();
                let _ = this.tick.as_mut().poll(cx);
                *this.armed = had_budget;
            }
            if !this.tick.is_elapsed() {
                break;
            }
            *this.armed = false;
            let (started, in_flight) = this.activity.read();
            if *this.stopping {
                if in_flight == 0 && !this.activity.write_blocked() {
                    // Nothing in flight, nothing left to send, and still open after the
                    // stop: a request head that never finished. Dropping the connection
                    // closes the socket.
                    tracing::debug!(
                        "closing a connection with an unfinished request head at shutdown"
                    );
                    return Poll::Ready(Ok(()));
                }
                this.tick
                    .as_mut()
                    .reset(Instant::now() + IDLE_CLOSE_GRACE.min(*this.period));
                continue;
            }
            // A response still being taken by a slow reader is activity too: hyper may
            // have its whole body (one frame) and be writing it out long after.
            let active = in_flight > 0
                || *this.was_busy
                || started != *this.seen
                || this.activity.take_wrote();
            *this.was_busy = in_flight > 0;
            *this.seen = started;
            if active {
                *this.idle_ticks = 0;
            } else {
                *this.idle_ticks = this.idle_ticks.saturating_add(1);
                if *this.idle_ticks == IDLE_TICKS_TO_CLOSE {
                    // HTTP/1.1 closes at once between requests; HTTP/2 sends GOAWAY.
                    this.conn.as_mut().graceful_shutdown();
                } else if *this.idle_ticks >= IDLE_TICKS_TO_DROP {
                    // Still open: a request head that never finished. Dropping the
                    // connection closes the socket; nothing was in flight.
                    tracing::debug!("closing a connection idle past `limits.idle_timeout`");
                    return Poll::Ready(Ok(()));
                }
            }
            let wait = if *this.idle_ticks == IDLE_TICKS_TO_CLOSE {
                IDLE_CLOSE_GRACE.min(*this.period)
            } else {
                *this.period
            };
            this.tick.as_mut().reset(Instant::now() + wait);
        }
        this.conn.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::AtomicBool;
    use std::time::Instant as StdInstant;

    use axum::body::Body;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// Answers at once, except `/slow`, which takes 2.5 idle timeouts and records whether
    /// it was stopped before it finished.
    #[derive(Default)]
    struct App {
        slow_stopped: Arc<AtomicBool>,
    }

    const IDLE: Duration = Duration::from_secs(1);
    /// The body of `/big`: more than loopback's socket buffers hold.
    const BIG: usize = 32 << 20;

    /// Sets its flag when dropped before it is marked finished.
    struct Unfinished(Arc<AtomicBool>, bool);

    impl Drop for Unfinished {
        fn drop(&mut self) {
            if !self.1 {
                self.0.store(true, Ordering::SeqCst);
            }
        }
    }

    impl Serve for App {
        type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

        fn serve(&self, req: http::Request<Incoming>, _peer: SocketAddr) -> Self::Future {
            let stopped = Arc::clone(&self.slow_stopped);
            Box::pin(async move {
                if req.uri().path() == "/big" {
                    return Ok(Response::new(Body::from(vec![b'x'; BIG])));
                }
                if req.uri().path() == "/slow" {
                    let mut running = Unfinished(stopped, false);
                    tokio::time::sleep(IDLE * 5 / 2).await;
                    running.1 = true;
                }
                Ok(Response::new(Body::from("ok")))
            })
        }
    }

    async fn start() -> (SocketAddr, Arc<Connections>, watch::Sender<bool>) {
        start_app(App::default()).await
    }

    async fn start_app(app: App) -> (SocketAddr, Arc<Connections>, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(Connections::default());
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(accept_loop(
            listener,
            None,
            Arc::new(app),
            Arc::clone(&connections),
            IDLE,
            stop_rx,
        ));
        (addr, connections, stop_tx)
    }

    /// Sends a request for `path` on `conn` and reads its (short) response.
    async fn request(conn: &mut TcpStream, path: &str) -> String {
        conn.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(IDLE * 5, conn.read(&mut buf))
            .await
            .expect("answered")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// How long until the server closes `conn` (reads return 0 or fail), at most 5 s.
    async fn closed_after(conn: &mut TcpStream, since: StdInstant) -> Duration {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(IDLE * 5, conn.read(&mut buf))
            .await
            .expect("the server closed the connection");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        since.elapsed()
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
        let (addr, connections, _stop) = start().await;
        let mut conn = TcpStream::connect(addr).await.unwrap();
        assert!(request(&mut conn, "/").await.starts_with("HTTP/1.1 200"));
        let took = closed_after(&mut conn, StdInstant::now()).await;
        assert!(took >= IDLE, "closed after {took:?}");
        // Asked to close between 1 and 1.5 idle timeouts after the request; HTTP/1.1
        // closes at once.
        assert!(took <= IDLE * 2, "closed after {took:?}");
        // The registration went with it.
        for _ in 0..100 {
            if connections.count() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(connections.count(), 0);
    }

    #[tokio::test]
    async fn a_request_head_sent_a_byte_at_a_time_is_cut_off() {
        let (addr, _connections, _stop) = start().await;
        let conn = TcpStream::connect(addr).await.unwrap();
        let (mut read, mut write) = conn.into_split();
        let started = StdInstant::now();
        // Header bytes forever, one every 100 ms: the head never ends.
        let writer = tokio::spawn(async move {
            write.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n").await?;
            loop {
                write.write_all(b"x").await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            #[allow(unreachable_code)]
            Ok::<(), std::io::Error>(())
        });
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(IDLE * 5, read.read(&mut buf))
            .await
            .expect("the slow client was cut off");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        let took = started.elapsed();
        assert!(took >= IDLE, "cut off after {took:?}");
        // One idle timeout for a new connection, then the grace (here half a timeout).
        assert!(took <= IDLE * 5 / 2, "cut off after {took:?}");
        writer.abort();
    }

    #[tokio::test]
    async fn a_connection_in_use_or_waiting_for_a_slow_answer_stays_open() {
        let (addr, _connections, _stop) = start().await;
        let mut busy = TcpStream::connect(addr).await.unwrap();
        // A request every 0.4 idle timeouts, for 3 idle timeouts: one connection throughout.
        for _ in 0..8 {
            assert!(request(&mut busy, "/").await.starts_with("HTTP/1.1 200"));
            tokio::time::sleep(IDLE * 2 / 5).await;
        }
        // A handler that takes 2.5 idle timeouts is answered on its connection.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        assert!(
            request(&mut slow, "/slow")
                .await
                .starts_with("HTTP/1.1 200")
        );
        // And then that connection is idle like any other, counted from the answer: the
        // handler ends near a tick that saw it in flight, so a tick that only looked at
        // what is in flight now would close it about half a timeout later.
        let took = closed_after(&mut slow, StdInstant::now()).await;
        assert!(took >= IDLE, "closed after {took:?}");
    }

    #[tokio::test]
    async fn a_half_sent_request_head_does_not_hold_shutdown() {
        let (addr, connections, stop) = start().await;
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let since = StdInstant::now();
        let _ = stop.send(true);
        connections.drain();
        tokio::time::timeout(IDLE * 2, connections.closed())
            .await
            .expect("shutdown did not wait for the rest of the head");
        let took = closed_after(&mut conn, since).await;
        assert!(took <= IDLE * 2, "closed after {took:?}");
    }

    #[tokio::test]
    async fn a_response_still_being_sent_at_shutdown_is_sent_whole() {
        let (addr, connections, stop) = start().await;
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut received = vec![0u8; 64 << 10];
        let mut total = conn.read(&mut received).await.unwrap();
        // The client stops reading with most of the body unsent; shutdown begins.
        let _ = stop.send(true);
        connections.drain();
        tokio::time::sleep(IDLE * 2).await;
        loop {
            let n = tokio::time::timeout(IDLE * 5, conn.read(&mut received))
                .await
                .expect("the rest of the body came")
                .unwrap();
            if n == 0 {
                break;
            }
            total += n;
        }
        assert!(total > BIG, "{total} bytes: the body was cut");
        tokio::time::timeout(IDLE, connections.closed())
            .await
            .expect("closed once sent");
    }

    #[tokio::test]
    async fn a_slow_reader_taking_longer_than_the_idle_timeout_gets_the_whole_response() {
        let (addr, _connections, _stop) = start().await;
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        // A reader that keeps taking the response, 256 KiB every 25 ms: more than three
        // idle timeouts for the whole body, never idle.
        let started = StdInstant::now();
        let mut received = vec![0u8; 256 << 10];
        let mut total = 0;
        while total <= BIG {
            let n = tokio::time::timeout(IDLE * 5, conn.read(&mut received))
                .await
                .expect("the body kept coming")
                .unwrap();
            if n == 0 {
                break;
            }
            total += n;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(
            total > BIG,
            "{total} bytes after {:?}: the body was cut",
            started.elapsed()
        );
        assert!(
            started.elapsed() > IDLE * 3,
            "read too fast to test the timeout"
        );
    }

    #[tokio::test]
    async fn a_reader_that_stops_taking_its_response_is_still_cut_at_the_idle_timeout() {
        let (addr, _connections, _stop) = start().await;
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        // Reads nothing: the server's write stays pending, without progress.
        tokio::time::sleep(IDLE * 3).await;
        let mut received = vec![0u8; 1 << 20];
        let mut total = 0;
        loop {
            match tokio::time::timeout(IDLE * 5, conn.read(&mut received))
                .await
                .expect("the server closed the connection")
            {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
        assert!(
            total < BIG,
            "{total} bytes: the stalled reader was waited for"
        );
    }

    #[tokio::test]
    async fn an_http2_response_waiting_for_flow_control_at_shutdown_is_sent_whole() {
        // hyper hands an HTTP/2 stream's body to h2 whole as soon as the stream has any
        // send window (RFC 9113 §6.9); the rest waits in h2 for the client's WINDOW_UPDATE,
        // with nothing in flight and no write pending.
        let (addr, connections, stop) = start().await;
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        let mut res = client
            .get(format!("http://{addr}/big"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.version(), http::Version::HTTP_2);
        let mut total = res.chunk().await.unwrap().map_or(0, |c| c.len());
        // The client stops reading (and so stops opening its window); shutdown begins. The
        // pause is longer than the check after the stop (half an idle timeout here) and
        // shorter than the idle timeout.
        let _ = stop.send(true);
        connections.drain();
        tokio::time::sleep(IDLE * 4 / 5).await;
        while let Some(chunk) = tokio::time::timeout(IDLE * 5, res.chunk())
            .await
            .expect("the rest of the body came")
            .expect("the body was cut")
        {
            total += chunk.len();
        }
        assert_eq!(total, BIG);
        tokio::time::timeout(IDLE * 2, connections.closed())
            .await
            .expect("closed once sent");
    }

    #[tokio::test]
    async fn http2_requests_are_waited_for_at_shutdown_and_stopped_at_the_deadline() {
        // hyper runs each HTTP/2 stream on a task of its own; closing the connection resets
        // its streams, and each stream's task then drops its handler.
        let app = App::default();
        let stopped = Arc::clone(&app.slow_stopped);
        let (addr, connections, stop) = start_app(app).await;
        let client = reqwest::Client::builder()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        let res = client.get(format!("http://{addr}/")).send().await.unwrap();
        assert_eq!(res.version(), http::Version::HTTP_2);
        let slow = tokio::spawn(client.get(format!("http://{addr}/slow")).send());
        tokio::time::sleep(Duration::from_millis(300)).await;

        let _ = stop.send(true);
        connections.drain();
        // The stream is still running: shutdown waits for it.
        assert!(
            tokio::time::timeout(Duration::from_millis(500), connections.closed())
                .await
                .is_err()
        );
        assert!(!stopped.load(Ordering::SeqCst));
        // The deadline: the connection is closed and the request's task stopped, not left
        // running on the runtime (it would finish 2 s later).
        connections.abort_all();
        tokio::time::timeout(Duration::from_secs(1), connections.closed())
            .await
            .expect("every connection closed");
        for _ in 0..100 {
            if stopped.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(stopped.load(Ordering::SeqCst), "the handler was stopped");
        assert!(slow.await.unwrap().is_err());
    }
}
