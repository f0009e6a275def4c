//! `/api/files*`: streamed uploads, listing, rename, delete, and the original media with Range.

use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::extract::{ApiJson, AuthUser};
use super::multipart_guard::multipart_error;
use crate::app::{AppState, blocking};
use crate::blobs::{BlobReader, PinnedBlob};
use crate::error::{Error, Result};
pub use crate::services::ingest::{StoredUpload, ingest, sanitize_filename};
use crate::store::records::{Access, FileRecord, FileStatus, UploadOptions};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/files",
            get(list_files)
                .post(upload)
                // The upload enforces its own limit while streaming.
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/files/{id}",
            get(get_file).patch(rename_file).delete(delete_file),
        )
        .route("/api/files/{id}/media", get(media))
}

/// The statuses a file can have, as the API spells them (from [`FileStatus::ALL`]).
pub fn file_statuses() -> Vec<&'static str> {
    FileStatus::ALL.iter().map(|s| s.as_str()).collect()
}

/// A file as the API shows it.
#[derive(Debug, Serialize)]
pub struct FileView {
    pub id: String,
    pub filename: String,
    pub status: String,
    pub progress: f32,
    pub size: u64,
    pub sha256: String,
    pub media_type: String,
    pub duration: Option<f64>,
    pub container: Option<String>,
    pub codec: Option<String>,
    pub created_at: u64,
    pub updated_at: u64,
    pub error: Option<String>,
    pub options: UploadOptions,
    pub tags: Vec<String>,
    /// The caller's access: `owner`, or `editor`/`viewer` through a shared collection.
    pub access: Access,
    /// When retention deleted the media (the transcript stays; media answers 410).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media_deleted_at: Option<u64>,
    /// The transcript's language (file list only, completed files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// How many speakers the transcript has (file list only, completed files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speaker_count: Option<usize>,
}

impl FileView {
    pub fn with_access(record: &FileRecord, access: Access) -> Self {
        Self {
            access,
            ..Self::from(record)
        }
    }
}

impl From<&FileRecord> for FileView {
    fn from(record: &FileRecord) -> Self {
        Self {
            id: record.id.clone(),
            filename: record.filename.clone(),
            status: record.status.to_string(),
            progress: record.progress,
            size: record.size,
            sha256: record.sha256.clone(),
            media_type: record.media_type.clone(),
            duration: record.duration_secs,
            container: record.container.clone(),
            codec: record.codec.clone(),
            created_at: record.created_at,
            updated_at: record.updated_at,
            error: record.error.clone(),
            options: record.options.clone(),
            tags: record.tags.clone(),
            access: Access::Owner,
            media_deleted_at: record.media_deleted_at,
            language: None,
            speaker_count: None,
        }
    }
}

/// Room for multipart boundaries and the small option parts around the file.
pub(crate) const MULTIPART_OVERHEAD: u64 = 1024 * 1024;
/// A client that sends nothing for this long is dropped and its partial upload removed.
pub(crate) const UPLOAD_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
const OPTION_PART_LIMIT: usize = 1024;
/// Bytes gathered before a hand-off to the writer thread; with the channel's 8 slots this
/// bounds an upload's buffered data to about 4 MiB.
const WRITE_BATCH: usize = 512 * 1024;

enum Chunk {
    Data(Bytes),
    Done,
}

pub(crate) fn too_large(limit: u64) -> Error {
    Error::new(
        "payload-too-large",
        format!("upload exceeds the limit of {limit} bytes"),
    )
}

/// What one upload route makes of the small parts around the `file` part.
pub(crate) trait UploadForm {
    /// Whether a part of this name (other than `file`) belongs to the form.
    fn knows(&self, name: &str) -> bool;
    /// A known small (at most 1 KiB) part other than `file`.
    fn option(&mut self, name: &str, value: &str) -> Result<()>;
    /// Checks that must pass before the audio is stored (parts sent before `file`).
    fn before_file(&mut self) -> Result<()> {
        Ok(())
    }
    /// The file name when the `file` part has none.
    fn default_filename(&self) -> &'static str {
        "upload"
    }
}

/// The upload routes' one multipart reader: parts in any order, exactly one `file` part
/// streamed into the blob store, each other part read small and handed to `form`; a stall of
/// `UPLOAD_IDLE_TIMEOUT` or a broken multipart cap ends it. A stored blob whose upload is
/// then refused is removed when its `StoredUpload` drops.
pub(crate) async fn read_upload_form(
    state: &AppState,
    multipart: &mut Multipart,
    limit: u64,
    form: &mut impl UploadForm,
) -> Result<(String, StoredUpload)> {
    let mut stored: Option<(String, StoredUpload)> = None;
    loop {
        let next = tokio::time::timeout(UPLOAD_IDLE_TIMEOUT, multipart.next_field())
            .await
            .map_err(|_| Error::new("invalid-multipart", "upload stalled"))?;
        let field = match next {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(&e)),
        };
        let name = field.name().unwrap_or("").to_owned();
        if name == "file" {
            if stored.is_some() {
                return Err(Error::new(
                    "invalid-multipart",
                    "send one `file` part per upload",
                ));
            }
            form.before_file()?;
            let filename = sanitize_filename(field.file_name().unwrap_or(form.default_filename()));
            let info = stream_to_blob(state, field, limit).await?;
            stored = Some((filename, info));
        } else if form.knows(&name) {
            let text = read_small_field(field).await?;
            form.option(&name, &text)?;
        } else {
            return Err(Error::new(
                "invalid-multipart",
                format!("unknown part `{name}`"),
            ));
        }
    }
    stored.ok_or_else(|| Error::new("missing-file", "the upload has no `file` part"))
}

/// The library upload's options.
struct LibraryForm {
    options: UploadOptions,
}

impl UploadForm for LibraryForm {
    fn knows(&self, name: &str) -> bool {
        matches!(
            name,
            "language"
                | "num_speakers"
                | "min_speakers"
                | "max_speakers"
                | "diarize"
                | "priority"
                | "model"
                | "task"
        )
    }

    fn option(&mut self, name: &str, value: &str) -> Result<()> {
        apply_option(&mut self.options, name, value.trim())
    }
}

async fn upload(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    multipart: std::result::Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<(StatusCode, Json<FileView>)> {
    // A missing or malformed boundary is refused before any of the body is read.
    let mut multipart = multipart.map_err(|e| Error::new("invalid-multipart", e.body_text()))?;
    let limit = state.config.server.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit.saturating_add(MULTIPART_OVERHEAD)) {
        return Err(too_large(limit));
    }
    let mut form = LibraryForm {
        options: UploadOptions {
            diarize: true,
            ..UploadOptions::default()
        },
    };
    let (filename, info) = read_upload_form(&state, &mut multipart, limit, &mut form).await?;
    let options = form.options;
    check_asr_model(&state, &options).await?;
    let record = ingest(&state, &user.user.id, filename, info, options).await?;
    Ok((StatusCode::CREATED, Json(FileView::from(&record))))
}

pub async fn read_small_field(mut field: axum::extract::multipart::Field<'_>) -> Result<String> {
    let mut buffer = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(&e))? {
        buffer.extend_from_slice(&chunk);
        if buffer.len() > OPTION_PART_LIMIT {
            return Err(Error::new("invalid-multipart", "option part too long"));
        }
    }
    String::from_utf8(buffer).map_err(|_| Error::new("invalid-multipart", "option is not UTF-8"))
}

/// Refuses a model that is not a speech-recognition model in the cache, and translation
/// with an English-only one (400, naming the installed models), before a job is queued.
pub(crate) async fn check_asr_model(state: &AppState, options: &UploadOptions) -> Result<()> {
    let name = options
        .model
        .clone()
        .unwrap_or_else(|| state.config.jobs.model.clone());
    if options.model.is_none() && !options.translate {
        return Ok(());
    }
    let cache = crate::models::cache::ModelCache::new(&state.config.models_dir);
    let translate = options.translate;
    blocking(move || {
        cache
            .check_asr_model(&name, translate)
            .map_err(Error::bad_request)
    })
    .await
}

pub fn apply_option(options: &mut UploadOptions, name: &str, value: &str) -> Result<()> {
    let speakers = |value: &str| -> Result<Option<u32>> {
        if value.is_empty() {
            return Ok(None);
        }
        match value.parse::<u32>() {
            Ok(n) if (1..=20).contains(&n) => Ok(Some(n)),
            _ => Err(Error::bad_request(format!(
                "`{name}` must be a whole number from 1 to 20"
            ))),
        }
    };
    match name {
        "language" => {
            let valid = value.is_empty()
                || value == "auto"
                || (value.len() <= 8 && value.chars().all(|c| c.is_ascii_alphabetic()));
            if !valid {
                return Err(Error::bad_request(
                    "`language` must be a language code such as `en`, or `auto`",
                ));
            }
            options.language = (!value.is_empty() && value != "auto").then(|| value.to_lowercase());
        }
        "num_speakers" => options.num_speakers = speakers(value)?,
        "min_speakers" => options.min_speakers = speakers(value)?,
        "max_speakers" => options.max_speakers = speakers(value)?,
        "priority" => {
            options.priority = match value {
                "" | "normal" => 5,
                "high" => 1,
                "low" => 9,
                _ => return Err(Error::bad_request("`priority` must be high, normal or low")),
            }
        }
        // Checked against the model cache once the form is read (check_asr_model).
        "model" => options.model = (!value.is_empty()).then(|| value.to_owned()),
        "task" => {
            options.translate = match value {
                "" | "transcribe" => false,
                "translate" => true,
                _ => return Err(Error::bad_request("`task` must be transcribe or translate")),
            }
        }
        "diarize" => {
            options.diarize = match value {
                "" | "true" | "1" | "yes" | "on" => true,
                "false" | "0" | "no" | "off" => false,
                _ => return Err(Error::bad_request("`diarize` must be true or false")),
            }
        }
        _ => {}
    }
    if let (Some(min), Some(max)) = (options.min_speakers, options.max_speakers)
        && min > max
    {
        return Err(Error::bad_request(
            "`min_speakers` must not exceed `max_speakers`",
        ));
    }
    Ok(())
}

/// Streams one multipart field into the blob store through a bounded channel, so at most a
/// few chunks are in memory. Anything short of a complete field leaves no file behind.
pub(crate) async fn stream_to_blob(
    state: &AppState,
    mut field: axum::extract::multipart::Field<'_>,
    limit: u64,
) -> Result<StoredUpload> {
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Chunk>(8);
    let blobs = state.blobs.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<Option<PinnedBlob>> {
        let mut writer = blobs.begin_write().map_err(blob_error)?;
        while let Some(chunk) = receiver.blocking_recv() {
            match chunk {
                Chunk::Data(bytes) => writer.write_all(&bytes).map_err(io_error)?,
                Chunk::Done => return writer.finish_pinned().map(Some).map_err(blob_error),
            }
        }
        // The sender went away without `Done`: the upload was cut off; dropping the
        // writer removes its temp file.
        Ok(None)
    });
    let mut received: u64 = 0;
    // Small network chunks are gathered into larger writes: fewer thread hand-offs and syscalls.
    let mut pending = bytes::BytesMut::with_capacity(WRITE_BATCH);
    let streamed: Result<()> = async {
        loop {
            let chunk = tokio::time::timeout(UPLOAD_IDLE_TIMEOUT, field.chunk())
                .await
                .map_err(|_| Error::new("invalid-multipart", "upload stalled"))?
                .map_err(|e| multipart_error(&e))?;
            let Some(chunk) = chunk else { break };
            received += chunk.len() as u64;
            if received > limit {
                return Err(too_large(limit));
            }
            pending.extend_from_slice(&chunk);
            if pending.len() >= WRITE_BATCH {
                let batch = pending.split().freeze();
                pending.reserve(WRITE_BATCH);
                if sender.send(Chunk::Data(batch)).await.is_err() {
                    // The writer stopped early; its own error is reported below.
                    return Ok(());
                }
            }
        }
        if !pending.is_empty()
            && sender
                .send(Chunk::Data(pending.split().freeze()))
                .await
                .is_err()
        {
            return Ok(());
        }
        let _ = sender.send(Chunk::Done).await;
        Ok(())
    }
    .await;
    drop(sender);
    let written = writer
        .await
        .map_err(|e| Error::internal("internal", format!("upload writer failed: {e}")))?;
    streamed?;
    match written? {
        Some(blob) => Ok(StoredUpload::new(state, blob)),
        None => Err(Error::new("invalid-multipart", "upload ended early")),
    }
}

fn blob_error(error: crate::blobs::BlobError) -> Error {
    Error::from(error)
}

fn io_error(error: std::io::Error) -> Error {
    if error.raw_os_error() == Some(libc::ENOSPC) || error.kind() == std::io::ErrorKind::StorageFull
    {
        Error::new("disk-full", "the server's disk is full")
    } else {
        Error::internal("blob-io", error)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(default)]
    page: Option<usize>,
    #[serde(default)]
    per_page: Option<usize>,
    #[serde(default)]
    status: Option<String>,
    /// `created` (newest first, the default), `-created`, `name`, `-name`, `size`, `-size`.
    #[serde(default)]
    sort: Option<String>,
    /// Only files carrying this tag.
    #[serde(default)]
    tag: Option<String>,
    /// `own` (the default), `shared` (files shared with the caller), or `all`.
    #[serde(default)]
    scope: Option<String>,
    /// Only files in this collection (the caller must be a member).
    #[serde(default)]
    collection: Option<String>,
}

#[derive(Debug, Serialize)]
struct FileList {
    items: Vec<FileView>,
    total: usize,
    page: usize,
    per_page: usize,
}

async fn list_files(
    State(state): State<AppState>,
    user: AuthUser,
    query: std::result::Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<FileList>> {
    let Query(query) = query.map_err(|e| Error::bad_request(e.body_text()))?;
    let page = query.page.unwrap_or(1).max(1);
    let per_page = query.per_page.unwrap_or(50).clamp(1, 500);
    if let Some(status) = &query.status
        && FileStatus::parse(status).is_none()
    {
        return Err(Error::bad_request(format!(
            "status must be one of {}",
            file_statuses().join(", ")
        )));
    }
    let sort = query.sort.clone().unwrap_or_else(|| "created".to_owned());
    if !matches!(
        sort.as_str(),
        "created" | "-created" | "name" | "-name" | "size" | "-size"
    ) {
        return Err(Error::bad_request(
            "sort must be created, name or size, optionally prefixed with -",
        ));
    }
    let scope = query.scope.clone().unwrap_or_else(|| "own".to_owned());
    if !matches!(scope.as_str(), "own" | "shared" | "all") {
        return Err(Error::bad_request("scope must be own, shared or all"));
    }
    let file_query = crate::services::library::FileQuery {
        page,
        per_page,
        status: query.status.as_deref().and_then(FileStatus::parse),
        sort,
        tag: query.tag.clone(),
        scope,
        collection: query.collection.clone(),
    };
    let store = state.store.clone();
    let (total, items) = blocking(move || -> Result<(usize, Vec<FileView>)> {
        let listed = crate::services::library::list_files(&store, &user.user.id, &file_query)?;
        let mut items = Vec::with_capacity(listed.items.len());
        for (f, access) in &listed.items {
            let mut view = FileView::with_access(f, *access);
            if f.status == FileStatus::Completed
                && let Some(summary) = crate::services::library::transcript_summary(&store, &f.id)?
            {
                view.language = (!summary.language.is_empty()).then_some(summary.language);
                view.speaker_count = Some(summary.speakers.len());
                if view.duration.is_none() && summary.duration > 0.0 {
                    view.duration = Some(summary.duration);
                }
            }
            items.push(view);
        }
        Ok((listed.total, items))
    })
    .await?;
    Ok(Json(FileList {
        items,
        total,
        page,
        per_page,
    }))
}

/// The file if the user may see it: owner, or member of a collection that holds it. Someone
/// with no access gets 404; someone whose role is below `needed` gets 403.
pub(crate) async fn load_file(
    state: &AppState,
    user: &AuthUser,
    id: String,
    needed: Access,
) -> Result<(FileRecord, Access)> {
    let store = state.store.clone();
    let user_id = user.user.id.clone();
    blocking(move || store.file_with_access(&user_id, &id, needed))
        .await?
        .ok_or_else(|| Error::not_found("file"))
}

async fn get_file(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<FileView>> {
    let (record, access) = load_file(&state, &user, id, Access::Viewer).await?;
    Ok(Json(FileView::with_access(&record, access)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rename {
    filename: String,
}

async fn rename_file(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Rename>,
) -> Result<Json<FileView>> {
    let filename = sanitize_filename(&body.filename);
    if body.filename.trim().is_empty() {
        return Err(Error::bad_request("filename must not be empty"));
    }
    let (record, _) = load_file(&state, &user, id, Access::Owner).await?;
    let store = state.store.clone();
    let owner = user.user.id.clone();
    let now = state.clock.now_secs();
    // Only the name changes, on the current record: a worker's status update is never undone.
    let record = blocking(move || {
        store.update_user_file(&owner, &record.id, |file| {
            file.filename = filename;
            file.updated_at = now;
        })
    })
    .await?
    .ok_or_else(|| Error::not_found("file"))?;
    Ok(Json(FileView::from(&record)))
}

async fn delete_file(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    // Members of a shared collection get 403, everyone else but the owner 404.
    load_file(&state, &user, id.clone(), Access::Owner).await?;
    crate::services::files::delete_file(&state, &user.user.id, &id, &user.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A Range header that cannot be served (416).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsatisfiable;

/// A single byte range, resolved against the length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end_inclusive: u64,
}

/// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n`. `Ok(None)`: serve the whole file (no range,
/// or several ranges, which we answer in full). `Err`: unsatisfiable (416).
pub fn parse_range(value: &str, len: u64) -> std::result::Result<Option<ByteRange>, Unsatisfiable> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Err(Unsatisfiable);
    };
    let (first, last) = (first.trim(), last.trim());
    let range = if first.is_empty() {
        let suffix: u64 = last.parse().map_err(|_| Unsatisfiable)?;
        if suffix == 0 || len == 0 {
            return Err(Unsatisfiable);
        }
        ByteRange {
            start: len.saturating_sub(suffix),
            end_inclusive: len - 1,
        }
    } else {
        let start: u64 = first.parse().map_err(|_| Unsatisfiable)?;
        let end = if last.is_empty() {
            len.saturating_sub(1)
        } else {
            let end: u64 = last.parse().map_err(|_| Unsatisfiable)?;
            end.min(len.saturating_sub(1))
        };
        if start >= len
            || (!last.is_empty() && last.parse::<u64>().map_err(|_| Unsatisfiable)? < start)
        {
            return Err(Unsatisfiable);
        }
        ByteRange {
            start,
            end_inclusive: end,
        }
    };
    Ok(Some(range))
}

const READ_CHUNK: usize = 64 * 1024;

async fn media(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    let (record, _) = load_file(&state, &user, id, Access::Viewer).await?;
    if record.media_deleted_at.is_some() {
        return Err(crate::store::StoreError::MediaDeleted.into());
    }
    let blobs = state.blobs.clone();
    let sha = record.sha256.clone();
    let reader = blocking(move || blobs.open_read(&sha).map_err(blob_error)).await?;
    let len = reader.len();
    let etag = format!("\"{}\"", record.sha256);
    let if_range_ok = match headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        None => true,
        Some(value) => value.trim() == etag,
    };
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(value) if if_range_ok => match parse_range(value, len) {
            Ok(range) => range,
            Err(Unsatisfiable) => {
                let mut response = Error::new(
                    "invalid-range",
                    format!("range not satisfiable for {len} bytes"),
                )
                .into_response();
                insert_header(
                    &mut response,
                    header::CONTENT_RANGE,
                    &format!("bytes */{len}"),
                );
                return Ok(response);
            }
        },
        _ => None,
    };
    let (status, start, count) = match range {
        Some(r) => (
            StatusCode::PARTIAL_CONTENT,
            r.start,
            r.end_inclusive - r.start + 1,
        ),
        None => (StatusCode::OK, 0, len),
    };
    let body = stream_blob(reader, start, count);
    let mut response = Response::new(body);
    *response.status_mut() = status;
    insert_header(&mut response, header::CONTENT_TYPE, &record.media_type);
    insert_header(&mut response, header::CONTENT_LENGTH, &count.to_string());
    insert_header(&mut response, header::ACCEPT_RANGES, "bytes");
    insert_header(&mut response, header::ETAG, &etag);
    insert_header(&mut response, header::CACHE_CONTROL, "private, no-cache");
    insert_header(
        &mut response,
        header::CONTENT_DISPOSITION,
        &content_disposition(&record.filename),
    );
    if let Some(r) = range {
        insert_header(
            &mut response,
            header::CONTENT_RANGE,
            &format!("bytes {}-{}/{len}", r.start, r.end_inclusive),
        );
    }
    Ok(response)
}

fn insert_header(response: &mut Response, name: header::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

/// `inline` with an RFC 5987 UTF-8 name; the ASCII fallback has no quotes or controls, so a
/// file name can never inject a header.
pub fn content_disposition(filename: &str) -> String {
    let fallback: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for byte in filename.as_bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(byte) {
            encoded.push(char::from(*byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("inline; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

/// Reads `count` bytes from `start` on a blocking thread and streams them, a chunk at a time.
fn stream_blob(mut reader: BlobReader, start: u64, count: u64) -> Body {
    let (sender, receiver) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = reader.seek(SeekFrom::Start(start)) {
            let _ = sender.blocking_send(Err(e));
            return;
        }
        let mut remaining = count;
        let mut buffer = vec![0u8; READ_CHUNK];
        while remaining > 0 {
            let want = usize::try_from(remaining.min(READ_CHUNK as u64)).unwrap_or(READ_CHUNK);
            let result = match reader.read(&mut buffer[..want]) {
                Ok(0) => Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "blob shorter than recorded",
                )),
                Ok(n) => {
                    remaining -= n as u64;
                    Ok(Bytes::copy_from_slice(&buffer[..n]))
                }
                Err(e) => Err(e),
            };
            let failed = result.is_err();
            // A closed channel means the client went away.
            if sender.blocking_send(result).is_err() || failed {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = |s: &str| parse_range(s, 100);
        assert_eq!(
            r("bytes=0-9"),
            Ok(Some(ByteRange {
                start: 0,
                end_inclusive: 9
            }))
        );
        assert_eq!(
            r("bytes=90-"),
            Ok(Some(ByteRange {
                start: 90,
                end_inclusive: 99
            }))
        );
        assert_eq!(
            r("bytes=-10"),
            Ok(Some(ByteRange {
                start: 90,
                end_inclusive: 99
            }))
        );
        assert_eq!(
            r("bytes=50-1000"),
            Ok(Some(ByteRange {
                start: 50,
                end_inclusive: 99
            }))
        );
        assert_eq!(r("bytes=100-"), Err(Unsatisfiable));
        assert_eq!(r("bytes=9-3"), Err(Unsatisfiable));
        assert_eq!(r("bytes=x-3"), Err(Unsatisfiable));
        assert_eq!(r("bytes=0-1,5-6"), Ok(None));
        assert_eq!(r("items=0-1"), Ok(None));
    }

    #[test]
    fn filenames_are_sanitized() {
        assert_eq!(sanitize_filename("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_filename("C:\\x\\a.wav"), "a.wav");
        assert_eq!(sanitize_filename("a\r\nb.wav"), "ab.wav");
        assert_eq!(sanitize_filename(".."), "upload");
        assert_eq!(sanitize_filename("evil\u{202E}vaw.exe"), "evilvaw.exe");
        let header = content_disposition("a\"b\r\nc é.wav");
        assert!(!header.contains('\r') && !header.contains('\n'));
        assert!(header.contains("filename=\"a_b__c _.wav\""), "{header}");
        assert!(
            header.contains("UTF-8''a%22b%0D%0Ac%20%C3%A9.wav"),
            "{header}"
        );
    }
}
