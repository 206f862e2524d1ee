//! The HTTP endpoint: /metrics in the Prometheus text format, the event log, and the live page
//! with the JSON it reads.
use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::Context as _;
use axum::{
    Json, Router,
    extract::{Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;

use crate::{
    serve::events::EventLog,
    serve::exporter::Exporter,
    web::{
        basic_auth::BasicAuth,
        history_trend,
        listener::{self, HttpLimits},
        live::LiveFeed,
        page,
        web_config_watch::WebConfigWatch,
    },
};

#[derive(Clone)]
pub struct AppState {
    pub exporter: Arc<Exporter>,
    pub events: EventLog,
    pub live: LiveFeed,
    /// The history store, when it is kept: the page's trend reads it.
    pub history: Option<PathBuf>,
}

pub async fn bind(listen: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| {
            format!("cannot listen on {listen} (port in use? choose another with --listen)")
        })
}

/// How the endpoint is served: the web config (TLS, users, headers) when one is given, and the
/// connection limits.
pub struct ServeOptions {
    pub web: Option<WebConfigWatch>,
    pub limits: HttpLimits,
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    options: ServeOptions,
) -> anyhow::Result<()> {
    let mut app = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/events", get(events))
        .route("/api/live", get(live))
        .route("/api/history", get(history))
        // Prometheus' own: up while it serves, ready when it does its job.
        .route("/-/healthy", get(|| async { "monitor is healthy\n" }))
        .route("/-/ready", get(ready))
        .route("/", get(|| async { page::asset("index.html") }))
        .route(
            "/assets/{*name}",
            get(
                |axum::extract::Path(name): axum::extract::Path<String>| async move {
                    page::asset(&name)
                },
            ),
        )
        .with_state(state);
    if let Some(web) = &options.web {
        let guard = Guard {
            web: web.clone(),
            auth: Arc::new(BasicAuth::default()),
        };
        // Every route, health included: exporter-toolkit guards them all the same way.
        app = app.layer(axum::middleware::from_fn_with_state(guard, guarded));
    }
    listener::serve(listener, app, options.web, options.limits)
        .await
        .context("serving HTTP")
}

#[derive(Clone)]
struct Guard {
    web: WebConfigWatch,
    auth: Arc<BasicAuth>,
}

/// Basic auth when the web config has users, and its extra headers on every response (401s
/// included) that the handler did not set itself.
async fn guarded(
    State(guard): State<Guard>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let active = guard.web.current();
    let users = &active.config.users;
    let mut response = if users.is_empty()
        || guard
            .auth
            .allows(users, request.headers().get(header::AUTHORIZATION))
            .await
    {
        next.run(request).await
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic")],
            "Unauthorized\n",
        )
            .into_response()
    };
    let headers = response.headers_mut();
    for (name, value) in &active.config.headers {
        // Both were checked when the config loaded.
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            header::HeaderValue::from_str(value),
        ) {
            headers.entry(name).or_insert(value);
        }
    }
    response
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

#[derive(Deserialize)]
struct Since {
    /// Unix ms of the newest point the page has (0 or absent: send every kept point).
    #[serde(default)]
    since: u64,
}

/// The page's feed: the points after `since`, what holds now, and the recent events.
async fn live(State(state): State<AppState>, Query(q): Query<Since>) -> Response {
    let snapshot = state.live.since(q.since);
    let events = state.events.recent(EVENTS_SHOWN);
    let mut body = match serde_json::to_value(&snapshot) {
        Ok(v) => v,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    body["events"] = events.into();
    no_store(Json(body))
}

/// 200 when the target is being sampled and every kernel program asked for is attached; 503
/// with what is missing, one reason a line, otherwise.
async fn ready(State(state): State<AppState>) -> Response {
    match state.live.readiness(std::time::SystemTime::now()) {
        Ok(()) => "monitor is ready\n".into_response(),
        Err(missing) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("monitor is not ready:\n{}\n", missing.join("\n")),
        )
            .into_response(),
    }
}

/// Events the page lists (the newest).
const EVENTS_SHOWN: usize = 20;

/// The last day of CPU and memory from the history store, with their trends.
async fn history(State(state): State<AppState>) -> Response {
    let Some(path) = state.history.clone() else {
        return (
            StatusCode::NOT_FOUND,
            "no history is kept ([history] enabled = false)",
        )
            .into_response();
    };
    let target = state.live.target();
    match tokio::task::spawn_blocking(move || history_trend::last_day(&path, &target)).await {
        Ok(Ok(trend)) => no_store(Json(trend)),
        Ok(Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e:#}")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn no_store(body: impl IntoResponse) -> Response {
    ([(header::CACHE_CONTROL, "no-store")], body).into_response()
}
