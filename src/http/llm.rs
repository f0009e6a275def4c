//! The language-model routes: a file's summary (start or re-run, read), questions about a
//! file's transcript, and the caller's own prompt templates. Without `[llm]` the routes that
//! need the model answer 503 `llm-not-configured`; reading a stored summary still works.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::extract::{ApiJson, AuthUser};
use super::files::load_file;
use super::transcripts::load_transcript;
use crate::app::{AppState, blocking};
use crate::error::Result;
use crate::llm::text;
use crate::services::llm as service;
use crate::store::records::Access;
use crate::store::summaries::{NameSuggestion, PromptTemplates, SummaryItem, SummaryRecord};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/files/{id}/summary",
            get(get_summary).post(start_summary),
        )
        .route("/api/files/{id}/ask", post(ask))
        .route(
            "/api/account/llm-prompts",
            get(get_prompts).put(put_prompts),
        )
}

/// A summary as the API shows it; `status` is `none` before the first run.
#[derive(Debug, Serialize)]
struct SummaryView {
    status: String,
    stage: String,
    progress: f32,
    summary: String,
    action_items: Vec<SummaryItem>,
    decisions: Vec<SummaryItem>,
    topics: Vec<SummaryItem>,
    speaker_names: Vec<NameSuggestion>,
    model: Option<String>,
    chunks: usize,
    created_at: Option<u64>,
    finished_at: Option<u64>,
    error: Option<String>,
    /// Whether a language model is configured (the UI shows a hint when not).
    llm_configured: bool,
}

impl SummaryView {
    fn of(record: Option<SummaryRecord>, llm_configured: bool) -> Self {
        let r = record.unwrap_or_else(|| SummaryRecord {
            status: "none".to_owned(),
            ..SummaryRecord::default()
        });
        Self {
            llm_configured,
            model: Some(r.model).filter(|m| !m.is_empty()),
            created_at: Some(r.created_at).filter(|t| *t > 0),
            status: r.status,
            stage: r.stage,
            progress: r.progress,
            summary: r.summary,
            action_items: r.action_items,
            decisions: r.decisions,
            topics: r.topics,
            speaker_names: r.speaker_names,
            chunks: r.chunks,
            finished_at: r.finished_at,
            error: r.error,
        }
    }
}

async fn get_summary(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<SummaryView>> {
    let (file, _) = load_file(&state, &user, id, Access::Viewer).await?;
    let store = state.store.clone();
    let record = blocking(move || store.summary_of(&file.id)).await?;
    Ok(Json(SummaryView::of(record, state.llm.is_some())))
}

/// Starts a summary (or replaces the file's summary with a new run); 202 with the record.
async fn start_summary(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<SummaryView>)> {
    // Who may not see the file gets 404 before anything else; viewers may not replace it.
    let (file, _) = load_file(&state, &user, id, Access::Editor).await?;
    service::llm_of(&state)?;
    let (file, transcript) = load_transcript(&state, &user, file.id).await?;
    let record = service::start_summary(&state, &user.user.id, file, transcript).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(SummaryView::of(Some(record), true)),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Question {
    question: String,
}

async fn ask(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Question>,
) -> Result<Json<service::Answer>> {
    let (file, transcript) = load_transcript(&state, &user, id).await?;
    let answer = service::ask(&state, &file, &transcript, &body.question).await?;
    Ok(Json(answer))
}

fn prompts_view(state: &AppState, templates: &PromptTemplates) -> Value {
    let (map, reduce) = service::templates_for(templates);
    json!({
        "map": map,
        "reduce": reduce,
        "custom": {"map": templates.map.is_some(), "reduce": templates.reduce.is_some()},
        "defaults": {"map": text::DEFAULT_MAP_TEMPLATE, "reduce": text::DEFAULT_REDUCE_TEMPLATE},
        "placeholders": {"map": text::MAP_PLACEHOLDERS, "reduce": text::REDUCE_PLACEHOLDERS},
        "required": {"map": "transcript", "reduce": "notes"},
        "max_chars": text::MAX_TEMPLATE_CHARS,
        "llm_configured": state.llm.is_some(),
    })
}

async fn get_prompts(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>> {
    let store = state.store.clone();
    let templates = blocking(move || store.prompt_templates(&user.user.id)).await?;
    Ok(Json(prompts_view(&state, &templates)))
}

/// Sets the caller's templates; a missing, null or empty template returns to the default.
async fn put_prompts(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<PromptTemplates>,
) -> Result<Json<Value>> {
    let templates = service::check_templates(body)?;
    let store = state.store.clone();
    let saved = templates.clone();
    blocking(move || store.set_prompt_templates(&user.user.id, &saved)).await?;
    Ok(Json(prompts_view(&state, &templates)))
}
