//! Speakers of a file and the user's voice profiles: list, create a profile from a speaker,
//! assign, detach, accept or reject a suggestion, merge two speakers; list, rename and delete
//! profiles. Profile operations belong to the file's owner (profiles are per user); merging
//! speakers is a transcript edit (editors too). Renaming a profile renames it everywhere.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::extract::{ApiJson, AuthUser};
use super::files::load_file;
use crate::app::{AppState, blocking};
use crate::error::{Error, Result};
use crate::store::records::{Access, FileRecord};
use crate::transcript::Transcript;

const MAX_NAME: usize = 200;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/files/{id}/speakers", get(list_speakers))
        .route("/api/files/{id}/speakers/merge", post(merge))
        .route(
            "/api/files/{id}/speakers/{speaker}/profile",
            post(create_profile).put(assign).delete(detach),
        )
        .route(
            "/api/files/{id}/speakers/{speaker}/suggestion",
            post(answer_suggestion),
        )
        .route("/api/profiles", get(list_profiles))
        .route(
            "/api/profiles/{pid}",
            patch(rename_profile).delete(delete_profile),
        )
}

fn clean_name(name: &str) -> Result<String> {
    // Names are one line: no newline or tab, unlike transcript text.
    if name.chars().any(char::is_control) {
        return Err(Error::bad_request(
            "name must not contain control characters",
        ));
    }
    crate::services::collections::check_text(name, "name", MAX_NAME)?;
    Ok(name.trim().to_owned())
}

fn speakers_json(transcript: &Transcript) -> Json<Value> {
    Json(json!({ "speakers": transcript.speakers }))
}

/// Tells the owner's sockets and the search index that a file's speakers changed.
fn changed(state: &AppState, file: &FileRecord) {
    state.files_changed(vec![file.id.clone()]);
    state
        .jobs
        .publish(crate::jobs::FileEvent::edited("speaker.updated", file));
}

async fn list_speakers(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let (_, transcript) = super::transcripts::load_transcript(&state, &user, id).await?;
    Ok(speakers_json(&transcript))
}

/// Runs a profile operation on a file the user owns and answers with its speakers.
async fn owner_op(
    state: &AppState,
    user: &AuthUser,
    id: String,
    needed: Access,
    op: impl FnOnce(crate::store::Store, String, String) -> crate::store::error::Result<Transcript>
    + Send
    + 'static,
) -> Result<Json<Value>> {
    let (file, _) = load_file(state, user, id, needed).await?;
    let store = state.store.clone();
    let owner = user.user.id.clone();
    let file_id = file.id.clone();
    let transcript = blocking(move || op(store, owner, file_id)).await?;
    changed(state, &file);
    Ok(speakers_json(&transcript))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewProfile {
    name: String,
}

async fn create_profile(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, speaker)): Path<(String, String)>,
    ApiJson(body): ApiJson<NewProfile>,
) -> Result<(StatusCode, Json<Value>)> {
    let name = clean_name(&body.name)?;
    let response = owner_op(
        &state,
        &user,
        id,
        Access::Owner,
        move |store, owner, file| {
            store
                .create_profile_from_speaker(&owner, &file, &speaker, &name)
                .map(|(t, _)| t)
        },
    )
    .await?;
    Ok((StatusCode::CREATED, response))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Assign {
    profile_id: String,
}

async fn assign(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, speaker)): Path<(String, String)>,
    ApiJson(body): ApiJson<Assign>,
) -> Result<Json<Value>> {
    owner_op(
        &state,
        &user,
        id,
        Access::Owner,
        move |store, owner, file| store.assign_profile(&owner, &file, &speaker, &body.profile_id),
    )
    .await
}

async fn detach(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, speaker)): Path<(String, String)>,
) -> Result<Json<Value>> {
    owner_op(&state, &user, id, Access::Owner, move |store, _, file| {
        store.detach_profile(&file, &speaker)
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer {
    accept: bool,
}

async fn answer_suggestion(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, speaker)): Path<(String, String)>,
    ApiJson(body): ApiJson<Answer>,
) -> Result<Json<Value>> {
    owner_op(
        &state,
        &user,
        id,
        Access::Owner,
        move |store, owner, file| store.answer_suggestion(&owner, &file, &speaker, body.accept),
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Merge {
    from: String,
    into: String,
}

async fn merge(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Merge>,
) -> Result<Json<Value>> {
    owner_op(&state, &user, id, Access::Editor, move |store, _, file| {
        store.merge_speakers(&file, &body.from, &body.into)
    })
    .await
}

async fn list_profiles(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>> {
    let store = state.store.clone();
    let profiles = blocking(move || store.profile_views(&user.user.id)).await?;
    Ok(Json(json!({ "profiles": profiles })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RenameProfile {
    name: String,
}

async fn rename_profile(
    State(state): State<AppState>,
    user: AuthUser,
    Path(pid): Path<String>,
    ApiJson(body): ApiJson<RenameProfile>,
) -> Result<Json<Value>> {
    let name = clean_name(&body.name)?;
    let store = state.store.clone();
    let owner = user.user.id.clone();
    let shown = name.clone();
    let profile_id = pid.clone();
    let files = blocking(move || store.rename_profile(&owner, &profile_id, &name)).await?;
    state.files_changed(files.clone());
    Ok(Json(
        json!({"id": pid, "name": shown, "files": files.len()}),
    ))
}

async fn delete_profile(
    State(state): State<AppState>,
    user: AuthUser,
    Path(pid): Path<String>,
) -> Result<StatusCode> {
    let store = state.store.clone();
    let owner = user.user.id.clone();
    let files = blocking(move || store.delete_profile(&owner, &pid)).await?;
    state.files_changed(files);
    Ok(StatusCode::NO_CONTENT)
}
