//! Serving an HTTP listener with the bounds a stranger cannot exhaust:
//! at most [`Bounds::max_connections`] connections at once (the rest wait
//! in the kernel's accept queue, which costs this process no descriptor),
//! and a connection that does not send a request's headers within
//! [`Bounds::header_read_timeout`] (the first, or the next one on a kept
//! connection: an idle connection) is closed. Every HTTP endpoint of hum
//! (`/metrics` and `/status`, the gateway) is served this way, so a flood
//! of idle connections from another local user fills that endpoint's own
//! slots, never humd's descriptors for its thrum socket.

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// The limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
}

/// `/metrics` and `/status`: a scraper or two and `hum status --http`.
pub const METRICS: Bounds = Bounds {
    max_connections: 64,
    header_read_timeout: Duration::from_secs(5),
};

/// The gateway: agent frameworks keep connections alive and stream long
/// answers; a request's headers still come at once.
pub const GATEWAY: Bounds = Bounds {
    max_connections: 512,
    header_read_timeout: Duration::from_secs(10),
};

/// Who owns the client end of one connection, told once per connection
/// (reading the kernel's socket table costs a line per socket on the
/// machine, too much to pay per request), for whichever request asks.
#[derive(Debug, Clone, Default)]
pub struct PeerOwner(std::sync::Arc<tokio::sync::OnceCell<Option<u32>>>);

impl PeerOwner {
    /// The connection's owner: `find` (which reads the table) the first
    /// time, off the runtime's threads; what it found ever after.
    pub async fn get_or_find(
        &self,
        find: impl FnOnce() -> Option<u32> + Send + 'static,
    ) -> Option<u32> {
        *self
            .0
            .get_or_init(|| async move { tokio::task::spawn_blocking(find).await.ok().flatten() })
            .await
    }
}

/// After an accept error (out of descriptors), the pause before the next.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` within `bounds` until `shutdown` resolves,
/// then lets the requests in flight finish. Each request carries the
/// peer's address as [`ConnectInfo`].
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    bounds: Bounds,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(bounds.max_connections));
    let (stopping, stop) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // A slot first: while none is free, nothing is accepted.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(event = "http.accept_failed", error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let owner = PeerOwner::default();
        let service = hyper::service::service_fn({
            let app = app.clone();
            move |req: hyper::Request<hyper::body::Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(ConnectInfo(peer));
                req.extensions_mut().insert(owner.clone());
                let mut app = app.clone();
                tower_service::Service::call(&mut app, req)
            }
        });
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(bounds.header_read_timeout);
            let conn = http.serve_connection(TokioIo::new(stream), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = async { stop.wait_for(|s| *s).await.is_ok() } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(slot);
        });
    }
    let _ = stopping.send(true);
    // Every connection has ended once every slot is free again.
    let _ = slots.acquire_many(bounds.max_connections as u32).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_connections_owner_is_told_once_and_kept() {
        let owner = PeerOwner::default();
        assert_eq!(owner.get_or_find(|| Some(7)).await, Some(7));
        // Not looked up again for this connection.
        assert_eq!(owner.clone().get_or_find(|| Some(8)).await, Some(7));
        assert_eq!(PeerOwner::default().get_or_find(|| None).await, None);
    }

    fn app() -> axum::Router {
        axum::Router::new().route(
            "/",
            axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                format!("hello {}", peer.ip())
            }),
        )
    }

    async fn get(addr: SocketAddr) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    /// The slots are full of idle connections: the next request waits,
    /// and is served once the header timeout closes one of them.
    #[tokio::test]
    async fn idle_connections_hold_no_slot_past_the_header_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let bounds = Bounds {
            max_connections: 2,
            header_read_timeout: Duration::from_millis(300),
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app(), bounds, async {
            let _ = stop_rx.await;
        }));
        let idle: Vec<_> = futures_idle(addr, 2).await;
        let started = tokio::time::Instant::now();
        let answer = get(addr).await;
        assert!(answer.contains("hello 127.0.0.1"), "{answer}");
        assert!(
            started.elapsed() >= Duration::from_millis(250),
            "served while both slots were held: {:?}",
            started.elapsed()
        );
        // The idle ones were closed by the server.
        for mut s in idle {
            let mut buf = [0u8; 16];
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .expect("closed")
                .unwrap_or(0);
            assert_eq!(n, 0);
        }
        let _ = stop_tx.send(());
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server stops")
            .unwrap();
    }

    async fn futures_idle(addr: SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        v
    }
}
