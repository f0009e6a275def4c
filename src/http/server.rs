//! The listeners: HTTPS with rustls, and the optional plain-HTTP redirector.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::AppState;

/// Starts both servers on the tracker; they stop gracefully when `shutdown` is cancelled.
pub fn spawn_servers(
    state: AppState,
    https_listener: std::net::TcpListener,
    http_listener: Option<std::net::TcpListener>,
    tls: RustlsConfig,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> std::io::Result<()> {
    let grace = Duration::from_secs(state.config.server.shutdown_grace_secs);
    let header_timeout = Duration::from_secs(state.config.server.header_timeout_secs);
    let https_port = https_listener.local_addr()?.port();
    https_listener.set_nonblocking(true)?;
    let handle: Handle<SocketAddr> = Handle::new();
    // HTTP/1.1 gets hyper's header timeout; HTTP/2 the same rule from `idle` (see there).
    let acceptor = crate::http::idle::IdleAcceptor::new(
        axum_server::tls_rustls::RustlsAcceptor::new(tls),
        header_timeout,
    );
    let mut server = axum_server::from_tcp(https_listener)?.acceptor(acceptor);
    server
        .http_builder()
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    server
        .http_builder()
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_header_list_size(64 * 1024);
    let app = crate::http::router(state.clone());
    let server = server.handle(handle.clone());
    tracker.spawn(async move {
        if let Err(e) = server
            .serve(app.into_make_service_with_connect_info::<SocketAddr>())
            .await
        {
            tracing::error!(error = %e, "HTTPS server stopped");
        }
    });
    let watcher = handle.clone();
    let token = shutdown.clone();
    tracker.spawn(async move {
        token.cancelled().await;
        watcher.graceful_shutdown(Some(grace));
    });

    if let Some(listener) = http_listener {
        listener.set_nonblocking(true)?;
        let handle: Handle<SocketAddr> = Handle::new();
        let mut server = axum_server::from_tcp(listener)?;
        server
            .http_builder()
            .http1()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_timeout);
        let server = server.handle(handle.clone());
        let app = redirect_router(https_port);
        tracker.spawn(async move {
            if let Err(e) = server.serve(app.into_make_service()).await {
                tracing::error!(error = %e, "HTTP redirect server stopped");
            }
        });
        tracker.spawn(async move {
            shutdown.cancelled().await;
            handle.graceful_shutdown(Some(grace));
        });
    }
    Ok(())
}

/// Plain HTTP: `/api/health` for load balancers, a 308 to HTTPS for everything else.
pub fn redirect_router(https_port: u16) -> Router {
    Router::new()
        .route("/api/health", get(crate::http::health::health))
        .fallback(move |request: Request| async move { redirect_to_https(&request, https_port) })
        .layer(axum::middleware::from_fn(
            crate::http::headers::security_headers,
        ))
}

fn redirect_to_https(request: &Request, https_port: u16) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    // Keep the host name, replace the port (IPv6 literals keep their brackets).
    let hostname = match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => name,
        _ => host,
    };
    if hostname
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/' || c == '@')
    {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let target = if https_port == 443 {
        format!("https://{hostname}{path}")
    } else {
        format!("https://{hostname}:{https_port}{path}")
    };
    Redirect::permanent(&target).into_response()
}
