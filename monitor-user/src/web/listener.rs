//! The accept loop under the router: at most `max_connections` connections at once (beyond that
//! the kernel's backlog holds them, as Prometheus' own `--web.max-connections` does), a deadline
//! for the TLS handshake and the request head, a cap on the head's size, and TLS when the web
//! config turns it on. A plain-HTTP request to a TLS listener gets no answer: the handshake fails
//! and the connection closes.
use std::{sync::Arc, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tracing::{debug, warn};

use super::web_config_watch::WebConfigWatch;

#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    pub max_connections: usize,
    /// Request line and headers together.
    pub max_header_bytes: usize,
    /// For the TLS handshake and then each request head.
    pub header_timeout: Duration,
}

pub async fn serve(
    listener: TcpListener,
    router: Router,
    web: Option<WebConfigWatch>,
    limits: HttpLimits,
) -> anyhow::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        // Wait for a free slot before accepting, so the excess waits in the backlog.
        let slot = slots.clone().acquire_owned().await?;
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors or memory: back off rather than spin.
                warn!("accepting an HTTP connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // The config in force when the connection came (a renewed certificate applies to the
        // next one).
        let active = web.as_ref().map(WebConfigWatch::current);
        let tls = active.as_ref().and_then(|a| a.tls.clone());
        let http2 = active.as_ref().is_none_or(|a| a.config.http2);
        let router = router.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let result = match tls {
                None => serve_connection(stream, router, limits, http2).await,
                Some(config) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(config);
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await
                    {
                        Ok(Ok(stream)) => serve_connection(stream, router, limits, http2).await,
                        Ok(Err(e)) => Err(format!("TLS handshake: {e}").into()),
                        Err(_) => Err("TLS handshake timed out".into()),
                    }
                }
            };
            if let Err(e) = result {
                // A client's failure (a bad certificate, plain HTTP to TLS, a reset), not ours.
                debug!(%peer, "HTTP connection: {e}");
            }
        });
    }
}

async fn serve_connection<S>(
    stream: S,
    router: Router,
    limits: HttpLimits,
    http2: bool,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if !http2 {
        builder = builder.http1_only();
    }
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_concurrent_streams(16);
    builder
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router))
        .await
}
