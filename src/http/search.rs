//! `GET /api/search`: keyword, semantic or hybrid search over the transcripts the caller may
//! see (their own files and files in collections shared with them). Access control is part of
//! the query inside the index, so nothing else is ever counted or shown.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::extract::AuthUser;
use crate::app::{AppState, blocking};
use crate::error::{Error, Result};
use crate::search::{Mode, SearchError, SearchRequest, SearchResponse};

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/search", get(search))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    speaker: Option<String>,
    #[serde(default)]
    tag: Option<String>,
    #[serde(default)]
    collection: Option<String>,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    date_from: Option<u64>,
    #[serde(default)]
    date_to: Option<u64>,
    #[serde(default)]
    min_duration: Option<f64>,
    #[serde(default)]
    max_duration: Option<f64>,
    #[serde(default)]
    file_id: Option<String>,
    #[serde(default)]
    page: Option<usize>,
    #[serde(default)]
    per_page: Option<usize>,
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

pub fn search_error(error: SearchError) -> Error {
    match error {
        SearchError::Query(message) => Error::new("search-query", message),
        SearchError::Request(message) => Error::new("search-request", message),
        SearchError::SemanticUnavailable => {
            Error::new("search-semantic-unavailable", error.to_string())
        }
        other => Error::internal(other.code(), other),
    }
}

async fn search(
    State(state): State<AppState>,
    user: AuthUser,
    query: std::result::Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<SearchResponse>> {
    let Query(query) = query.map_err(|e| Error::bad_request(e.body_text()))?;
    let mode = match query.mode.as_deref() {
        None | Some("") => Mode::Keyword,
        Some(text) => Mode::parse(text)
            .ok_or_else(|| Error::bad_request("mode must be keyword, semantic or hybrid"))?,
    };
    if query.q.chars().count() > 1000 {
        return Err(Error::bad_request("q must be at most 1000 characters"));
    }
    let request = SearchRequest {
        q: query.q,
        mode,
        speaker: non_empty(query.speaker),
        tag: non_empty(query.tag),
        collection: non_empty(query.collection),
        language: non_empty(query.language),
        media_type: non_empty(query.media_type),
        date_from: query.date_from,
        date_to: query.date_to,
        min_duration: query.min_duration,
        max_duration: query.max_duration,
        file_id: non_empty(query.file_id),
        page: query.page.unwrap_or(1),
        per_page: query.per_page.unwrap_or(20),
    };
    let search = state
        .search
        .clone()
        .ok_or_else(|| Error::new("not-ready", "the search index is not available"))?;
    let viewer = user.user.id.clone();
    let response = blocking(move || search.search(&request, &viewer).map_err(search_error)).await?;
    Ok(Json(response))
}
