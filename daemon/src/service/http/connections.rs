//! The connections the HTTP server takes: its own accept loop on hyper's HTTP/1 server
//! (axum's `serve` gives hyper no timer, so no header timeout, and caps nothing), so that
//! anonymous clients cannot hold the process's file descriptors, which LanceDB, memory,
//! the platforms and the remote engines need too.
//!
//! - At most `max_connections` open, and `max_connections_per_ip` from one address; one
//!   more is answered a short `503` (`Retry-After`, `Connection: close`) within
//!   [`REFUSAL_TIME`] and closed, never queued.
//! - `header_read_timeout_secs`: hyper closes a connection whose request head has not
//!   arrived in time. It starts when the connection opens and again when a kept-alive
//!   connection goes idle after a response (hyper 1.x's `Conn::poll_read_head`, armed
//!   by `State::idle`), so it is also the keep-alive idle timeout.
//! - `idle_timeout_secs`: a request body that stops arriving (tower-http's
//!   `RequestBodyTimeout`, between frames) or a response the client stops reading (a
//!   write timeout on the socket) ends the connection. A request waiting for its answer
//!   is neither: the client waits for us.
//! - Stopping: no more connections are taken, idle ones close, requests in progress
//!   finish (the daemon's grace applies to them, see `service/run.rs`).
//!
//! HTTP/1.1 only: OpenAI's clients and browsers speak it to an `http://` server (HTTP/2
//! without TLS needs prior knowledge, which they do not assume).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::Layer;

use crate::config::ServerConfig;

/// How long a refused connection may take to receive its `503`.
const REFUSAL_TIME: Duration = Duration::from_secs(1);
/// Refusals being written at once; past this, a refused connection is closed at once
/// (each one holds a file descriptor while its `503` is written).
const REFUSALS_AT_ONCE: usize = 64;
/// The pause after a failed accept (out of file descriptors, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the server allows a connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(super) max_connections: usize,
    /// 0: no cap.
    pub(super) max_per_ip: usize,
    pub(super) header_read_timeout: Duration,
    pub(super) idle_timeout: Duration,
}

impl From<&ServerConfig> for Limits {
    fn from(cfg: &ServerConfig) -> Self {
        Self {
            max_connections: cfg.max_connections,
            max_per_ip: cfg.max_connections_per_ip,
            header_read_timeout: Duration::from_secs(cfg.header_read_timeout_secs),
            idle_timeout: Duration::from_secs(cfg.idle_timeout_secs),
        }
    }
}

/// The connections open now, in all and per client address. Cheap to clone.
#[derive(Clone, Default)]
pub(super) struct Open(Arc<Mutex<Counts>>);

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum Full {
    #[error("the server has too many connections open ({0}); please try again in a few seconds")]
    Everyone(usize),
    #[error("too many connections from your address ({0} open); close some, or try again in a few seconds")]
    ThisAddress(usize),
}

/// A connection's place among the open ones, given back when dropped.
pub(super) struct ConnectionPermit {
    open: Open,
    ip: IpAddr,
}

impl Open {
    /// Connections open now.
    pub(super) fn total(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Held for a few counter updates only.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a new connection from `ip` in, unless a cap is reached.
    pub(super) fn admit(&self, ip: IpAddr, limits: &Limits) -> Result<ConnectionPermit, Full> {
        // An IPv4 client of a dual-stack socket arrives as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        let mut counts = self.lock();
        if counts.total >= limits.max_connections {
            return Err(Full::Everyone(counts.total));
        }
        let from_ip = counts.per_ip.get(&ip).copied().unwrap_or(0);
        if limits.max_per_ip > 0 && from_ip >= limits.max_per_ip {
            return Err(Full::ThisAddress(from_ip));
        }
        counts.total += 1;
        counts.per_ip.insert(ip, from_ip + 1);
        Ok(ConnectionPermit { open: self.clone(), ip })
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut counts = self.open.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, then until the requests in progress end.
/// Dropping the returned future (aborting its task) closes every connection at once.
pub(super) async fn accept_loop(
    listener: TcpListener,
    app: axum::Router,
    limits: Limits,
    open: Open,
    shutdown: CancellationToken,
) {
    let mut connections = tokio::task::JoinSet::new();
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors, or a connection reset before it was taken:
                // wait a little rather than spin.
                crate::metrics::connection_refused("accept_failed");
                tracing::warn!(%error, "accepting an HTTP connection failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        match open.admit(peer.ip(), &limits) {
            Ok(permit) => {
                connections.spawn(serve_connection(stream, permit, app.clone(), limits, shutdown.clone()));
            }
            Err(full) => {
                let reason = match full {
                    Full::Everyone(_) => "max_connections",
                    Full::ThisAddress(_) => "max_connections_per_ip",
                };
                crate::metrics::connection_refused(reason);
                tracing::debug!(%peer, %full, "HTTP connection refused");
                if let Ok(permit) = refusals.clone().try_acquire_owned() {
                    connections.spawn(async move {
                        refuse(stream, full).await;
                        drop(permit);
                    });
                }
            }
        }
    }
    // New connections now wait in the kernel's backlog and are refused when it closes.
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Serves one connection with the timeouts of `limits`, and stops it gracefully (the
/// request in progress finishes, an idle connection closes) on `shutdown`.
async fn serve_connection(
    stream: TcpStream,
    permit: ConnectionPermit,
    app: axum::Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let mut io = tokio_io_timeout::TimeoutStream::new(stream);
    // Only writes: a pending read is also how hyper watches for a client that leaves
    // while its answer is prepared, which must not time out.
    io.set_write_timeout(Some(limits.idle_timeout));
    let service = tower_http::timeout::RequestBodyTimeoutLayer::new(limits.idle_timeout).layer(app);
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let connection = builder.serve_connection(TokioIo::new(Box::pin(io)), TowerToHyperService::new(service));
    tokio::pin!(connection);
    let mut stopping = false;
    let served = loop {
        tokio::select! {
            served = connection.as_mut() => break served,
            () = shutdown.cancelled(), if !stopping => {
                connection.as_mut().graceful_shutdown();
                stopping = true;
            }
        }
    };
    // Timeouts, resets and clients that leave mid-request end connections all the time.
    if let Err(error) = served {
        tracing::debug!(%error, "HTTP connection ended");
    }
    drop(permit);
}

/// Answers a refused connection with a short `503` in OpenAI's error shape, then closes
/// it; reads what the client sent meanwhile, so that closing does not reset the
/// connection before the client has read the answer.
async fn refuse(mut stream: TcpStream, full: Full) {
    let body = serde_json::json!({"error": {
        "message": full.to_string(),
        "type": "service_unavailable",
        "param": null,
        "code": "too_many_connections",
    }})
    .to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nRetry-After: 5\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_TIME, async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        let mut unread = [0u8; 4096];
        while stream.read(&mut unread).await? > 0 {}
        std::io::Result::Ok(())
    })
    .await;
}
