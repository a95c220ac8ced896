//! The plain-HTTP health and metrics server of `holdfast operator` and `holdfast agent`:
//! `/healthz` (the process serves), `/readyz` (it reaches the API server), `/metrics`
//! (Prometheus text: the controllers' families, and the operator's leader gauge).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::http::StatusCode;
use axum::routing::get;

/// What the probes and Prometheus see.
pub struct Health {
    /// The API server answered the last attempt to reach it.
    ready: AtomicBool,
    /// Whether this replica holds the lease; `None` for a process that does not elect a leader.
    leading: Option<AtomicBool>,
    metrics: Arc<holdfast_controllers::metrics::Metrics>,
}

impl Health {
    /// Not ready until told; `elects` adds the `holdfast_operator_leader` gauge.
    pub fn new(metrics: Arc<holdfast_controllers::metrics::Metrics>, elects: bool) -> Health {
        Health {
            ready: AtomicBool::new(false),
            leading: elects.then(|| AtomicBool::new(false)),
            metrics,
        }
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub fn set_leading(&self, leading: bool) {
        if let Some(flag) = &self.leading {
            flag.store(leading, Ordering::Relaxed);
        }
    }

    fn render(&self) -> String {
        let mut text = String::new();
        if let Some(flag) = &self.leading {
            let leading = u8::from(flag.load(Ordering::Relaxed));
            text.push_str(&format!(
                "# HELP holdfast_operator_leader Whether this replica holds the lease and runs the controllers.\n\
                 # TYPE holdfast_operator_leader gauge\n\
                 holdfast_operator_leader {leading}\n"
            ));
        }
        text.push_str(&self.metrics.render());
        text
    }
}

/// Serves `health` on `listener` until the task is aborted.
pub async fn serve(listener: tokio::net::TcpListener, health: Arc<Health>) {
    let ready = health.clone();
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || async move {
                if ready.ready.load(Ordering::Relaxed) {
                    (StatusCode::OK, "ok")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "the API server is not reachable")
                }
            }),
        )
        .route("/metrics", get(move || async move { health.render() }));
    if let Err(error) = axum::serve(listener, app).await {
        tracing::error!(%error, "the health server stopped");
    }
}
