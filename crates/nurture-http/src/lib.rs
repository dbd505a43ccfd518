//! Nurture's HTTP API v1 (SPEC section 5 "HTTP API v1", issue #3), served by `nurture serve`.
//!
//! Architecture invariant: this crate is an edge. It turns HTTP into calls on
//! [`nurture_core::Engine`] and the engine's answers into JSON; it holds no business rule and
//! never touches the store except for `/readyz`'s ping.
//!
//! - Each resource module under [`routes`] exposes `router()`, with its request and response
//!   structs private to it (STYLE.md); all share one [`state::AppState`].
//! - Every error, extractor rejections included, is RFC 9457 problem+json ([`error`]).
//! - The OpenAPI document is generated from the handlers' own types with utoipa, route by route
//!   as they are registered, so it describes exactly what is served ([`openapi`]).

mod error;
mod extract;
mod middleware;
mod openapi;
mod routes;
mod schema;
mod state;
mod telemetry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use nurture_core::Engine;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::middleware::REQUEST_ID_HEADER;
use crate::state::AppState;

/// Limits of the HTTP edge.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// The largest request body accepted, in bytes; larger ones get 413. Default 1 MiB.
    pub body_limit: usize,
    /// How long one request may take before it is answered 503. Default 30 s. The manual
    /// clock's `/v1/clock/advance` is exempt: it runs all the work it passes, however long.
    pub request_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            body_limit: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The whole HTTP API: `/v1/...`, `/healthz`, `/readyz`, `/metrics` and `/openapi.json`, with
/// `/v1/clock` only when the engine's clock is manual (SPEC section 5 "Manual clock").
///
/// Installs the process-wide Prometheus recorder on first use, so the engine's own metrics
/// (`nurture_step_executions_total`, ...) show in `/metrics` too.
pub fn router(engine: Arc<Engine>, config: HttpConfig) -> Router {
    let state = AppState::new(engine.clone(), config.body_limit, telemetry::prometheus());
    let (api, clock, document) = routes::routers(&state);
    let _ = state.openapi.set(openapi::render(document).into());

    let timed = api.layer(TimeoutLayer::with_status_code(
        StatusCode::SERVICE_UNAVAILABLE,
        config.request_timeout,
    ));
    let app = match clock {
        Some(clock) => timed.merge(clock),
        None => timed,
    };
    app.fallback(routes::not_found)
        .with_state(state)
        .layer(CatchPanicLayer::new())
        .layer(axum::middleware::from_fn(
            middleware::problem_for_bare_errors,
        ))
        .layer(axum::middleware::from_fn(middleware::record_metrics))
        .layer(axum::middleware::from_fn(middleware::request_id_scope))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let request_id = req
                        .headers()
                        .get(REQUEST_ID_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = %req.uri().path(),
                        request_id = %request_id,
                        tenant_id = tracing::field::Empty,
                    )
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID_HEADER))
        .layer(SetRequestIdLayer::new(REQUEST_ID_HEADER, MakeRequestUuid))
}

/// Serves [`router`] on `listener` until `shutdown` resolves, then finishes the requests in
/// flight (graceful shutdown: idle keep-alive connections are closed, busy ones end after their
/// answer) and returns.
///
/// HTTP/1.1 with header names written in Title-Case (`Content-Type`). Header names are
/// case-insensitive, but some clients are not: the acceptance harness reads them from a
/// case-sensitive dictionary. That is why this is hyper's server with `title_case_headers`
/// rather than `axum::serve`, which offers no such setting.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Arc<Engine>,
    config: HttpConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = router(engine, config);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.title_case_headers(true);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let connection = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
