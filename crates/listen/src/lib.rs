//! lockstep-listen: the one HTTP accept loop of the bundle server and the agent.
//!
//! Owns: accepting TCP connections (optionally TLS, handshake bounded by the header
//! timeout), serving an axum [`Router`] on each with hyper (HTTP/1.1, and HTTP/2 with
//! prior knowledge), and the limits every listener needs against slow or idle clients
//! (security review finding 4):
//! - **header read timeout** ([`Limits::header_read_timeout`], default 10 s): a
//!   connection that has not sent a whole request head this long after it opened, or
//!   after the first byte of its next request, is closed;
//! - **idle timeout** ([`Limits::idle_timeout`], default 120 s): a connection with no
//!   request in flight and no bytes moving is closed. A request in flight (a long poll
//!   held for `long_poll.max_wait_seconds`, a slow decision) is never cut by it;
//! - **connection limit** ([`Limits::max_connections`], default 10,000): beyond it no
//!   connection is accepted (they wait in the kernel's backlog) until one closes;
//! - **graceful shutdown**: no new connections, open ones finish their requests, and
//!   whatever is still open after [`Limits::shutdown_grace`] is dropped.
//!
//! Why a crate of its own: the server and the agent both need it, the agent must not
//! depend on the server, and `lockstep-sync` must not serve HTTP. hyper's own
//! `header_read_timeout` is not used: it also runs while a keep-alive connection waits
//! for its next request, so it would make the idle timeout the header timeout.
//!
//! Must not: know routes, tokens or bundles.
#![forbid(unsafe_code)]

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tower_service::Service;

/// What a listener tolerates from its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time allowed for a request head: from accept (and TLS handshake) for the first
    /// request, from its first byte for later ones on a keep-alive connection.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight and no bytes moving for this long is
    /// closed (keep-alive idle time; a client that stopped reading a response).
    pub idle_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// How long shutdown waits for open connections before dropping them.
    pub shutdown_grace: Duration,
}

pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

/// Why limits were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitsError {
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
}

impl Limits {
    /// Refuses zero timeouts and a zero connection limit (which would serve nothing).
    pub fn validate(&self) -> Result<(), LimitsError> {
        if self.header_read_timeout.is_zero() {
            return Err(LimitsError::Zero("header_read_timeout"));
        }
        if self.idle_timeout.is_zero() {
            return Err(LimitsError::Zero("idle_timeout"));
        }
        if self.max_connections == 0 {
            return Err(LimitsError::Zero("max_connections"));
        }
        Ok(())
    }
}

/// Serves `router` on `listener` (TLS when `tls` is given) until `shutdown` completes,
/// then shuts down gracefully. Handlers may extract `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    // Our own header timeout (see the crate doc); hyper's would also cut idle keep-alive.
    builder.http1().header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut conns = JoinSet::new();
    loop {
        // The connection limit: wait for a slot before accepting (excess connections
        // stay in the kernel's backlog, unserved).
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (tcp, remote) = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while conns.try_join_next().is_some() {}
        let _ = tcp.set_nodelay(true);
        let conn = Conn {
            builder: builder.clone(),
            router: router.clone(),
            limits,
            stop: stop_rx.clone(),
            remote,
        };
        let tls = tls.clone();
        conns.spawn(async move {
            let _permit = permit;
            conn.run(tcp, tls).await;
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!(
            open = conns.len(),
            "connections still open after the shutdown grace period: dropped"
        );
        conns.abort_all();
        while conns.join_next().await.is_some() {}
    }
    Ok(())
}

/// Activity of one connection, shared by its IO wrapper, its service and its watchdog.
struct Activity {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last byte read or written.
    last_io_ms: AtomicU64,
    /// Milliseconds after `epoch` when the request head being read began; `NONE` while
    /// no head is pending.
    head_since_ms: AtomicU64,
    in_flight: AtomicUsize,
    changed: Notify,
}

const NONE: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        Activity {
            epoch: Instant::now(),
            last_io_ms: AtomicU64::new(0),
            // A new connection must send its first head within the header timeout.
            head_since_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            changed: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    fn on_read(&self) {
        let now = self.now_ms();
        self.last_io_ms.store(now, Ordering::Relaxed);
        // Bytes while nothing is in flight begin the next request head.
        if self.in_flight.load(Ordering::Acquire) == 0
            && self
                .head_since_ms
                .compare_exchange(NONE, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    fn on_write(&self) {
        self.last_io_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn begin_request(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since_ms.store(NONE, Ordering::Release);
        self.changed.notify_one();
    }

    fn end_request(&self) {
        self.last_io_ms.store(self.now_ms(), Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.changed.notify_one();
    }

    /// What the watchdog should do now, or when to look again.
    fn check(&self, limits: &Limits) -> Verdict {
        let now = Instant::now();
        let head = self.head_since_ms.load(Ordering::Acquire);
        if head != NONE {
            let deadline = self.at(head) + limits.header_read_timeout;
            return if now >= deadline {
                Verdict::HeaderTimeout
            } else {
                Verdict::Until(deadline)
            };
        }
        if self.in_flight.load(Ordering::Acquire) > 0 {
            // A request in flight is never idle; a change wakes the watchdog.
            return Verdict::Until(now + limits.idle_timeout);
        }
        let deadline = self.at(self.last_io_ms.load(Ordering::Relaxed)) + limits.idle_timeout;
        if now >= deadline {
            Verdict::Idle
        } else {
            Verdict::Until(deadline)
        }
    }
}

enum Verdict {
    HeaderTimeout,
    Idle,
    Until(Instant),
}

/// Counts a request in flight until its response head is ready.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.end_request();
    }
}

/// The connection's IO, recording activity.
struct Tracked<I> {
    io: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.on_read();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.on_write();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.on_write();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

struct Conn {
    builder: Arc<hyper_util::server::conn::auto::Builder<TokioExecutor>>,
    router: Router,
    limits: Limits,
    stop: watch::Receiver<bool>,
    remote: SocketAddr,
}

impl Conn {
    async fn run(self, tcp: TcpStream, tls: Option<tokio_rustls::TlsAcceptor>) {
        let activity = Arc::new(Activity::new());
        match tls {
            None => {
                self.serve(
                    Tracked {
                        io: tcp,
                        activity: activity.clone(),
                    },
                    activity,
                )
                .await;
            }
            Some(acceptor) => {
                // The handshake counts against the header timeout.
                let accepted =
                    tokio::time::timeout(self.limits.header_read_timeout, acceptor.accept(tcp))
                        .await;
                match accepted {
                    Ok(Ok(stream)) => {
                        self.serve(
                            Tracked {
                                io: stream,
                                activity: activity.clone(),
                            },
                            activity,
                        )
                        .await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(remote = %self.remote, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        tracing::debug!(remote = %self.remote, "TLS handshake timed out");
                    }
                }
            }
        }
    }

    async fn serve<I>(self, io: Tracked<I>, activity: Arc<Activity>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Conn {
            builder,
            router,
            limits,
            mut stop,
            remote,
        } = self;
        let act = activity.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            act.begin_request();
            let guard = InFlight(act.clone());
            req.extensions_mut().insert(ConnectInfo(remote));
            let mut router = router.clone();
            async move {
                let _guard = guard;
                router.call(req).await
            }
        });
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
        let mut conn = std::pin::pin!(conn);
        let mut closing = false;
        loop {
            let wake = match activity.check(&limits) {
                Verdict::HeaderTimeout => {
                    tracing::debug!(%remote, "request head not received within the header read timeout: closing");
                    return;
                }
                Verdict::Idle => {
                    // Nothing in flight and nothing moving: dropping it just closes it.
                    tracing::trace!(%remote, "idle connection: closing");
                    return;
                }
                Verdict::Until(t) => t,
            };
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::trace!(%remote, error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = activity.changed.notified() => {}
                () = tokio::time::sleep_until(wake.into()) => {}
                r = stop.wait_for(|v| *v), if !closing => {
                    let _ = r;
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}
