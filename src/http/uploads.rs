//! `/api/uploads*`: resumable uploads and browser recordings (protocol in docs/uploads.md).
//! The handlers parse headers and bodies; `services::uploads` does the rest.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, AuthUser};
use super::files::{FileView, apply_option, check_asr_model};
use crate::app::AppState;
use crate::error::{Error, Result};
use crate::services::uploads::{self, NewUpload};
use crate::store::records::UploadOptions;
use crate::store::uploads::{UploadKind, UploadRecord, UploadState};

/// The header that carries an offset, both ways.
pub const UPLOAD_OFFSET: &str = "upload-offset";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/uploads", post(create))
        .route(
            "/api/uploads/{id}",
            get(status)
                .patch(append)
                .delete(abort)
                // A chunk is streamed to disk under the upload limit, never read whole.
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/api/uploads/{id}/complete", post(complete))
}

/// Whether a request is a chunk (`PATCH /api/uploads/{id}`), whose body the handler streams.
pub fn is_chunk_request(method: &axum::http::Method, path: &str) -> bool {
    method == axum::http::Method::PATCH
        && path
            .strip_prefix("/api/uploads/")
            .is_some_and(|id| !id.is_empty() && !id.contains('/'))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    /// The file name the finished file gets.
    name: String,
    /// The whole size in bytes, if known (a file); a recording leaves it out.
    #[serde(default)]
    size: Option<u64>,
    /// `file` (the default) or `recording`.
    #[serde(default)]
    kind: Option<String>,
    /// The multipart upload's options (`language`, `num_speakers`, `min_speakers`,
    /// `max_speakers`, `diarize`, `priority`, `model`, `task`), as strings.
    #[serde(default)]
    options: BTreeMap<String, String>,
}

/// A session as the API shows it.
#[derive(Debug, Serialize)]
struct UploadView {
    id: String,
    filename: String,
    kind: UploadKind,
    size: Option<u64>,
    offset: u64,
    state: UploadState,
    /// The file it became, once completed.
    file_id: Option<String>,
    created_at: u64,
    updated_at: u64,
}

impl From<&UploadRecord> for UploadView {
    fn from(record: &UploadRecord) -> Self {
        Self {
            id: record.id.clone(),
            filename: record.filename.clone(),
            kind: record.kind,
            size: record.total,
            offset: record.offset,
            state: record.state,
            file_id: record.file_id.clone(),
            created_at: record.created_at,
            updated_at: record.updated_at,
        }
    }
}

/// The session as JSON with its offset in `Upload-Offset`; never cached.
fn session_response(status: StatusCode, record: &UploadRecord) -> Response {
    let mut response = (status, Json(UploadView::from(record))).into_response();
    let headers = response.headers_mut();
    headers.insert(UPLOAD_OFFSET, HeaderValue::from(record.offset));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(location) = HeaderValue::from_str(&format!("/api/uploads/{}", record.id)) {
        headers.insert(header::LOCATION, location);
    }
    response
}

async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(request): ApiJson<CreateRequest>,
) -> Result<Response> {
    let kind = match request.kind.as_deref() {
        None | Some("file") => UploadKind::File,
        Some("recording") => UploadKind::Recording,
        Some(_) => return Err(Error::bad_request("`kind` must be file or recording")),
    };
    if request.name.trim().is_empty() {
        return Err(Error::bad_request("`name` must not be empty"));
    }
    let mut options = UploadOptions {
        diarize: true,
        ..UploadOptions::default()
    };
    for (name, value) in &request.options {
        if !matches!(
            name.as_str(),
            "language"
                | "num_speakers"
                | "min_speakers"
                | "max_speakers"
                | "diarize"
                | "priority"
                | "model"
                | "task"
        ) {
            return Err(Error::bad_request(format!("unknown option `{name}`")));
        }
        apply_option(&mut options, name, value.trim())?;
    }
    check_asr_model(&state, &options).await?;
    let record = uploads::create(
        &state,
        &user.user.id,
        NewUpload {
            filename: request.name,
            total: request.size,
            kind,
            options,
        },
    )
    .await?;
    Ok(session_response(StatusCode::CREATED, &record))
}

async fn status(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Response> {
    let record = uploads::get(&state, &user.user.id, &id).await?;
    Ok(session_response(StatusCode::OK, &record))
}

async fn append(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let offset = headers
        .get(UPLOAD_OFFSET)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let Some(offset) = offset else {
        // Someone else's session is not found, whatever the headers say.
        uploads::get(&state, &user.user.id, &id).await?;
        return Err(Error::bad_request(
            "send the chunk's offset as a whole number in the `Upload-Offset` header",
        ));
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let record = uploads::append(
        &state,
        &user.user.id,
        &id,
        offset,
        declared,
        body.into_data_stream(),
    )
    .await?;
    Ok(session_response(StatusCode::OK, &record))
}

async fn complete(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<FileView>)> {
    let done = uploads::complete(&state, &user.user.id, &id).await?;
    Ok((StatusCode::OK, Json(FileView::from(&done.file))))
}

async fn abort(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    uploads::abort(&state, &user.user.id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
