//! Ingest: the one path by which media enters the library, shared by the upload route, the
//! OpenAI-compatible route and the watch folder. A stored upload ([`StoredUpload`]) becomes a
//! file record with its queued job, or is refused (not media) and leaves nothing behind.

use crate::app::{AppState, blocking};
use crate::blobs::{BlobInfo, PinnedBlob};
use crate::error::{Error, Result};
use crate::jobs::FileEvent;
use crate::media::probe::{self, MediaInfo};
use crate::pipeline::BlobSource;
use crate::store::records::{FileRecord, UploadOptions};

/// Bidirectional overrides and isolates: they make `evil\u{202E}vaw.exe` display as
/// `evilexe.wav`.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Keeps the last path component, drops control and bidi-override characters, caps the length.
pub fn sanitize_filename(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && !is_bidi_control(*c))
        .take(200)
        .collect::<String>()
        .trim()
        .to_owned();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        "upload".to_owned()
    } else {
        cleaned
    }
}

/// An upload's stored blob until its file record is committed. Dropped unrecorded (a later
/// part was refused, the client went away, the content is not media), its blob is removed
/// unless something else refers to it, so a refused upload leaves nothing behind.
pub struct StoredUpload {
    blob: Option<PinnedBlob>,
    state: AppState,
}

impl StoredUpload {
    pub fn new(state: &AppState, blob: PinnedBlob) -> Self {
        StoredUpload {
            blob: Some(blob),
            state: state.clone(),
        }
    }
}

impl Drop for StoredUpload {
    fn drop(&mut self) {
        let Some(blob) = self.blob.take() else {
            return;
        };
        let (store, blobs) = (self.state.store.clone(), self.state.blobs.clone());
        let discard = move || {
            let sha = blob.info.sha256.clone();
            drop(blob.pin);
            if let Err(e) = blobs.remove_unreferenced(&sha, || {
                store
                    .blob_ref_count(&sha)
                    .map_err(crate::error::Error::from)
            }) {
                tracing::warn!(error = %e, "could not remove a refused upload's blob; the sweep will");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(discard)),
            Err(_) => discard(),
        }
    }
}

/// Turns a stored upload into a file record with its queued job (one transaction), tells the
/// owner's event sockets and wakes a worker. Refuses content that is not media. The blob stays
/// pinned until its reference is committed; on any failure it is removed unless something else
/// refers to it, so an acknowledged upload always has its bytes and a refused one leaves none.
pub async fn ingest(
    state: &AppState,
    owner_id: &str,
    filename: String,
    mut upload: StoredUpload,
    options: UploadOptions,
) -> Result<FileRecord> {
    let Some(blob) = upload.blob.take() else {
        return Err(Error::internal("internal", "upload already recorded"));
    };
    let sha = blob.info.sha256.clone();
    let outcome = ingest_pinned(state, owner_id, filename, blob, options).await;
    if outcome.is_err() {
        let store = state.store.clone();
        let blobs = state.blobs.clone();
        let cleanup = blocking(move || {
            blobs.remove_unreferenced(&sha, || {
                store
                    .blob_ref_count(&sha)
                    .map_err(crate::error::Error::from)
            })
        })
        .await;
        if let Err(e) = cleanup {
            tracing::warn!(error = %e, "could not remove a refused upload's blob; the sweep will");
        }
    }
    outcome
}

async fn ingest_pinned(
    state: &AppState,
    owner_id: &str,
    filename: String,
    blob: PinnedBlob,
    options: UploadOptions,
) -> Result<FileRecord> {
    let PinnedBlob { info, pin } = blob;
    let media = sniff(state, &info).await?;
    let now = state.clock.now_secs();
    let record = FileRecord {
        id: uuid::Uuid::now_v7().to_string(),
        owner_id: owner_id.to_owned(),
        filename,
        size: info.size,
        sha256: info.sha256.clone(),
        media_type: media.media_type.clone(),
        status: crate::store::records::FileStatus::Queued,
        progress: 0.0,
        created_at: now,
        updated_at: now,
        options,
        error: None,
        duration_secs: media.duration_secs,
        container: Some(media.container),
        codec: Some(media.codec),
        tags: Vec::new(),
        media_deleted_at: None,
    };
    let store = state.store.clone();
    let inserted = record.clone();
    let inserted_owner = record.owner_id.clone();
    // The pin moves into the blocking task, so it outlives the commit even if this request
    // is dropped meanwhile.
    let owner_name = blocking(move || {
        let inserted = store.insert_file(&inserted);
        drop(pin);
        inserted?;
        Ok::<_, Error>(store.get_user(&inserted_owner)?.map(|u| u.username))
    })
    .await?;
    tracing::info!(file_id = %record.id, size = record.size, "file uploaded");
    let actor = crate::services::audit::Actor {
        id: Some(record.owner_id.clone()),
        name: owner_name,
        ip: None,
    };
    let detail = format!("{} ({} bytes)", record.filename, record.size);
    crate::services::audit::record(state, &actor, "file.create", Some(&record.id), Some(detail))
        .await;
    state.jobs.publish(FileEvent::created(&record));
    state.jobs.wake.notify();
    Ok(record)
}

/// Decides by content whether the upload is media (the caller drops a refused blob).
async fn sniff(state: &AppState, info: &BlobInfo) -> Result<MediaInfo> {
    let blobs = state.blobs.clone();
    let sha = info.sha256.clone();
    blocking(move || {
        let reader = blobs.open_read(&sha).map_err(Error::from)?;
        probe::probe(Box::new(BlobSource::new(reader))).map_err(|e| {
            Error::new(
                "unsupported-media",
                format!("not decodable audio or video: {e}"),
            )
        })
    })
    .await
}
