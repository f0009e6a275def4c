//! HTTP: the router, middleware, TLS, and one `routes()` per feature. Only this module knows
//! axum and wire types.

pub mod audit;
pub mod auth_routes;
pub mod error;
pub mod extract;
pub mod files;
pub mod headers;
pub mod health;
pub mod idle;
pub mod library;
pub mod llm;
pub mod multipart_guard;
pub mod oidc_routes;
pub mod openai;
pub mod openapi;
pub mod retention;
pub mod routes_table;
pub mod search;
pub mod server;
pub mod speakers;
pub mod tls;
pub mod totp_routes;
pub mod transcripts;
pub mod ui;
pub mod uploads;
pub mod webhooks;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, Request};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::app::AppState;
use crate::error::Error;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// JSON bodies are small; uploads lift this limit on their own route.
const JSON_BODY_LIMIT: usize = 1024 * 1024;

async fn count_request(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    crate::metrics::METRICS.http_request(&method, &route, response.status().as_u16());
    response
}

/// The whole HTTPS application. Every route added here or in a feature's `routes()` must be
/// listed in `routes_table::route_table()` (the authorisation matrix test enforces it).
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .merge(health::routes())
        .merge(auth_routes::routes())
        .merge(totp_routes::routes())
        .merge(oidc_routes::routes())
        .merge(files::routes())
        .merge(transcripts::routes())
        .merge(openai::routes())
        .merge(library::routes())
        .merge(speakers::routes())
        .merge(search::routes())
        .merge(openapi::routes())
        .merge(audit::routes())
        .merge(retention::routes())
        .merge(webhooks::routes())
        .merge(uploads::routes())
        .merge(llm::routes())
        // Counted per matched route (the pattern, never the concrete path with its ids).
        .route_layer(axum::middleware::from_fn(count_request))
        .route(
            "/api/{*rest}",
            axum::routing::any(|| async { Error::not_found("route") }),
        );
    // Layers run outside-in in the reverse order of `.layer` calls: the request id is set
    // first, then traced, then headers are added to whatever comes back, errors included.
    Router::new()
        .merge(api)
        .fallback(ui::serve_asset)
        // Innermost: axum's plain-text rejections under /api/ become JSON errors.
        .layer(axum::middleware::from_fn(error::rejections_as_json))
        // Then every body but the uploads' is read whole (bounded in size and time) first.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            |state, request, next| extract::read_small_bodies(state, request, next, JSON_BODY_LIMIT),
        ))
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
        .layer(axum::middleware::from_fn(headers::security_headers))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                let id = request
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                // Only the path: query strings are never logged.
                tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
            }),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}
