//! Serving the API router over HTTPS: TLS by tokio-rustls, HTTP/1.1 and HTTP/2 by hyper-util's
//! auto connection (kubectl speaks h2, kube-rs and Python HTTP/1.1), the authentication and RBAC
//! layer of [`crate::auth`] in front of every route, `GET /metrics` ([`with_metrics`]), and a
//! graceful shutdown with a deadline.
//!
//! A misbehaving client (a failed handshake, a reset stream) only ends its own connection: the
//! error is logged and the accept loop goes on.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::ApiServer;
use crate::auth::{self, Authenticator};
use crate::error::ApiError;
use crate::metrics::{self, ExpositionSource};
use crate::tls::{TlsError, TlsMaterial};

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for open requests; watches never end on their own, so they are cut
/// after this.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed accept (e.g. out of file descriptors) so the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(thiserror::Error, Debug)]
pub enum ServeError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// A server running on a background task, for embedding (tests, benchmarks, the controllers'
/// process). Dropping it stops the server too.
pub struct RunningServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), ServeError>>>,
}

impl RunningServer {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://<addr>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Stops accepting, waits for the graceful shutdown and returns the server's result.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Binds `addr` (port 0 picks a free one) and serves on a background task. The listener is
/// bound when this returns, so clients may connect at once.
pub async fn spawn(
    router: Router,
    auth: Authenticator,
    tls: TlsMaterial,
    addr: SocketAddr,
) -> Result<RunningServer, ServeError> {
    // Build the TLS configuration before spawning so a bad certificate is reported here.
    tls.server_config()?;
    let listener =
        TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind { addr, source })?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(serve(router, auth, tls, listener, async move {
        let _ = stopped.await;
    }));
    Ok(RunningServer { addr, stop: Some(stop), task: Some(task) })
}

/// Adds `GET /metrics` to `router`: the Prometheus text exposition of `api`'s request and storage
/// metrics followed by what every source of `extra` renders. Like every other path it is
/// authenticated and authorized by the serving layer, as the non-resource URL `/metrics` with
/// verb `get` (the `system:monitoring` ClusterRole grants it).
pub fn with_metrics(router: Router, api: &ApiServer, extra: Vec<ExpositionSource>) -> Router {
    let api = api.clone();
    let extra = Arc::new(extra);
    router.route(
        "/metrics",
        axum::routing::get(move || {
            let (api, extra) = (api.clone(), Arc::clone(&extra));
            async move { metrics_response(api, extra).await }
        }),
    )
}

async fn metrics_response(api: ApiServer, extra: Arc<Vec<ExpositionSource>>) -> Response {
    // Counting the stored objects reads SQLite, and the sources may take locks: off the runtime.
    let rendered = tokio::task::spawn_blocking(move || {
        let mut text = api.request_metrics().render(api.store())?;
        for source in extra.iter() {
            text.push_str(&source());
        }
        Ok::<_, metrics::MetricsError>(text)
    })
    .await;
    match rendered {
        Ok(Ok(text)) => {
            let mut response = (StatusCode::OK, text).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(metrics::CONTENT_TYPE));
            response
        }
        Ok(Err(error)) => ApiError::internal(error.to_string()).into_response(),
        Err(join) => {
            ApiError::internal(format!("rendering the metrics failed: {join}")).into_response()
        }
    }
}

/// Wraps `router` in the authentication and authorization layer.
pub fn authenticated(router: Router, auth: Authenticator) -> Router {
    router.layer(axum::middleware::from_fn_with_state(auth, auth::authenticate))
}

/// Serves `router` with bearer-token auth over HTTPS on `listener` until `shutdown` completes,
/// then stops accepting, lets open requests finish for a few seconds and closes the rest.
pub async fn serve<F>(
    router: Router,
    auth: Authenticator,
    tls: TlsMaterial,
    listener: TcpListener,
    shutdown: F,
) -> Result<(), ServeError>
where
    F: Future<Output = ()> + Send,
{
    let acceptor = TlsAcceptor::from(tls.server_config()?);
    let app = authenticated(router, auth);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    connections.spawn(connection(tcp, peer, acceptor.clone(), app.clone(), stop_rx.clone()));
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Reap finished connections so the set does not grow without bound.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let open = connections.len();
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::info!(
            open,
            remaining = connections.len(),
            "closing connections still open after the shutdown grace period"
        );
        connections.shutdown().await;
    }
    Ok(())
}

async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    // Watch events are small writes that must not wait for Nagle's timer.
    let _ = tcp.set_nodelay(true);
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::info!(%peer, %error, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let conn =
        builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        // The guard `wait_for` returns must not live across the await below (it is not Send).
        () = async { drop(stop.wait_for(|stopping| *stopping).await) } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}
