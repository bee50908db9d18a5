//! The listener: TLS accept, HTTP/1.1 and HTTP/2 (ALPN), limits and graceful shutdown.
//!
//! Limits: a cap on concurrent connections (further ones wait in the listen backlog),
//! a TLS handshake and header read timeout (slowloris), the same period as an idle
//! timeout (an idle connection holds a slot: THREATS H16; [`ServerIo`]), a header size
//! cap, and in the handlers a body size and body read timeout, and a per-connection
//! request rate (requests beyond it are paced: [`Pacer`]). Shutdown stops accepting,
//! closes every connection gracefully (HTTP/2: GOAWAY) and waits for their requests in
//! flight (up to a grace period). A connection that has not sent its first bytes yet
//! when the stop comes may have its request on the way (it was accepted just before):
//! it is given until [`NEW_CONNECTION_GRACE`] after its accept for them, as Go's
//! `net/http` does with new connections, then closed gracefully like the others.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

use crate::app::{handle, App, Conn};
use crate::config::LimitsConfig;

/// How long in-flight requests may take to finish on shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// On shutdown, how long after its accept a connection that has sent nothing yet may
/// still send its first request (which is then answered); a silent one is closed then.
pub const NEW_CONNECTION_GRACE: Duration = Duration::from_secs(2);

/// How much a lingering close reads and discards at most, and for how long.
const LINGER_BYTES: usize = 1024 * 1024;
const LINGER_TIME: Duration = Duration::from_secs(2);

/// The connection's stream, with two additions hyper does not make:
///
/// - an idle timeout (THREATS H16): a connection is idle when no byte has arrived for a
///   whole period while none of its requests is being answered. hyper's header read
///   timeout starts only once HTTP/1.1 or HTTP/2 has been detected from the first bytes,
///   and HTTP/2 has no idle timeout at all, so a TLS connection that never sends a
///   request, or an HTTP/2 connection past its preface or its last request, would hold
///   its slot forever. A connection idle before its first byte fails its read with
///   `TimedOut`; one that has spoken is asked to close gracefully (`idle_signal` is notified:
///   HTTP/2 then sends GOAWAY, RFC 9113 §9.1, HTTP/1.1 closes), and if it is still idle a
///   period later its read fails. The check runs when the period's timer fires, not per
///   read: a connection is closed between one and three periods after its last byte.
/// - a lingering close: when the server closes first (a 413 answered before the body
///   was read, H1), closing a socket with unread data makes the kernel send a reset,
///   which can destroy the response before the client has read it. So shutdown stops
///   writing first (TLS close_notify and FIN), then reads and discards what the client
///   still sends until it closes, up to [`LINGER_BYTES`] and [`LINGER_TIME`].
struct ServerIo<T> {
    inner: T,
    /// The idle period and its timer.
    idle: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
    /// Whether a byte arrived since the timer was armed.
    read_since: bool,
    /// Whether any byte ever arrived (then the protocol is there to close gracefully).
    spoken: bool,
    /// Told once, when the first bytes arrive (shutdown waits for them a moment).
    first_bytes: Arc<tokio::sync::Notify>,
    /// The connection's requests being answered (counted by its service).
    in_flight: Arc<std::sync::atomic::AtomicUsize>,
    /// Told once when the connection has been idle a period: close it gracefully.
    idle_signal: Arc<tokio::sync::Notify>,
    signalled: bool,
    linger: Option<Linger>,
}

struct Linger {
    until: Pin<Box<tokio::time::Sleep>>,
    left: usize,
}

impl<T> ServerIo<T> {
    fn new(
        inner: T,
        idle: Duration,
        in_flight: Arc<std::sync::atomic::AtomicUsize>,
        idle_signal: Arc<tokio::sync::Notify>,
        first_bytes: Arc<tokio::sync::Notify>,
    ) -> Self {
        ServerIo {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
            read_since: false,
            spoken: false,
            first_bytes,
            in_flight,
            idle_signal,
            signalled: false,
            linger: None,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ServerIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    this.read_since = true;
                    if !this.spoken {
                        this.spoken = true;
                        this.first_bytes.notify_one();
                    }
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                while this.deadline.as_mut().poll(cx).is_ready() {
                    let busy = this.in_flight.load(std::sync::atomic::Ordering::Relaxed) > 0;
                    if !this.read_since && !busy {
                        if !this.spoken || this.signalled {
                            return Poll::Ready(Err(std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "idle connection",
                            )));
                        }
                        // Idle after speaking: a graceful close first, then a period to
                        // carry it out.
                        this.signalled = true;
                        this.idle_signal.notify_one();
                    }
                    // Active within the period, answering, or closing: another period
                    // (the loop polls the re-armed timer, so that it will wake this read).
                    this.read_since = false;
                    let next = tokio::time::Instant::now() + this.idle;
                    this.deadline.as_mut().reset(next);
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ServerIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.linger.is_none() {
            std::task::ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            this.linger = Some(Linger {
                until: Box::pin(tokio::time::sleep(LINGER_TIME)),
                left: LINGER_BYTES,
            });
        }
        let Some(linger) = this.linger.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let mut scratch = [0u8; 8192];
        loop {
            if linger.left == 0 || linger.until.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => {
                    linger.left = linger.left.saturating_sub(buf.filled().len());
                }
                // The client closed, or the connection failed: nothing left to wait for.
                Poll::Ready(_) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// One request of a connection being answered, counted until it is dropped (also when
/// the request is cancelled).
struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

impl InFlight {
    fn enter(count: &Arc<std::sync::atomic::AtomicUsize>) -> InFlight {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        InFlight(count.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A connection's request rate limit (`[limits] requests_per_second_per_connection`): a
/// generic cell rate algorithm (governor) with a burst. A request over the rate waits
/// until the connection is back within it, then is served: pacing, not refusal, so a
/// client that bursts is slowed rather than failed. What bounds the waiting is the
/// connection itself: HTTP/1.1 has one request in flight, HTTP/2 at most
/// `max_concurrent_streams` (256), so a flooding connection holds at most that many
/// sleeping requests (a timer each, no CPU) and gets no more than its rate of the
/// server's work, leaving the rest to other clients (THREATS §4.5 abuse under load).
struct Pacer(governor::DefaultDirectRateLimiter);

impl Pacer {
    /// Each connection's quota; `None` when the limit is off (rate 0).
    fn quota(limits: &LimitsConfig) -> Option<governor::Quota> {
        let rate = std::num::NonZeroU32::new(limits.requests_per_second_per_connection)?;
        let burst = std::num::NonZeroU32::new(limits.request_burst_per_connection).unwrap_or(rate);
        Some(governor::Quota::per_second(rate).allow_burst(burst))
    }

    fn new(quota: governor::Quota) -> Pacer {
        Pacer(governor::RateLimiter::direct(quota))
    }

    /// Wait until the connection may make one more request; `true` when it had to wait.
    async fn admit(&self) -> bool {
        use governor::clock::Clock as _;
        let mut waited = false;
        while let Err(not_until) = self.0.check() {
            waited = true;
            let now = governor::clock::DefaultClock::default().now();
            tokio::time::sleep(not_until.wait_time_from(now)).await;
        }
        waited
    }
}

/// Serve `listener` until `shutdown` resolves, then drain.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Arc<App>,
    limits: LimitsConfig,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    // CIBA requests past their expiry, for as long as the server serves.
    let sweeper = crate::app::spawn_ciba_sweeper(app.clone());
    // Other nodes' cache invalidations, for as long as the server serves.
    let coherence = crate::cluster::start(&app);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let header_timeout = Duration::from_millis(limits.header_read_timeout_ms);
    let quota = Pacer::quota(&limits);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    let builder = Arc::new(builder);
    // Shutdown: each connection is told to close gracefully; the drain waits for their
    // connection permits to come back.
    let (stopping, stop) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (tcp, remote) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let builder = builder.clone();
        let mut stop = stop.clone();
        let accepted = tokio::time::Instant::now();
        tokio::spawn(async move {
            let _permit = permit;
            let tls = match tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "tls handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "tls handshake timeout");
                    return;
                }
            };
            let peer_chain = tls
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| Arc::new(c.iter().map(|d| d.clone().into_owned()).collect()));
            let conn = Arc::new(Conn::new(remote, peer_chain));
            let pacer = quota.map(|q| Arc::new(Pacer::new(q)));
            let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let answering = in_flight.clone();
            let svc = service_fn(move |req| {
                let app = app.clone();
                let conn = conn.clone();
                let pacer = pacer.clone();
                let busy = InFlight::enter(&answering);
                async move {
                    let _busy = busy;
                    if let Some(p) = pacer {
                        if p.admit().await {
                            app.metrics.paced();
                        }
                    }
                    Ok::<_, std::convert::Infallible>(handle(app, conn, req).await)
                }
            });
            // Idle for a header timeout: closed (THREATS H16).
            let idle = Arc::new(tokio::sync::Notify::new());
            let first_bytes = Arc::new(tokio::sync::Notify::new());
            let io = ServerIo::new(
                tls,
                header_timeout,
                in_flight,
                idle.clone(),
                first_bytes.clone(),
            );
            let c = builder.serve_connection(TokioIo::new(io), svc);
            let mut c = std::pin::pin!(c);
            let mut closing = false;
            // Once the stop has come: the connection closes gracefully as soon as it has
            // spoken (at once for one that already had), or when its new-connection grace
            // is over (a silent one; closing before hyper has read its first bytes drops
            // the connection, and with it a request on the way).
            let mut stopped = false;
            let grace = tokio::time::sleep_until(accepted + NEW_CONNECTION_GRACE);
            let mut grace = std::pin::pin!(grace);
            loop {
                // Whether to close gracefully now: in-flight requests are finished,
                // HTTP/2 says GOAWAY first.
                let close = tokio::select! {
                    r = c.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(%remote, error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    () = idle.notified(), if !closing => true,
                    _ = stop.wait_for(|s| *s), if !stopped => {
                        stopped = true;
                        false
                    }
                    () = first_bytes.notified(), if stopped && !closing => true,
                    () = &mut grace, if stopped && !closing => true,
                };
                if close {
                    closing = true;
                    c.as_mut().graceful_shutdown();
                }
            }
        });
    }
    drop(listener);
    sweeper.abort();
    drop(coherence);
    let _ = stopping.send(true);
    let every = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    tokio::select! {
        _ = permits.acquire_many(every) => tracing::info!("all connections closed"),
        () = tokio::time::sleep(SHUTDOWN_GRACE) => tracing::warn!("shutdown grace period over; closing"),
    }
}

/// A running server, for tests and embedding: its address and a handle to stop it.
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Start serving on `listener` in a task.
    pub fn spawn(
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        app: Arc<App>,
        limits: LimitsConfig,
    ) -> std::io::Result<Running> {
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, tls, app, limits, async move {
            let _ = rx.await;
        }));
        Ok(Running {
            addr,
            stop: Some(tx),
            task,
        })
    }

    /// Stop accepting, drain, and wait for the server task.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    const IDLE: Duration = Duration::from_millis(100);

    struct Pipe {
        io: ServerIo<tokio::io::DuplexStream>,
        client: tokio::io::DuplexStream,
        in_flight: Arc<AtomicUsize>,
        idle: Arc<tokio::sync::Notify>,
        first_bytes: Arc<tokio::sync::Notify>,
    }

    /// A server-side stream over an in-memory pipe, and the client's end.
    fn pipe() -> Pipe {
        let (server, client) = tokio::io::duplex(1024);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let idle = Arc::new(tokio::sync::Notify::new());
        let first_bytes = Arc::new(tokio::sync::Notify::new());
        Pipe {
            io: ServerIo::new(
                server,
                IDLE,
                in_flight.clone(),
                idle.clone(),
                first_bytes.clone(),
            ),
            client,
            in_flight,
            idle,
            first_bytes,
        }
    }

    async fn read(
        io: &mut ServerIo<tokio::io::DuplexStream>,
        within: Duration,
    ) -> Option<std::io::Result<usize>> {
        let mut buf = [0u8; 64];
        tokio::time::timeout(within, io.read(&mut buf)).await.ok()
    }

    fn timed_out(r: Option<std::io::Result<usize>>) -> bool {
        matches!(r, Some(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut)
    }

    /// THREATS H16: a connection that never sends a byte fails its read after one to two
    /// periods (no protocol to close gracefully), and is not asked to close first.
    #[tokio::test]
    async fn h16_a_connection_that_sends_nothing_times_out() {
        let mut p = pipe();
        let start = std::time::Instant::now();
        assert!(timed_out(read(&mut p.io, Duration::from_secs(5)).await));
        assert!(start.elapsed() >= IDLE && start.elapsed() < Duration::from_secs(2));
        let asked = tokio::time::timeout(Duration::from_millis(10), p.idle.notified()).await;
        assert!(
            asked.is_err(),
            "a silent connection was asked to close gracefully"
        );
    }

    /// THREATS H16: bytes keep a connection open; once they stop it is first asked to
    /// close gracefully (HTTP/2 GOAWAY), and its read fails a period later if it is
    /// still there.
    #[tokio::test]
    async fn h16_a_connection_whose_bytes_stop_is_asked_to_close_then_cut() {
        let mut p = pipe();
        for _ in 0..6 {
            p.client.write_all(b"x").await.unwrap();
            let got = read(&mut p.io, Duration::from_secs(1)).await;
            assert_eq!(got.map(|r| r.ok()), Some(Some(1)));
            tokio::time::sleep(IDLE / 2).await;
        }
        let asked = p.idle.clone();
        let reading = tokio::spawn(async move {
            let start = std::time::Instant::now();
            let r = read(&mut p.io, Duration::from_secs(5)).await;
            (timed_out(r), start.elapsed())
        });
        tokio::time::timeout(Duration::from_secs(2), asked.notified())
            .await
            .expect("asked to close gracefully");
        let (cut, after) = reading.await.unwrap();
        assert!(cut && after >= IDLE * 2, "{after:?}");
    }

    /// A request being answered is not cut off, however long it takes and however quiet
    /// the client is; when the answer is done the idle clock runs again.
    #[tokio::test]
    async fn h16_a_quiet_connection_with_a_request_in_flight_stays_open() {
        let mut p = pipe();
        let busy = InFlight::enter(&p.in_flight);
        assert!(
            read(&mut p.io, IDLE * 6).await.is_none(),
            "closed while answering"
        );
        drop(busy);
        assert_eq!(p.in_flight.load(Ordering::Relaxed), 0);
        assert!(timed_out(read(&mut p.io, Duration::from_secs(5)).await));
    }

    /// Shutdown waits for a new connection's first bytes: they are signalled when they
    /// arrive, once, and not before.
    #[tokio::test]
    async fn the_first_bytes_are_signalled_once_when_they_arrive() {
        let mut p = pipe();
        let early = tokio::time::timeout(IDLE / 4, p.first_bytes.notified()).await;
        assert!(early.is_err(), "signalled before any byte");
        for _ in 0..3 {
            p.client.write_all(b"GET").await.unwrap();
            let got = read(&mut p.io, Duration::from_secs(1)).await;
            assert_eq!(got.map(|r| r.ok()), Some(Some(3)));
        }
        tokio::time::timeout(Duration::from_secs(1), p.first_bytes.notified())
            .await
            .expect("the first bytes are signalled");
        let again = tokio::time::timeout(IDLE / 4, p.first_bytes.notified()).await;
        assert!(again.is_err(), "signalled more than once");
    }
}
