//! The HTTP endpoint: /metrics in the Prometheus text format.
use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use axum::{Json, Router, extract::State, http::header, response::IntoResponse, routing::get};

use crate::{serve::events::EventLog, serve::exporter::Exporter};

#[derive(Clone)]
pub struct AppState {
    pub exporter: Arc<Exporter>,
    pub events: EventLog,
}

pub async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen} (port in use? choose another with --listen)")
        })
}

pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/events", get(events))
        .route("/", get(index))
        .with_state(state);
    axum::serve(listener, app).await.context("serving HTTP")
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        state.exporter.render(),
    )
}

/// CPU spikes with their context and alert notifications, oldest first.
async fn events(State(state): State<AppState>) -> Json<Vec<serde_json::Value>> {
    Json(state.events.snapshot())
}

async fn index() -> &'static str {
    "monitor: metrics at /metrics, events at /api/events\n"
}
