//! `/api/health` (liveness, no auth), `/api/ready` (each dependency checked by name) and
//! `/metrics` (Prometheus text, for admins and/or from localhost per `[metrics] allow`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::app::{AppState, blocking};
use crate::ops::health::readiness_checks;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/health", get(health))
        .route("/api/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/admin/status", get(admin_status))
}

/// What `opentranscribe status` shows, for the admin page: version, uptime, readiness, jobs by
/// state, disk, models and the execution provider.
async fn admin_status(
    State(state): State<AppState>,
    _admin: super::extract::AdminUser,
) -> Result<Json<crate::ops::status::StatusReport>, crate::error::Error> {
    let gathered = state.clone();
    let report =
        blocking(move || Ok::<_, crate::error::Error>(crate::ops::status::gather(&gathered)))
            .await?;
    Ok(Json(report))
}

/// Prometheus text. Who may read it is configured; anyone else gets 404, as if it did not exist.
async fn metrics(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    request: axum::extract::Request,
) -> Result<Response, crate::error::Error> {
    use axum::extract::FromRequestParts;
    let allow = state.config.metrics.allow.as_str();
    let local = peer.ip().is_loopback();
    let permitted = match allow {
        "off" => false,
        "localhost" => local,
        "admins-and-localhost" if local => true,
        _ => {
            let (mut parts, _) = request.into_parts();
            super::extract::AdminUser::from_request_parts(&mut parts, &state)
                .await
                .is_ok()
        }
    };
    if !permitted {
        return Err(crate::error::Error::not_found("route"));
    }
    let store = state.store.clone();
    let (jobs, depth) = blocking(move || {
        let mut by_state = std::collections::BTreeMap::new();
        for state in ["queued", "running", "done", "failed", "cancelled"] {
            by_state.insert(state.to_owned(), 0u64);
        }
        let mut depth = 0;
        for job in store.list_jobs()? {
            if job.state == crate::store::records::JobState::Queued {
                depth += 1;
            }
            *by_state.entry(job.state.to_string()).or_insert(0) += 1;
        }
        Ok::<_, crate::error::Error>((by_state, depth))
    })
    .await?;
    let body = crate::metrics::METRICS.render(&jobs, depth);
    let mut response = body.into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

pub async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn ready(State(state): State<AppState>) -> Response {
    // The language model is informational: the daemon serves without it, so it never fails
    // readiness.
    let llm = match &state.llm {
        Some(llm) => llm.status().await,
        None => crate::llm::LlmStatus::not_configured(),
    };
    let checks =
        match blocking(move || Ok::<_, crate::error::Error>(readiness_checks(&state))).await {
            Ok(checks) => checks,
            Err(e) => return e.into_response(),
        };
    let failing: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    if failing.is_empty() {
        (
            StatusCode::OK,
            Json(json!({"status": "ready", "checks": checks, "llm": llm})),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "code": "not-ready",
                "message": format!("failing checks: {}", failing.join(", ")),
                "failing": failing,
                "checks": checks,
                "llm": llm,
            })),
        )
            .into_response()
    }
}
