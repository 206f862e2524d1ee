//! The HTTP endpoint: /metrics in the Prometheus text format.
use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};

use crate::exporter::Exporter;

pub async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen} (port in use? choose another with --listen)")
        })
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    exporter: Arc<Exporter>,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(index))
        .with_state(exporter);
    axum::serve(listener, app).await.context("serving HTTP")
}

async fn metrics(State(exporter): State<Arc<Exporter>>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        exporter.render(),
    )
}

async fn index() -> &'static str {
    "monitor: metrics at /metrics\n"
}
