//! `plansync run`'s HTTP server, for the people and tools that watch it: `GET /healthz`
//! (the process lives), `GET /readyz` (the first run is done and both sides answer; a stream
//! that is down is reported as degraded) and `GET /metrics` (OpenMetrics text, see
//! [`metrics`]). It listens on `[http] address` (loopback by default) and stops with the
//! engine.

mod metrics;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use plansync::engine::observe::Observer;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The server while it runs; [`Server::stop`] ends it.
pub struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

/// Binds `address`, before the engine starts, so a port in use stops the start (the error
/// names the address and the key).
pub async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on {address} for health and metrics ([http] address): {e} (choose another port, or set enabled = false in [http])"
        )
    })
}

/// Serves `observer` on `listener`.
pub fn start(listener: TcpListener, observer: Observer) -> anyhow::Result<Server> {
    let address = listener.local_addr()?;
    if !address.ip().is_loopback() {
        tracing::warn!(target: "plansync::serve", event = "http_not_loopback", %address,
            "health and metrics are served beyond loopback, without authentication");
    }
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(observer);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
        if let Err(e) = served {
            tracing::error!(target: "plansync::serve", event = "http_failed", error = %e, "the health and metrics server stopped");
        }
    });
    tracing::info!(target: "plansync::serve", event = "http_listening", %address,
        "serving /healthz, /readyz and /metrics");
    Ok(Server { stop, task })
}

impl Server {
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(observer): State<Observer>) -> Response {
    match observer.observe().await {
        Ok(seen) => {
            let readiness = seen.readiness();
            let status = if readiness.ready {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, axum::Json(readiness)).into_response()
        }
        Err(e) => unavailable(&e.to_string()),
    }
}

async fn metrics(State(observer): State<Observer>) -> Response {
    match observer.observe().await {
        Ok(seen) => match metrics::encode(&seen) {
            Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
            Err(e) => unavailable(&format!("encoding the metrics: {e}")),
        },
        Err(e) => unavailable(&e.to_string()),
    }
}

fn unavailable(why: &str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(serde_json::json!({ "error": why })),
    )
        .into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "not found: plansync serves /healthz, /readyz and /metrics\n",
    )
        .into_response()
}
