//! Transcripts and jobs over HTTP: read, export, cancel, retry, the admin queue, and the
//! per-user WebSocket of file events.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::extract::{AdminUser, AuthUser};
use super::files::content_disposition;
use crate::app::{AppState, blocking};
use crate::error::{Error, Result};
use crate::store::records::Access;
use crate::transcript::Transcript;
use crate::transcript::export::{Format, render_bytes};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/files/{id}/transcript", get(transcript))
        .route("/api/files/{id}/export", get(export))
        .route("/api/files/{id}/cancel", post(cancel))
        .route("/api/files/{id}/retry", post(retry))
        .route("/api/files/{id}/reprocess", post(reprocess))
        .route("/api/admin/jobs", get(admin_jobs))
        .route("/api/admin/jobs/{id}/cancel", post(admin_cancel))
        .route("/api/admin/jobs/{id}/retry", post(admin_retry))
        .route("/api/ws", get(websocket))
}

/// The transcript of a file the user may see (owner, or a member of a collection holding it).
pub(crate) async fn load_transcript(
    state: &AppState,
    user: &AuthUser,
    id: String,
) -> Result<(crate::store::records::FileRecord, Transcript)> {
    let (file, _) = super::files::load_file(state, user, id, Access::Viewer).await?;
    let store = state.store.clone();
    let file_id = file.id.clone();
    match blocking(move || store.transcript_of::<Transcript>(&file_id)).await? {
        Some(transcript) => Ok((file, transcript)),
        // Deleted between the two reads: the file is gone, not unready.
        None if super::files::load_file(state, user, file.id.clone(), Access::Viewer)
            .await
            .is_err() =>
        {
            Err(Error::not_found("file"))
        }
        None => Err(Error::new(
            "transcript-not-ready",
            format!("the file is {}; its transcript is not ready", file.status),
        )),
    }
}

async fn transcript(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Transcript>> {
    let (_, transcript) = load_transcript(&state, &user, id).await?;
    Ok(Json(transcript))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    format: String,
    #[serde(default)]
    speakers: Option<bool>,
}

async fn export(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    query: std::result::Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let Query(query) = query.map_err(|e| Error::bad_request(e.body_text()))?;
    let format = Format::parse(&query.format)
        .ok_or_else(|| Error::bad_request("format must be srt, vtt, txt, json, csv, md or docx"))?;
    let (file, transcript) = load_transcript(&state, &user, id).await?;
    let filename = file.filename;
    let body = render_bytes(&transcript, format, query.speakers.unwrap_or(true));
    let stem = filename
        .rsplit_once('.')
        .map(|(stem, _)| stem.to_owned())
        .unwrap_or(filename);
    let extension = format.extension();
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.media_type()),
    );
    let disposition =
        content_disposition(&format!("{stem}.{extension}")).replacen("inline", "attachment", 1);
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

async fn cancel(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>> {
    cancel_for(&state, user.user.id.clone(), id).await
}

async fn cancel_for(
    state: &AppState,
    owner: String,
    id: String,
) -> Result<Json<serde_json::Value>> {
    let store = state.store.clone();
    let file_id = id.clone();
    let owner_id = owner.clone();
    let now = state.clock.now_secs();
    let status = blocking(move || store.cancel_job(&owner_id, &file_id, now))
        .await?
        .ok_or_else(|| Error::not_found("file"))?;
    state.jobs.publish(crate::jobs::FileEvent::cancelling(
        &owner,
        &id,
        status.as_str(),
    ));
    Ok(Json(json!({"id": id, "status": status})))
}
async fn retry(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>> {
    retry_for(&state, user.user.id.clone(), id).await
}

async fn retry_for(state: &AppState, owner: String, id: String) -> Result<Json<serde_json::Value>> {
    let store = state.store.clone();
    let file_id = id.clone();
    let now = state.clock.now_secs();
    let status = blocking(move || store.retry_job(&owner, &file_id, now))
        .await?
        .ok_or_else(|| Error::not_found("file"))?;
    state.jobs.wake.notify();
    Ok(Json(json!({"id": id, "status": status})))
}

/// The owner of any file, for the admin's queue actions.
async fn owner_of(state: &AppState, id: &str) -> Result<String> {
    let store = state.store.clone();
    let file_id = id.to_owned();
    blocking(move || store.get_file(&file_id))
        .await?
        .map(|f| f.owner_id)
        .ok_or_else(|| Error::not_found("file"))
}

async fn admin_cancel(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>> {
    let owner = owner_of(&state, &id).await?;
    cancel_for(&state, owner, id).await
}

async fn admin_retry(
    State(state): State<AppState>,
    _admin: AdminUser,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>> {
    let owner = owner_of(&state, &id).await?;
    retry_for(&state, owner, id).await
}
async fn admin_jobs(
    State(state): State<AppState>,
    _admin: AdminUser,
) -> Result<Json<serde_json::Value>> {
    let store = state.store.clone();
    let (jobs, names, users) = blocking(move || {
        let jobs = store.list_jobs()?;
        let mut names = std::collections::HashMap::new();
        for job in &jobs {
            if let Some(file) = store.get_file(&job.file_id)? {
                names.insert(job.file_id.clone(), file.filename);
            }
        }
        let users: std::collections::HashMap<String, String> = store
            .list_users()?
            .into_iter()
            .map(|u| (u.id, u.username))
            .collect();
        Ok::<_, Error>((jobs, names, users))
    })
    .await?;
    let items: Vec<serde_json::Value> = jobs
        .iter()
        .map(|j| {
            json!({
                "file_id": j.file_id, "owner_id": j.owner_id, "state": j.state,
                "filename": names.get(&j.file_id), "owner_username": users.get(&j.owner_id),
                "attempts": j.attempts, "stage": j.stage, "progress": j.progress,
                "stage_seconds": j.stage_seconds,
                "error": j.error, "created_at": j.created_at, "updated_at": j.updated_at,
            })
        })
        .collect();
    let count = |state: &str| jobs.iter().filter(|j| j.state.as_str() == state).count();
    Ok(Json(json!({
        "items": items,
        "counts": {"queued": count("queued"), "running": count("running"), "done": count("done"),
                   "failed": count("failed"), "cancelled": count("cancelled")},
    })))
}

/// Cross-site WebSocket hijacking guard: a browser always sends Origin on a WebSocket
/// handshake, and it must be this host.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    origin
        .strip_prefix("https://")
        .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
}

async fn websocket(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !same_origin(&headers) {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"code": "forbidden", "message": "cross-origin WebSocket"})),
        )
            .into_response();
    }
    let events = state.jobs.events.subscribe();
    upgrade.on_upgrade(move |socket| forward_events(socket, events, state, user))
}

/// Whether the credential a socket was opened with is still valid (not logged out, expired,
/// revoked or disabled); checked periodically so a socket does not outlive its session.
async fn still_valid(state: &AppState, user: &AuthUser) -> bool {
    let store = state.store.clone();
    let auth = state.config.auth.clone();
    let credential = user.credential.clone();
    let user_id = user.user.id.clone();
    let now = state.clock.now_secs();
    blocking(move || {
        let enabled = store.get_user(&user_id)?.is_some_and(|u| !u.disabled);
        let live = match &credential {
            super::extract::Credential::SessionCookie { token_hash }
            | super::extract::Credential::SessionBearer { token_hash } => {
                store.get_session(token_hash)?.is_some_and(|s| {
                    now.saturating_sub(s.last_seen_at) <= auth.session_idle_timeout_secs
                        && now.saturating_sub(s.created_at) <= auth.session_absolute_timeout_secs
                })
            }
            super::extract::Credential::ApiToken { token_id } => store
                .list_api_tokens(&user_id)?
                .iter()
                .any(|t| &t.id == token_id),
        };
        Ok::<_, Error>(enabled && live)
    })
    .await
    .unwrap_or(false)
}

const REVALIDATE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

async fn forward_events(
    mut socket: WebSocket,
    mut events: tokio::sync::broadcast::Receiver<crate::jobs::FileEvent>,
    state: AppState,
    user: AuthUser,
) {
    let user_id = user.user.id.clone();
    let mut revalidate = tokio::time::interval(REVALIDATE_EVERY);
    revalidate.tick().await;
    let hello = json!({"type": "hello"}).to_string();
    if socket.send(Message::Text(hello.into())).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            _ = revalidate.tick() => {
                if !still_valid(&state, &user).await {
                    let _ = socket.send(Message::Close(None)).await;
                    break;
                }
            }
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            event = events.recv() => match event {
                Ok(event) if event.owner_id == user_id => {
                    let Ok(text) = serde_json::to_string(&event) else { continue };
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Events were dropped: the client should refetch the file list.
                    let text = json!({"type": "resync"}).to_string();
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        break;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Reprocess {
    /// `["diarize"]`: find speakers again and relabel the transcript; empty or absent: run
    /// everything again.
    #[serde(default)]
    stages: Vec<String>,
    #[serde(default)]
    language: Option<String>,
    #[serde(default)]
    num_speakers: Option<u32>,
    #[serde(default)]
    min_speakers: Option<u32>,
    #[serde(default)]
    max_speakers: Option<u32>,
    #[serde(default)]
    diarize: Option<bool>,
}

/// Runs chosen stages of a finished file again with new options, e.g. another speaker count
/// without transcribing again. Owners only.
async fn reprocess(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    super::extract::ApiJson(body): super::extract::ApiJson<Reprocess>,
) -> Result<Json<serde_json::Value>> {
    for stage in &body.stages {
        if stage != "diarize" {
            return Err(Error::bad_request(
                "stages may be [\"diarize\"] (relabel speakers) or empty (everything)",
            ));
        }
    }
    let (file, _) = super::files::load_file(&state, &user, id.clone(), Access::Owner).await?;
    let mut options = file.options.clone();
    let set = |options: &mut crate::store::records::UploadOptions, name: &str, value: String| {
        super::files::apply_option(options, name, &value)
    };
    if let Some(language) = body.language {
        set(&mut options, "language", language)?;
    }
    for (name, value) in [
        ("num_speakers", body.num_speakers),
        ("min_speakers", body.min_speakers),
        ("max_speakers", body.max_speakers),
    ] {
        if let Some(n) = value {
            set(&mut options, name, n.to_string())?;
        }
    }
    if let Some(diarize) = body.diarize {
        options.diarize = diarize;
    }
    if !body.stages.is_empty() && !options.diarize {
        return Err(Error::bad_request("re-diarizing needs diarize to be on"));
    }
    let store = state.store.clone();
    let owner = user.user.id.clone();
    let file_id = id.clone();
    let stages = body.stages.clone();
    let now = state.clock.now_secs();
    let status = blocking(move || store.reprocess_job(&owner, &file_id, stages, options, now))
        .await?
        .ok_or_else(|| Error::not_found("file"))?;
    state
        .jobs
        .publish(crate::jobs::FileEvent::requeued(&file, status.as_str()));
    state.jobs.wake.notify();
    Ok(Json(
        json!({"id": id, "status": status, "stages": body.stages}),
    ))
}
