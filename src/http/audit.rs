//! `/api/admin/audit` and `/api/admin/audit.csv`: the audit log for administrators, newest
//! first, filtered by user, action prefix and time; the CSV export is bounded
//! (`services::audit::CSV_MAX_ROWS`, `X-Audit-Truncated: true` when older entries were left out).

use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::AdminUser;
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::services::audit;
use crate::store::audit::AuditFilter;

const MAX_PER_PAGE: usize = 500;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/admin/audit", get(list))
        .route("/api/admin/audit.csv", get(export_csv))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    since: Option<u64>,
    #[serde(default)]
    until: Option<u64>,
    #[serde(default)]
    page: Option<usize>,
    #[serde(default)]
    per_page: Option<usize>,
}

type QueryResult = std::result::Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>;

fn filter_of(query: &AuditQuery) -> AuditFilter {
    let text = |value: &Option<String>| {
        value
            .as_deref()
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    AuditFilter {
        user: text(&query.user),
        action_prefix: text(&query.action),
        since: query.since,
        until: query.until,
    }
}

async fn list(
    State(state): State<AppState>,
    _admin: AdminUser,
    query: QueryResult,
) -> Result<Json<Value>> {
    let Query(query) = query.map_err(|e| Error::bad_request(e.body_text()))?;
    let page = query.page.unwrap_or(1).max(1);
    let per_page = query.per_page.unwrap_or(50).clamp(1, MAX_PER_PAGE);
    let (entries, more) = audit::list(&state, filter_of(&query), page, per_page).await?;
    Ok(Json(json!({
        "entries": entries,
        "page": page,
        "per_page": per_page,
        "has_more": more,
    })))
}

async fn export_csv(
    State(state): State<AppState>,
    _admin: AdminUser,
    query: QueryResult,
) -> Result<Response> {
    let Query(query) = query.map_err(|e| Error::bad_request(e.body_text()))?;
    if query.page.is_some() || query.per_page.is_some() {
        return Err(Error::bad_request(
            "the CSV export is not paged; filter by since/until instead",
        ));
    }
    let (csv, truncated) = audit::csv(&state, filter_of(&query)).await?;
    let mut response = csv.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"audit.csv\""),
    );
    if truncated {
        headers.insert("x-audit-truncated", HeaderValue::from_static("true"));
    }
    Ok(response)
}
