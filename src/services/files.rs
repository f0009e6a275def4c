//! Removing files: the owner's delete (`DELETE /api/files/{id}`) and the blob clean-up it
//! shares with retention. The record goes in one store transaction; the blob goes after it,
//! counted again under the blob lifetime lock.

use crate::app::{AppState, blocking};
use crate::error::{Error, Result};
use crate::services::audit::{self, Actor};
use crate::store::records::FileRecord;

/// Removes the blob of a record that is gone (or whose media is), if no file uses it any more.
/// Blocking. A failure leaves an orphan for the start-up sweep.
pub fn remove_blob_if_unused(state: &AppState, record: &FileRecord, remaining: u64) {
    if remaining != 0 {
        return;
    }
    // The count is taken again under the blob lifetime lock: an upload of the same bytes may
    // have pinned or referenced the blob since.
    let store = state.store.clone();
    let sha = record.sha256.clone();
    if let Err(e) = state
        .blobs
        .remove_unreferenced(&sha, || store.blob_ref_count(&sha).map_err(Error::from))
    {
        tracing::warn!(error = %e, "blob removal failed; the start-up sweep will retry");
    }
}

/// The owner deletes a file: record, transcript, job, links and (when unused) the blob.
pub async fn delete_file(
    state: &AppState,
    owner_id: &str,
    file_id: &str,
    actor: &Actor,
) -> Result<FileRecord> {
    let store = state.store.clone();
    let (owner, id) = (owner_id.to_owned(), file_id.to_owned());
    let worker_state = state.clone();
    let record = blocking(move || {
        let (record, remaining) = store
            .delete_user_file(&owner, &id)?
            .ok_or_else(|| Error::not_found("file"))?;
        if record.media_deleted_at.is_none() {
            remove_blob_if_unused(&worker_state, &record, remaining);
        }
        Ok::<_, Error>(record)
    })
    .await?;
    state.jobs.publish(crate::jobs::FileEvent::deleted(&record));
    audit::record(
        state,
        actor,
        "file.delete",
        Some(&record.id),
        Some(record.filename.clone()),
    )
    .await;
    Ok(record)
}
