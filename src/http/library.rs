//! Working with transcripts and organising files: segment edits, speaker names, tags,
//! collections shared with other users, comments pinned to a time, analytics, and a ZIP of
//! several files' exports.
//!
//! Access: viewers of a shared file may read it and comment; editors may also correct the
//! transcript; only the owner tags, renames, deletes or shares. No access at all is 404.

use std::io::Write;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, patch, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::extract::{ApiJson, AuthUser};
use super::files::{FileView, load_file};
use super::transcripts::load_transcript;
use crate::app::{AppState, blocking};
use crate::error::{Error, Result};
use crate::services::collections::{self, MAX_NAME, MAX_TEXT, check_text};
use crate::store::library::CollectionView;
use crate::store::records::{Access, CommentRecord};
use crate::transcript::Transcript;
use crate::transcript::analytics::{Analytics, analyze};
use crate::transcript::export::{Format, render_bytes};

const MAX_TAGS: usize = 50;
/// Files in one ZIP download; each export is small, the whole archive is built in memory.
const MAX_ZIP_FILES: usize = 500;
/// Rendered exports in one ZIP, before compression (it is built in memory).
const MAX_ZIP_BYTES: usize = 64 << 20;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/files/{id}/segments/{segment}", patch(edit_segment))
        .route("/api/files/{id}/speakers/{speaker}", patch(rename_speaker))
        .route(
            "/api/files/{id}/segments/{segment}/words/{word}",
            patch(edit_word),
        )
        .route("/api/files/{id}/tags", put(set_tags))
        .route("/api/tags", get(list_tags))
        .route("/api/files/{id}/analytics", get(analytics))
        .route("/api/files/{id}/waveform", get(waveform))
        .route(
            "/api/files/{id}/comments",
            get(list_comments).post(add_comment),
        )
        .route("/api/files/{id}/comments/{comment}", delete(delete_comment))
        .route(
            "/api/collections",
            get(list_collections).post(create_collection),
        )
        .route(
            "/api/collections/{cid}",
            get(get_collection)
                .patch(update_collection)
                .delete(delete_collection),
        )
        .route(
            "/api/collections/{cid}/files/{id}",
            put(add_to_collection).delete(remove_from_collection),
        )
        .route("/api/collections/{cid}/shares", put(share_collection))
        .route(
            "/api/collections/{cid}/shares/{user}",
            delete(unshare_collection),
        )
        .route("/api/exports/zip", get(export_zip))
}

/// Applies `edit` to the stored transcript of a file the user may edit; publishes
/// `speaker.updated` or `transcript.updated` to the owner's event sockets.
async fn edit_transcript<R: Send + 'static>(
    state: &AppState,
    user: &AuthUser,
    id: String,
    event: &'static str,
    edit: impl FnOnce(&mut Transcript) -> Result<R> + Send + 'static,
) -> Result<(Transcript, R)> {
    let (file, _) = load_file(state, user, id, Access::Editor).await?;
    let store = state.store.clone();
    let file_id = file.id.clone();
    let outcome = blocking(move || {
        store.update_transcript::<Transcript, R, crate::error::Error>(&file_id, edit)
    })
    .await?
    .ok_or_else(|| {
        Error::new(
            "transcript-not-ready",
            format!("the file is {}; its transcript is not ready", file.status),
        )
    })?;
    state.files_changed(vec![file.id.clone()]);
    state
        .jobs
        .publish(crate::jobs::FileEvent::edited(event, &file));
    Ok(outcome)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SegmentEdit {
    #[serde(default)]
    text: Option<String>,
    /// A speaker id of this transcript; `null` clears the speaker.
    #[serde(default, with = "double_option")]
    speaker: Option<Option<String>>,
}

/// Tells a missing field (`None`) from an explicit `null` (`Some(None)`).
mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        Option::<T>::deserialize(deserializer).map(Some)
    }
}

async fn edit_segment(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, segment)): Path<(String, usize)>,
    ApiJson(body): ApiJson<SegmentEdit>,
) -> Result<Json<Value>> {
    if body.text.is_none() && body.speaker.is_none() {
        return Err(Error::bad_request("send `text`, `speaker` or both"));
    }
    if let Some(text) = &body.text {
        check_text(text, "text", MAX_TEXT)?;
    }
    let event = if body.speaker.is_some() {
        "speaker.updated"
    } else {
        "transcript.updated"
    };
    let (_, edited) = edit_transcript(&state, &user, id, event, move |t: &mut Transcript| {
        if let Some(Some(speaker)) = &body.speaker
            && !t.speakers.iter().any(|s| &s.id == speaker)
        {
            return Err(Error::bad_request(format!(
                "speaker `{speaker}` is not in this transcript"
            )));
        }
        let seg = t
            .segments
            .iter_mut()
            .find(|s| s.id == segment)
            .ok_or_else(|| Error::not_found("segment"))?;
        if let Some(text) = body.text {
            let text = text.trim().to_owned();
            if text != seg.text.trim() {
                if seg.original_text.is_none() {
                    seg.original_text = Some(seg.text.clone());
                }
                seg.text = text;
                seg.edited = true;
            }
        }
        if let Some(speaker) = body.speaker {
            seg.speaker = speaker;
        }
        Ok(seg.clone())
    })
    .await?;
    Ok(Json(json!(edited)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WordEdit {
    /// A speaker id of this transcript.
    speaker: String,
}

/// Reassigns one word's speaker (for a word labelled wrongly at a speaker change).
async fn edit_word(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, segment, word)): Path<(String, usize, usize)>,
    ApiJson(body): ApiJson<WordEdit>,
) -> Result<Json<Value>> {
    let (_, edited) = edit_transcript(
        &state,
        &user,
        id,
        "speaker.updated",
        move |t: &mut Transcript| {
            if !t.speakers.iter().any(|s| s.id == body.speaker) {
                return Err(Error::bad_request(format!(
                    "speaker `{}` is not in this transcript",
                    body.speaker
                )));
            }
            let seg = t
                .segments
                .iter_mut()
                .find(|s| s.id == segment)
                .ok_or_else(|| Error::not_found("segment"))?;
            let w = seg
                .words
                .get_mut(word)
                .ok_or_else(|| Error::not_found("word"))?;
            w.speaker = Some(body.speaker);
            Ok(w.clone())
        },
    )
    .await?;
    Ok(Json(json!(edited)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpeakerRename {
    name: Option<String>,
}

async fn rename_speaker(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, speaker)): Path<(String, String)>,
    ApiJson(body): ApiJson<SpeakerRename>,
) -> Result<Json<Value>> {
    let name = match body.name {
        Some(name) if name.trim().is_empty() => None,
        Some(name) => {
            check_text(&name, "name", MAX_NAME)?;
            Some(name.trim().to_owned())
        }
        None => None,
    };
    // A speaker assigned to a voice profile is renamed through its profile, everywhere.
    let (file, access) = load_file(&state, &user, id.clone(), Access::Editor).await?;
    let store = state.store.clone();
    let file_id = file.id.clone();
    let current = blocking(move || store.transcript_of::<Transcript>(&file_id)).await?;
    let profile = current.as_ref().and_then(|t| {
        t.speakers
            .iter()
            .find(|s| s.id == speaker)
            .and_then(|s| s.profile_id.clone())
    });
    if let (Some(profile_id), Some(name)) = (profile, name.clone()) {
        if access != Access::Owner {
            return Err(Error::new(
                "forbidden",
                "this speaker is a voice profile of the file's owner; only they may rename it",
            ));
        }
        let store = state.store.clone();
        let owner = user.user.id.clone();
        let files = blocking(move || store.rename_profile(&owner, &profile_id, &name)).await?;
        state.files_changed(files);
        let store = state.store.clone();
        let transcript = blocking(move || store.transcript_of::<Transcript>(&file.id))
            .await?
            .ok_or_else(|| Error::not_found("transcript"))?;
        let renamed = transcript
            .speakers
            .into_iter()
            .find(|s| s.id == speaker)
            .ok_or_else(|| Error::not_found("speaker"))?;
        return Ok(Json(json!(renamed)));
    }
    let (_, renamed) = edit_transcript(
        &state,
        &user,
        id,
        "speaker.updated",
        move |t: &mut Transcript| {
            let entry = t
                .speakers
                .iter_mut()
                .find(|s| s.id == speaker)
                .ok_or_else(|| Error::not_found("speaker"))?;
            entry.name = name;
            Ok(entry.clone())
        },
    )
    .await?;
    Ok(Json(json!(renamed)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tags {
    tags: Vec<String>,
}

async fn set_tags(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Tags>,
) -> Result<Json<FileView>> {
    if body.tags.len() > MAX_TAGS {
        return Err(Error::bad_request(format!("at most {MAX_TAGS} tags")));
    }
    for tag in &body.tags {
        if !tag.trim().is_empty() {
            check_text(tag, "a tag", 64)?;
        }
    }
    let (file, _) = load_file(&state, &user, id, Access::Owner).await?;
    let store = state.store.clone();
    let record = blocking(move || store.set_tags(&file.id, &body.tags)).await?;
    state.files_changed(vec![record.id.clone()]);
    Ok(Json(FileView::from(&record)))
}

async fn list_tags(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>> {
    let store = state.store.clone();
    let counts = blocking(move || store.tag_counts(&user.user.id)).await?;
    let tags: Vec<Value> = counts
        .into_iter()
        .map(|(tag, count)| json!({"tag": tag, "count": count}))
        .collect();
    Ok(Json(json!({ "tags": tags })))
}

async fn analytics(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Analytics>> {
    let (_, transcript) = load_transcript(&state, &user, id).await?;
    Ok(Json(analyze(&transcript)))
}

/// Peaks for the player, computed while the file was decoded.
async fn waveform(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response> {
    let (file, _) = load_file(&state, &user, id, Access::Viewer).await?;
    let store = state.store.clone();
    let bytes = blocking(move || store.waveform_of(&file.id))
        .await?
        .ok_or_else(|| {
            Error::new(
                "transcript-not-ready",
                "the file has not been processed yet",
            )
        })?;
    let mut response = bytes.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

#[derive(Debug, Serialize)]
struct CommentView {
    #[serde(flatten)]
    record: CommentRecord,
    author: String,
}

async fn comment_views(state: &AppState, file_id: String) -> Result<Vec<CommentView>> {
    let store = state.store.clone();
    blocking(move || {
        let mut names: std::collections::HashMap<String, String> = Default::default();
        let mut out = Vec::new();
        for record in store.list_comments(&file_id)? {
            let author = match names.get(&record.user_id) {
                Some(name) => name.clone(),
                None => {
                    let name = store
                        .get_user(&record.user_id)?
                        .map(|u| u.username)
                        .unwrap_or_else(|| "(deleted user)".to_owned());
                    names.insert(record.user_id.clone(), name.clone());
                    name
                }
            };
            out.push(CommentView { record, author });
        }
        Ok::<_, Error>(out)
    })
    .await
}

async fn list_comments(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let (file, _) = load_file(&state, &user, id, Access::Viewer).await?;
    let comments = comment_views(&state, file.id).await?;
    Ok(Json(json!({ "comments": comments })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewComment {
    time: f64,
    text: String,
}

async fn add_comment(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<NewComment>,
) -> Result<(StatusCode, Json<CommentView>)> {
    check_text(&body.text, "text", MAX_TEXT)?;
    if !body.time.is_finite() || body.time < 0.0 {
        return Err(Error::bad_request("time must be a number of seconds >= 0"));
    }
    let (file, _) = load_file(&state, &user, id, Access::Viewer).await?;
    if let Some(duration) = file.duration_secs
        && body.time > duration + 1.0
    {
        return Err(Error::bad_request(format!(
            "time is past the end of the media ({duration:.1} s)"
        )));
    }
    let record = CommentRecord {
        id: uuid::Uuid::now_v7().to_string(),
        file_id: file.id.clone(),
        user_id: user.user.id.clone(),
        time: body.time,
        text: body.text.trim().to_owned(),
        created_at: state.clock.now_secs(),
    };
    let store = state.store.clone();
    let saved = record.clone();
    blocking(move || store.add_comment(&saved)).await?;
    Ok((
        StatusCode::CREATED,
        Json(CommentView {
            record,
            author: user.user.username.clone(),
        }),
    ))
}

async fn delete_comment(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, comment)): Path<(String, String)>,
) -> Result<StatusCode> {
    let (file, access) = load_file(&state, &user, id, Access::Viewer).await?;
    let store = state.store.clone();
    let user_id = user.user.id.clone();
    blocking(move || {
        let record = store
            .get_comment(&file.id, &comment)?
            .ok_or_else(|| Error::not_found("comment"))?;
        if record.user_id != user_id && access != Access::Owner {
            return Err(Error::new(
                "forbidden",
                "only the author or the file's owner may delete a comment",
            ));
        }
        store.delete_comment(&file.id, &comment)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

// ---- collections ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCollection {
    name: String,
    #[serde(default)]
    description: String,
}

async fn list_collections(State(state): State<AppState>, user: AuthUser) -> Result<Json<Value>> {
    let collections = collections::list(&state, &user.user.id).await?;
    Ok(Json(json!({ "collections": collections })))
}

async fn create_collection(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(body): ApiJson<NewCollection>,
) -> Result<(StatusCode, Json<CollectionView>)> {
    let view = collections::create(&state, &user.user.id, &body.name, &body.description).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn get_collection(
    State(state): State<AppState>,
    user: AuthUser,
    Path(cid): Path<String>,
) -> Result<Json<Value>> {
    let detail = collections::detail(&state, &user.user.id, &cid).await?;
    let views: Vec<FileView> = detail
        .files
        .iter()
        .map(|(file, access)| FileView::with_access(file, *access))
        .collect();
    let record = detail.record;
    Ok(Json(json!({
        "id": record.id,
        "owner_id": record.owner_id,
        "name": record.name,
        "description": record.description,
        "created_at": record.created_at,
        "retention_exempt": record.retention_exempt,
        "role": detail.role,
        "file_count": views.len(),
        "files": views,
        "members": detail.members,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CollectionEdit {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    retention_exempt: Option<bool>,
}

async fn update_collection(
    State(state): State<AppState>,
    user: AuthUser,
    Path(cid): Path<String>,
    ApiJson(body): ApiJson<CollectionEdit>,
) -> Result<Json<CollectionView>> {
    let view = collections::update(
        &state,
        &user.user.id,
        &cid,
        body.name,
        body.description,
        body.retention_exempt,
        &user.actor(),
    )
    .await?;
    Ok(Json(view))
}

async fn delete_collection(
    State(state): State<AppState>,
    user: AuthUser,
    Path(cid): Path<String>,
) -> Result<StatusCode> {
    collections::delete(&state, &user.user.id, &cid).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn add_to_collection(
    State(state): State<AppState>,
    user: AuthUser,
    Path((cid, id)): Path<(String, String)>,
) -> Result<StatusCode> {
    collections::set_file(&state, &user.user.id, &cid, &id, true).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_from_collection(
    State(state): State<AppState>,
    user: AuthUser,
    Path((cid, id)): Path<(String, String)>,
) -> Result<StatusCode> {
    collections::set_file(&state, &user.user.id, &cid, &id, false).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShareRequest {
    username: String,
    /// `viewer` or `editor`.
    role: String,
}

async fn share_collection(
    State(state): State<AppState>,
    user: AuthUser,
    Path(cid): Path<String>,
    ApiJson(body): ApiJson<ShareRequest>,
) -> Result<Json<collections::Member>> {
    let member = collections::share(
        &state,
        &user.user.id,
        &cid,
        &body.username,
        &body.role,
        &user.actor(),
    )
    .await?;
    Ok(Json(member))
}

async fn unshare_collection(
    State(state): State<AppState>,
    user: AuthUser,
    Path((cid, member)): Path<(String, String)>,
) -> Result<StatusCode> {
    collections::unshare(&state, &user.user.id, &cid, &member, &user.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- ZIP of several exports ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ZipQuery {
    /// Comma-separated file ids.
    ids: String,
    format: String,
    #[serde(default)]
    speakers: Option<bool>,
}

async fn export_zip(
    State(state): State<AppState>,
    user: AuthUser,
    query: std::result::Result<Query<ZipQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response> {
    let Query(query) = query.map_err(|e| Error::bad_request(e.body_text()))?;
    let format = Format::parse(&query.format)
        .ok_or_else(|| Error::bad_request("format must be srt, vtt, txt, json, csv, md or docx"))?;
    // Each file once, in the order given.
    let mut seen = std::collections::HashSet::new();
    let ids: Vec<String> = query
        .ids
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty() && seen.insert(*s))
        .map(str::to_owned)
        .collect();
    if ids.is_empty() {
        return Err(Error::bad_request("ids must name at least one file"));
    }
    if ids.len() > MAX_ZIP_FILES {
        return Err(Error::new(
            "payload-too-large",
            format!("a ZIP export holds at most {MAX_ZIP_FILES} files"),
        ));
    }
    let mut total = 0usize;
    let speakers = query.speakers.unwrap_or(true);
    let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
    let mut used = std::collections::HashSet::new();
    for id in ids {
        let (file, transcript) = load_transcript(&state, &user, id).await?;
        let stem = file
            .filename
            .rsplit_once('.')
            .map(|(stem, _)| stem.to_owned())
            .unwrap_or(file.filename.clone());
        let mut name = format!("{stem}.{}", format.extension());
        let mut n = 2;
        while !used.insert(name.clone()) {
            name = format!("{stem} ({n}).{}", format.extension());
            n += 1;
        }
        let body = render_bytes(&transcript, format, speakers);
        total += body.len();
        if total > MAX_ZIP_BYTES {
            return Err(Error::new(
                "payload-too-large",
                format!(
                    "the exports add up to more than {} MiB; ask for fewer files",
                    MAX_ZIP_BYTES >> 20
                ),
            ));
        }
        entries.push((name, body));
    }
    let archive = blocking(move || {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, body) in entries {
            zip.start_file(name, options)
                .map_err(|e| Error::internal("internal", e))?;
            zip.write_all(&body)
                .map_err(|e| Error::internal("internal", e))?;
        }
        let cursor = zip.finish().map_err(|e| Error::internal("internal", e))?;
        Ok::<_, Error>(cursor.into_inner())
    })
    .await?;
    let mut response = archive.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"transcripts.zip\""),
    );
    Ok(response)
}
