//! The API's accept loop: HTTP/1.1 connections with the limits a server
//! that anything on the machine can reach must have.
//!
//! - **Header-read timeout** ([`HEADER_TIMEOUT`]): a request's head must
//!   arrive within it, and it runs from the moment the connection opens and
//!   again each time a keep-alive connection waits for its next request. A
//!   silent connection, a half-sent request or an idle keep-alive one is
//!   closed when it runs out. 30 s is hundreds of times what a phone on 3G
//!   needs for a few hundred bytes of headers.
//! - **Connection cap** ([`MAX_CONNECTIONS`]): at the cap, no connection is
//!   accepted until one ends (the kernel's backlog holds the rest), so no
//!   local process can exhaust the node's file descriptors through it.
//! - **Header size** ([`MAX_HEADER_BYTES`]): larger request heads are
//!   refused (431).
//!
//! A response body being streamed has no time limit: a paused player holds
//! its stream for as long as it likes, held back by TCP, at no cost but a
//! connection slot.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long a connection may take to send a request's head, and may stay
/// idle between requests.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Largest request head accepted (start line and headers).
pub const MAX_HEADER_BYTES: usize = 64 << 10;
/// How long open connections get to finish after shutdown begins.
const GRACE: Duration = Duration::from_secs(2);

/// Serve `app` on `listener` until `cancel` fires; then let open
/// connections finish for a short grace period and cut the rest.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            _ = cancel.cancelled() => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                // Out of descriptors, a connection reset before accept:
                // wait a moment rather than spin.
                Err(e) => {
                    tracing::debug!("api accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = cancel.cancelled() => break,
        };
        while conns.try_join_next().is_some() {}
        // Each request learns the address it came from (the login brake
        // counts failures by it).
        let svc = TowerToHyperService::new(tower::ServiceExt::map_request(
            app.clone(),
            move |mut r: hyper::Request<hyper::body::Incoming>| {
                r.extensions_mut().insert(super::web::ClientAddr(peer));
                r
            },
        ));
        let cancel = cancel.clone();
        conns.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEADER_BYTES.max(8192));
            let conn = builder.serve_connection(TokioIo::new(tcp), svc);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("api connection: {e}");
                    }
                }
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    // Open streams would hold a graceful shutdown forever.
    let _ = tokio::time::timeout(GRACE, async { while conns.join_next().await.is_some() {} }).await;
    conns.abort_all();
    Ok(())
}
