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

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
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

/// A bare router (the metrics listener): the client's address is not used.
impl Serve for axum::Router {
    type Future = axum::routing::future::RouteFuture<Infallible>;

    fn serve(&self, req: http::Request<Incoming>, _peer: SocketAddr) -> Self::Future {
        // A router is always ready (its `poll_ready` returns `Ready` unconditionally).
        tower::Service::call(&mut self.clone(), req)
    }
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

/// hyper's connection settings: HTTP/1.1 and HTTP/2 told apart per connection, with a
/// timer for HTTP/2 keep-alive pings. No header read timeout: hyper's allocates a timer
/// for every request.
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
    mut stop: watch::Receiver<bool>,
) {
    let builder = Arc::new(builder());
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
            },
            Arc::clone(&builder),
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
    builder: Arc<auto::Builder<TokioExecutor>>,
    registration: Registration,
    mut stop: oneshot::Receiver<()>,
) {
    let result = match tls {
        None => {
            Graceful {
                conn: builder.serve_connection(TokioIo::new(stream), service),
                stop: Some(stop),
            }
            .await
        }
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
            Graceful {
                conn: builder.serve_connection(TokioIo::new(stream), service),
                stop: Some(stop),
            }
            .await
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
}

impl<T: Serve> hyper::service::Service<http::Request<Incoming>> for PerConnection<T> {
    type Response = Response;
    type Error = Infallible;
    type Future = T::Future;

    fn call(&self, req: http::Request<Incoming>) -> Self::Future {
        self.app.serve(req, self.peer)
    }
}

pin_project_lite::pin_project! {
    /// A connection that starts a graceful shutdown when its stop signal arrives.
    struct Graceful<C> {
        #[pin]
        conn: C,
        stop: Option<oneshot::Receiver<()>>,
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

impl<C: GracefulConnection> Future for Graceful<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        // A dropped sender (the connection was forgotten) stops it too.
        if let Some(stop) = this.stop.as_mut()
            && Pin::new(stop).poll(cx).is_ready()
        {
            *this.stop = None;
            this.conn.as_mut().graceful_shutdown();
        }
        this.conn.poll(cx)
    }
}
