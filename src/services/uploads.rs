//! Resumable uploads and browser recordings (`/api/uploads`): a session receives its bytes in
//! chunks, each appended at the offset the client names, into `DATA_DIR/uploads/<id>.part`;
//! the offset in redb only moves after the chunk's bytes were fsynced, so a session survives a
//! dropped connection and a daemon restart. Completing it streams the partial file through the
//! blob writer and hands it to [`crate::services::ingest`], exactly like a multipart upload.
//! Housekeeping ([`sweep`]) completes recordings whose chunks stopped (a closed tab) and
//! removes sessions past `[uploads] session_expiry_hours`.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::app::{AppState, blocking};
use crate::error::{Error, Result};
use crate::services::ingest::{StoredUpload, ingest};
use crate::store::records::{FileRecord, UploadOptions};
use crate::store::uploads::{AdvanceRefused, UploadKind, UploadRecord, UploadState};

/// A client that sends nothing for this long in the middle of a chunk is cut off; what
/// arrived until then is kept.
pub const CHUNK_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes gathered before a hand-off to the writer thread (with the channel's 8 slots, about
/// 4 MiB of a chunk are in memory at most).
const WRITE_BATCH: usize = 512 * 1024;

/// Sessions a request is writing to or completing right now: one at a time per session, so
/// two writers can never interleave their bytes in its file. Session ids are random UUIDs, so
/// one set serves every server in the process.
static BUSY: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(|| Mutex::new(HashSet::new()));

/// The right to write to (or complete) one session, until dropped.
struct SessionLock(String);

impl SessionLock {
    fn try_take(id: &str) -> Option<Self> {
        let mut busy = BUSY.lock().unwrap_or_else(|e| e.into_inner());
        busy.insert(id.to_owned())
            .then(|| SessionLock(id.to_owned()))
    }
}

impl Drop for SessionLock {
    fn drop(&mut self) {
        BUSY.lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.0);
    }
}

/// What a client asks for when it opens a session.
#[derive(Debug, Clone)]
pub struct NewUpload {
    pub filename: String,
    pub total: Option<u64>,
    pub kind: UploadKind,
    pub options: UploadOptions,
}

fn uploads_dir(state: &AppState) -> PathBuf {
    state.config.data_dir.join("uploads")
}

fn part_path(state: &AppState, id: &str) -> PathBuf {
    uploads_dir(state).join(format!("{id}.part"))
}

fn not_found() -> Error {
    Error::not_found("upload")
}

fn too_large(limit: u64) -> Error {
    Error::new(
        "payload-too-large",
        format!("upload exceeds the limit of {limit} bytes"),
    )
}

fn io_error(error: std::io::Error) -> Error {
    if error.raw_os_error() == Some(libc::ENOSPC) || error.kind() == std::io::ErrorKind::StorageFull
    {
        Error::new("disk-full", "the server's disk is full")
    } else {
        Error::internal("blob-io", error)
    }
}

/// Refuses `bytes` more when the disk would fall below `[storage] min_free_disk_mb`.
fn check_room(state: &AppState, bytes: u64) -> Result<()> {
    let floor = state
        .config
        .storage
        .min_free_disk_mb
        .saturating_mul(1024 * 1024);
    match crate::fsutil::free_disk_bytes(&state.config.data_dir) {
        Some(free) if free < bytes.saturating_add(floor) => {
            Err(Error::new("disk-full", "the server's disk is full"))
        }
        _ => Ok(()),
    }
}

/// The session, if it exists and belongs to `owner_id` (anyone else's is not found).
async fn owned(state: &AppState, owner_id: &str, id: &str) -> Result<UploadRecord> {
    let store = state.store.clone();
    let key = id.to_owned();
    let record = blocking(move || store.get_upload(&key)).await?;
    match record {
        Some(record) if record.owner_id == owner_id => Ok(record),
        _ => Err(not_found()),
    }
}

/// Opens a session; nothing is written to disk until its first chunk.
pub async fn create(state: &AppState, owner_id: &str, new: NewUpload) -> Result<UploadRecord> {
    let limit = state.config.server.max_upload_bytes;
    if let Some(total) = new.total {
        if total > limit {
            return Err(too_large(limit));
        }
        if total == 0 {
            return Err(Error::bad_request("`size` must be greater than 0"));
        }
        check_room(state, total)?;
    }
    let now = state.clock.now_secs();
    let record = UploadRecord {
        id: uuid::Uuid::now_v7().to_string(),
        owner_id: owner_id.to_owned(),
        filename: crate::services::ingest::sanitize_filename(&new.filename),
        kind: new.kind,
        total: new.total,
        offset: 0,
        options: new.options,
        state: UploadState::Active,
        file_id: None,
        created_at: now,
        updated_at: now,
    };
    let store = state.store.clone();
    let stored = record.clone();
    blocking(move || store.create_upload(&stored)).await?;
    tracing::info!(upload_id = %record.id, kind = ?record.kind, total = ?record.total, "upload session opened");
    Ok(record)
}

/// The caller's session.
pub async fn get(state: &AppState, owner_id: &str, id: &str) -> Result<UploadRecord> {
    owned(state, owner_id, id).await
}

/// A message to the chunk writer thread.
enum ChunkMessage {
    Data(Bytes),
    /// Throw the chunk away (it broke a limit).
    Discard,
}

/// Appends one chunk at `from`, which must be the session's offset (else 409 with the real
/// one). The body is streamed to the session's file; when it ends (or is cut off, or stalls)
/// the bytes that arrived are fsynced and the offset moves past them in one transaction that
/// checks it still is `from`. Runs to the end even if the client goes away meanwhile.
pub async fn append<S, E>(
    state: &AppState,
    owner_id: &str,
    id: &str,
    from: u64,
    declared: Option<u64>,
    body: S,
) -> Result<UploadRecord>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let task = {
        let (state, owner_id, id) = (state.clone(), owner_id.to_owned(), id.to_owned());
        let mut body = body;
        tokio::spawn(async move {
            let result = append_owned(&state, &owner_id, &id, from, declared, &mut body).await;
            if result.is_err() {
                // A refusal's unread body would make the kernel reset the connection and
                // lose the answer; read (and drop) what the client is still sending.
                drain(&mut body).await;
            }
            result
        })
    };
    task.await
        .map_err(|e| Error::internal("internal", format!("upload chunk task failed: {e}")))?
}

/// Reads and drops the rest of a refused chunk: at most 64 MiB, within seconds.
async fn drain<S, E>(body: &mut S)
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Unpin,
{
    let mut drained = 0u64;
    while drained < 64 << 20 {
        match tokio::time::timeout(Duration::from_secs(5), body.next()).await {
            Ok(Some(Ok(chunk))) => drained += chunk.len() as u64,
            _ => break,
        }
    }
}

async fn append_owned<S, E>(
    state: &AppState,
    owner_id: &str,
    id: &str,
    from: u64,
    declared: Option<u64>,
    body: &mut S,
) -> Result<UploadRecord>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let record = owned(state, owner_id, id).await?;
    let id = record.id.clone();
    let Some(_lock) = SessionLock::try_take(&id) else {
        return Err(Error::new(
            "upload-busy",
            "another request is writing to this upload; ask for its offset and try again",
        )
        .with_upload_offset(record.offset));
    };
    // Read again under the lock: another writer may have moved it since.
    let record = {
        let store = state.store.clone();
        let key = id.clone();
        blocking(move || store.get_upload(&key))
            .await?
            .ok_or_else(not_found)?
    };
    if record.state != UploadState::Active {
        return Err(
            Error::new("upload-finished", "this upload was already completed")
                .with_upload_offset(record.offset),
        );
    }
    if record.offset != from {
        return Err(Error::new(
            "upload-offset-mismatch",
            format!(
                "the upload is at offset {}, not {from}; send from there",
                record.offset
            ),
        )
        .with_upload_offset(record.offset));
    }
    check_part(state, &record).await?;
    let limit = state.config.server.max_upload_bytes;
    let cap = record.total.map_or(limit, |total| total.min(limit));
    let over = |end: u64| -> Error {
        match record.total {
            Some(total) if end > total => Error::bad_request(format!(
                "the chunk goes past the upload's declared size of {total} bytes"
            ))
            .with_upload_offset(from),
            _ => too_large(limit).with_upload_offset(from),
        }
    };
    if let Some(length) = declared {
        if from.saturating_add(length) > cap {
            return Err(over(from.saturating_add(length)));
        }
        check_room(state, length).map_err(|e| e.with_upload_offset(from))?;
    }
    let path = part_path(state, &id);
    let dir = uploads_dir(state);
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<ChunkMessage>(8);
    let writer = tokio::task::spawn_blocking(move || -> Result<u64> {
        let mut file = open_part(&dir, &path, from)?;
        let mut written = 0u64;
        let mut buffered = std::io::BufWriter::with_capacity(256 * 1024, &mut file);
        while let Some(message) = receiver.blocking_recv() {
            match message {
                ChunkMessage::Data(bytes) => {
                    buffered.write_all(&bytes).map_err(io_error)?;
                    written += bytes.len() as u64;
                }
                ChunkMessage::Discard => {
                    drop(buffered);
                    file.set_len(from).map_err(io_error)?;
                    return Ok(0);
                }
            }
        }
        buffered.flush().map_err(io_error)?;
        drop(buffered);
        file.sync_data().map_err(io_error)?;
        Ok(written)
    });
    let mut received = 0u64;
    let mut pending = bytes::BytesMut::with_capacity(WRITE_BATCH);
    // What ended the chunk early: a refusal (nothing kept) or a cut (what arrived is kept).
    let mut refusal: Option<Error> = None;
    let mut cut: Option<String> = None;
    loop {
        let next = match tokio::time::timeout(CHUNK_IDLE_TIMEOUT, body.next()).await {
            Ok(next) => next,
            Err(_) => {
                cut = Some("the chunk stalled".to_owned());
                break;
            }
        };
        let chunk = match next {
            None => break,
            Some(Ok(chunk)) => chunk,
            Some(Err(e)) => {
                cut = Some(format!("the chunk was cut off: {e}"));
                break;
            }
        };
        received += chunk.len() as u64;
        if from.saturating_add(received) > cap {
            refusal = Some(over(from.saturating_add(received)));
            break;
        }
        pending.extend_from_slice(&chunk);
        if pending.len() >= WRITE_BATCH {
            let batch = pending.split().freeze();
            if sender.send(ChunkMessage::Data(batch)).await.is_err() {
                break;
            }
        }
    }
    if refusal.is_some() {
        let _ = sender.send(ChunkMessage::Discard).await;
    } else if !pending.is_empty() {
        let _ = sender
            .send(ChunkMessage::Data(pending.split().freeze()))
            .await;
    }
    drop(sender);
    let written = writer
        .await
        .map_err(|e| Error::internal("internal", format!("upload writer failed: {e}")))?
        .map_err(|e| e.with_upload_offset(from))?;
    if let Some(refusal) = refusal {
        return Err(refusal);
    }
    let record = if written > 0 {
        let store = state.store.clone();
        let now = state.clock.now_secs();
        let key = id.clone();
        let advanced =
            blocking(move || store.advance_upload(&key, from, from + written, now)).await?;
        match advanced {
            Ok(record) => record,
            // The lock makes this impossible; say so rather than pretend.
            Err(AdvanceRefused::Mismatch(offset) | AdvanceRefused::Finished(offset)) => {
                return Err(Error::internal(
                    "internal",
                    format!("upload {id} moved to {offset} under its writer's lock"),
                ));
            }
        }
    } else {
        record
    };
    if let Some(why) = cut {
        tracing::info!(upload_id = %id, offset = record.offset, "{why}; the bytes that arrived are kept");
        return Err(Error::bad_request(format!(
            "{why}; the upload continues from offset {}",
            record.offset
        ))
        .with_upload_offset(record.offset));
    }
    Ok(record)
}

/// Opens (creating) the session's file for writing at `from`, dropping anything past it (the
/// unacknowledged tail of a chunk cut off before its fsync). A file shorter than `from` lost
/// acknowledged bytes (a restore from backup, a removed file): refused.
fn open_part(dir: &Path, path: &Path, from: u64) -> Result<File> {
    crate::fsutil::create_private_dir(dir).map_err(io_error)?;
    let created = !path.exists();
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(io_error)?;
    if created && let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
    }
    let length = file.metadata().map_err(io_error)?.len();
    if length < from {
        return Err(Error::new(
            "upload-offset-mismatch",
            "the server lost this upload's data; start it again",
        ));
    }
    if length > from {
        file.set_len(from).map_err(io_error)?;
    }
    file.seek(SeekFrom::Start(from)).map_err(io_error)?;
    Ok(file)
}

/// Bytes the session's file holds (0 when it has none yet).
async fn part_len(state: &AppState, id: &str) -> Result<u64> {
    let path = part_path(state, id);
    blocking(move || match std::fs::metadata(&path) {
        Ok(meta) => Ok(meta.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_error(e)),
    })
    .await
}

/// A session whose file holds fewer bytes than its offset (restored from a backup, which
/// does not copy partial data; a file removed by hand) goes back to what the file holds, and
/// the caller is told to send from there (409 with that offset). Call under the session lock.
async fn check_part(state: &AppState, record: &UploadRecord) -> Result<()> {
    let held = part_len(state, &record.id).await?;
    if held >= record.offset {
        return Ok(());
    }
    let store = state.store.clone();
    let (key, from, now) = (record.id.clone(), record.offset, state.clock.now_secs());
    blocking(move || store.advance_upload(&key, from, held, now))
        .await?
        .ok();
    tracing::warn!(upload_id = %record.id, offset = record.offset, held, "an upload's partial file lost bytes; the session goes back");
    Err(Error::new(
        "upload-offset-mismatch",
        format!("the server lost part of this upload; send it again from offset {held}"),
    )
    .with_upload_offset(held))
}

/// What completing a session gave.
#[derive(Debug)]
pub struct Completed {
    pub upload: UploadRecord,
    pub file: FileRecord,
}

/// Turns the caller's session into a file, like a multipart upload (hash, dedup, media sniff,
/// queued job). Completing a completed session answers its file again.
pub async fn complete(state: &AppState, owner_id: &str, id: &str) -> Result<Completed> {
    let record = owned(state, owner_id, id).await?;
    let task = {
        let state = state.clone();
        tokio::spawn(async move { complete_owned(&state, record).await })
    };
    task.await
        .map_err(|e| Error::internal("internal", format!("upload completion failed: {e}")))?
}

async fn completed_file(state: &AppState, record: UploadRecord) -> Result<Completed> {
    let store = state.store.clone();
    let file_id = record.file_id.clone().unwrap_or_default();
    let file = blocking(move || store.get_file(&file_id))
        .await?
        .ok_or_else(|| Error::not_found("file"))?;
    Ok(Completed {
        upload: record,
        file,
    })
}

async fn complete_owned(state: &AppState, record: UploadRecord) -> Result<Completed> {
    if record.state == UploadState::Completed {
        return completed_file(state, record).await;
    }
    let id = record.id.clone();
    let Some(_lock) = SessionLock::try_take(&id) else {
        return Err(Error::new(
            "upload-busy",
            "a chunk of this upload is still being written; try again",
        )
        .with_upload_offset(record.offset));
    };
    let record = {
        let store = state.store.clone();
        let key = id.clone();
        blocking(move || store.get_upload(&key))
            .await?
            .ok_or_else(not_found)?
    };
    if record.state == UploadState::Completed {
        return completed_file(state, record).await;
    }
    if record.offset == 0 || record.total.is_some_and(|total| record.offset != total) {
        return Err(Error::new(
            "upload-incomplete",
            match record.total {
                Some(total) => format!(
                    "the upload has {} of its {total} bytes; send the rest first",
                    record.offset
                ),
                None => "nothing was uploaded yet".to_owned(),
            },
        )
        .with_upload_offset(record.offset));
    }
    check_part(state, &record).await?;
    check_room(state, record.offset)?;
    let path = part_path(state, &id);
    let blobs = state.blobs.clone();
    let length = record.offset;
    let blob = blocking(move || -> Result<crate::blobs::PinnedBlob> {
        let file = File::open(&path).map_err(io_error)?;
        let mut reader = file.take(length);
        let mut writer = blobs.begin_write().map_err(Error::from)?;
        let mut buffer = vec![0u8; 256 * 1024];
        let mut copied = 0u64;
        loop {
            let n = reader.read(&mut buffer).map_err(io_error)?;
            if n == 0 {
                break;
            }
            writer.write_all(&buffer[..n]).map_err(io_error)?;
            copied += n as u64;
        }
        if copied != length {
            return Err(Error::internal(
                "blob-io",
                format!("upload file holds {copied} of {length} acknowledged bytes"),
            ));
        }
        writer.finish_pinned().map_err(Error::from)
    })
    .await?;
    let stored = StoredUpload::new(state, blob);
    let filename = record.filename.clone();
    let options = record.options.clone();
    match ingest(state, &record.owner_id, filename, stored, options).await {
        Ok(file) => {
            let store = state.store.clone();
            let now = state.clock.now_secs();
            let (key, file_id) = (id.clone(), file.id.clone());
            let upload = blocking(move || store.finish_upload(&key, &file_id, now)).await?;
            remove_part(state, &id).await;
            tracing::info!(upload_id = %id, file_id = %file.id, kind = ?upload.kind, "upload completed");
            Ok(Completed { upload, file })
        }
        Err(e) if e.code == "unsupported-media" => {
            // More bytes cannot make this media: the session ends here.
            forget(state, &id).await;
            Err(e)
        }
        Err(e) => Err(e),
    }
}

async fn remove_part(state: &AppState, id: &str) {
    let path = part_path(state, id);
    let removed = blocking(move || match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(e)),
        _ => Ok(()),
    })
    .await;
    if let Err(e) = removed {
        tracing::warn!(upload_id = %id, error = %e, "could not remove an upload's partial file; housekeeping will");
    }
}

/// Removes a session's record and its partial file.
async fn forget(state: &AppState, id: &str) {
    let store = state.store.clone();
    let key = id.to_owned();
    if let Err(e) = blocking(move || store.remove_upload(&key)).await {
        tracing::warn!(upload_id = %id, error = %e, "could not remove an upload session");
    }
    remove_part(state, id).await;
}

/// Aborts the caller's session (its partial data goes; a file it became stays).
pub async fn abort(state: &AppState, owner_id: &str, id: &str) -> Result<()> {
    let record = owned(state, owner_id, id).await?;
    let Some(_lock) = SessionLock::try_take(id) else {
        return Err(Error::new(
            "upload-busy",
            "a chunk of this upload is still being written; try again",
        )
        .with_upload_offset(record.offset));
    };
    forget(state, id).await;
    tracing::info!(upload_id = %id, "upload session aborted");
    Ok(())
}

/// What one housekeeping pass over the sessions did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Recordings whose chunks stopped, turned into files.
    pub recordings_completed: usize,
    /// Sessions past their expiry (and stray partial files) removed.
    pub removed: usize,
}

/// Housekeeping: completes recordings idle for `[uploads] recording_idle_secs` (the part
/// received becomes a file), forgets sessions idle for `session_expiry_hours`, removes
/// partial files no session owns. Sessions being written right now are left alone.
pub async fn sweep(state: &AppState) -> Result<SweepReport> {
    let store = state.store.clone();
    let records = blocking(move || store.list_uploads()).await?;
    let now = state.clock.now_secs();
    let config = &state.config.uploads;
    let expiry = config.session_expiry_hours.saturating_mul(3600);
    let mut report = SweepReport::default();
    for record in &records {
        let idle = now.saturating_sub(record.updated_at);
        let busy = BUSY
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&record.id);
        if busy {
            continue;
        }
        if record.state == UploadState::Active
            && record.kind == UploadKind::Recording
            && record.offset > 0
            && idle >= config.recording_idle_secs
        {
            match complete_owned(state, record.clone()).await {
                Ok(done) => {
                    tracing::info!(upload_id = %record.id, file_id = %done.file.id, bytes = record.offset, "idle recording completed");
                    report.recordings_completed += 1;
                }
                Err(e) if e.code == "unsupported-media" => {
                    tracing::warn!(upload_id = %record.id, "an idle recording is not decodable media; removed");
                    report.removed += 1;
                }
                Err(e) => {
                    tracing::warn!(upload_id = %record.id, error = %e, "could not complete an idle recording")
                }
            }
            continue;
        }
        if idle >= expiry {
            forget(state, &record.id).await;
            report.removed += 1;
        }
    }
    // Partial files whose session is gone (a crash between the two removals).
    let known: HashSet<String> = records.into_iter().map(|r| r.id).collect();
    let dir = uploads_dir(state);
    let strays = blocking(move || -> Result<Vec<PathBuf>> {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(e)),
        };
        Ok(entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| {
                let id = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".part"));
                id.is_some_and(|id| !known.contains(id))
            })
            .collect())
    })
    .await?;
    for path in strays {
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".part"))
            .unwrap_or_default()
            .to_owned();
        // A session created after the list above is re-checked under its lock.
        let Some(_lock) = SessionLock::try_take(&id) else {
            continue;
        };
        let store = state.store.clone();
        let key = id.clone();
        if blocking(move || store.get_upload(&key)).await?.is_none() {
            remove_part(state, &id).await;
            report.removed += 1;
        }
    }
    Ok(report)
}
