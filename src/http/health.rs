//! `/api/health` (liveness, no auth), `/api/ready` (each dependency checked by name) and
//! `/metrics` (Prometheus text, for admins and/or from localhost per `[metrics] allow`).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;

use crate::app::{AppState, blocking};

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
    let report = blocking(move || Ok(crate::ops::status::gather(&gathered))).await?;
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
            if job.state == "queued" {
                depth += 1;
            }
            *by_state.entry(job.state).or_insert(0) += 1;
        }
        Ok((by_state, depth))
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

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// Runs every readiness check; blocking I/O, so call it from a blocking thread.
pub fn readiness_checks(state: &AppState) -> Vec<Check> {
    let database = match state.store.check() {
        Ok(()) => Check {
            name: "database",
            ok: true,
            detail: "ok".to_owned(),
        },
        Err(e) => Check {
            name: "database",
            ok: false,
            detail: e.to_string(),
        },
    };
    let probe_path = state
        .blobs
        .root()
        .join(format!(".ready-{}", uuid::Uuid::now_v7()));
    let writable =
        std::fs::write(&probe_path, b"ok").and_then(|()| std::fs::remove_file(&probe_path));
    let blob_dir = Check {
        name: "blob_dir_writable",
        ok: writable.is_ok(),
        detail: match writable {
            Ok(()) => state.blobs.root().display().to_string(),
            Err(e) => format!("{}: {e}", state.blobs.root().display()),
        },
    };
    let floor_mb = state.config.storage.min_free_disk_mb;
    let disk = match free_disk_bytes(&state.config.data_dir) {
        Some(free) => Check {
            name: "disk_free",
            ok: free / (1024 * 1024) >= floor_mb,
            detail: format!("{} MiB free, floor {floor_mb} MiB", free / (1024 * 1024)),
        },
        None => Check {
            name: "disk_free",
            ok: false,
            detail: "cannot read free space".to_owned(),
        },
    };
    vec![database, blob_dir, disk, models_check(&state.config)]
}

/// The runtime library and every required model are present with the manifest's sizes.
fn models_check(config: &crate::config::Config) -> Check {
    use crate::models::cache::{Depth, ModelCache};
    use crate::models::manifest::REQUIRED_MODELS;
    let mut problems = Vec::new();
    let search =
        crate::models::runtime::find_library(config.runtime.library.as_deref(), &config.models_dir);
    if search.found.is_none() {
        problems.push("ONNX Runtime library not found".to_owned());
    }
    let cache = ModelCache::new(&config.models_dir);
    // A runtime found outside the cache (the package's /usr/lib/opentranscribe) needs no
    // runtime in the cache.
    let runtime_in_cache = search.found.as_ref().is_none_or(|p| {
        p.starts_with(config.models_dir.join(crate::models::manifest::RUNTIME_DIR))
    });
    for name in REQUIRED_MODELS
        .iter()
        .filter(|n| **n != crate::models::manifest::RUNTIME_DIR || runtime_in_cache)
    {
        if !cache.verify(name, Depth::Sizes).is_empty() {
            problems.push(format!("{name} missing or damaged"));
        }
    }
    Check {
        name: "models",
        ok: problems.is_empty(),
        detail: if problems.is_empty() {
            format!(
                "all required models present in {}",
                config.models_dir.display()
            )
        } else {
            format!(
                "{} in {} (import a bundle with `opentranscribe models import`)",
                problems.join(", "),
                config.models_dir.display()
            )
        },
    }
}

async fn ready(State(state): State<AppState>) -> Response {
    let checks = match blocking(move || Ok(readiness_checks(&state))).await {
        Ok(checks) => checks,
        Err(e) => return e.into_response(),
    };
    let failing: Vec<&str> = checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    if failing.is_empty() {
        (
            StatusCode::OK,
            Json(json!({"status": "ready", "checks": checks})),
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
            })),
        )
            .into_response()
    }
}

/// Free bytes available to unprivileged users on the filesystem holding `path`.
pub fn free_disk_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: c_path is NUL-terminated and stats points to writable memory of the right type.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stats.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    #[allow(unsafe_code)]
    let stats = unsafe { stats.assume_init() };
    #[allow(clippy::useless_conversion)] // the field types differ between targets
    let free = u64::from(stats.f_bavail).saturating_mul(u64::from(stats.f_frsize));
    Some(free)
}
