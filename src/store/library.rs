//! A user's library beyond single files: who may see a file (owner or collection shares),
//! collections, comments, tags, and transcript edits. Every method is one redb transaction.
//!
//! Access rule: a user sees a file they own, or a file in a collection shared with them
//! (as `viewer` or `editor`). Anyone else gets `None`, which the API turns into 404.

use std::collections::BTreeMap;

use redb::{ReadableDatabase, ReadableTable};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{Result, StoreError};
use super::records::{Access, CollectionRecord, CommentRecord, FileRecord, Share};
use super::tables::*;
use super::{Store, db_err, decode, encode, now_secs, read_record};

fn pair(a: &str, b: &str) -> String {
    format!("{a}/{b}")
}

/// Keys `prefix/…` of a `&str`-keyed table, as the part after the slash.
fn suffixes<V: redb::Value + 'static>(
    table: &impl ReadableTable<&'static str, V>,
    prefix: &str,
) -> Result<Vec<String>> {
    let start = format!("{prefix}/");
    let end = format!("{prefix}0"); // '0' sorts right after '/'
    let mut out = Vec::new();
    for entry in table.range(start.as_str()..end.as_str()).map_err(db_err)? {
        let (key, _) = entry.map_err(db_err)?;
        if let Some((_, rest)) = key.value().split_once('/') {
            out.push(rest.to_owned());
        }
    }
    Ok(out)
}

/// A collection as one user sees it.
#[derive(Debug, Clone, Serialize)]
pub struct CollectionView {
    #[serde(flatten)]
    pub record: CollectionRecord,
    /// The viewer's role: `owner`, `editor` or `viewer`.
    pub role: Access,
    pub file_count: usize,
}

impl Store {
    /// The file and the user's access to it, or `None` when the user may not see it.
    pub fn file_access(
        &self,
        user_id: &str,
        file_id: &str,
    ) -> Result<Option<(FileRecord, Access)>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let files = txn.open_table(FILES).map_err(db_err)?;
        let Some(file) = read_record::<FileRecord>(&files, file_id)? else {
            return Ok(None);
        };
        if file.owner_id == user_id {
            return Ok(Some((file, Access::Owner)));
        }
        let file_collections = txn.open_table(FILE_COLLECTIONS).map_err(db_err)?;
        let user_collections = txn.open_table(USER_COLLECTIONS).map_err(db_err)?;
        let mut best: Option<Access> = None;
        for collection_id in suffixes(&file_collections, file_id)? {
            if let Some(role) = user_collections
                .get(pair(user_id, &collection_id).as_str())
                .map_err(db_err)?
                && let Some(role) = Access::parse(role.value())
            {
                best = best.max(Some(role.min(Access::Editor)));
            }
        }
        Ok(best.map(|role| (file, role)))
    }

    /// Like [`Store::file_access`], but a role below `needed` is an error (403), while no
    /// access at all stays `None` (404).
    pub fn file_with_access(
        &self,
        user_id: &str,
        file_id: &str,
        needed: Access,
    ) -> Result<Option<(FileRecord, Access)>> {
        match self.file_access(user_id, file_id)? {
            Some((_, role)) if role < needed => Err(StoreError::AccessTooLow(needed.as_str())),
            other => Ok(other),
        }
    }

    /// Ids of every user who may see the file: its owner and the members of collections
    /// that hold it. Search filters on this list.
    pub fn file_readers(&self, file_id: &str) -> Result<Vec<String>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let files = txn.open_table(FILES).map_err(db_err)?;
        let Some(file) = read_record::<FileRecord>(&files, file_id)? else {
            return Ok(Vec::new());
        };
        let collections = txn.open_table(COLLECTIONS).map_err(db_err)?;
        let file_collections = txn.open_table(FILE_COLLECTIONS).map_err(db_err)?;
        let mut readers = vec![file.owner_id.clone()];
        for collection_id in suffixes(&file_collections, file_id)? {
            if let Some(collection) = read_record::<CollectionRecord>(&collections, &collection_id)?
            {
                readers.push(collection.owner_id.clone());
                readers.extend(collection.shares.into_iter().map(|s| s.user_id));
            }
        }
        readers.sort();
        readers.dedup();
        Ok(readers)
    }

    /// Any file by id, without an access check (the indexer and admin paths).
    pub fn get_file(&self, file_id: &str) -> Result<Option<FileRecord>> {
        self.get_json(FILES, file_id)
    }

    /// The stored waveform JSON of a file, without an access check (callers check first).
    pub fn waveform_of(&self, file_id: &str) -> Result<Option<Vec<u8>>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(WAVEFORMS).map_err(db_err)?;
        Ok(table
            .get(file_id)
            .map_err(db_err)?
            .map(|v| v.value().to_vec()))
    }

    /// Every file id, in key order.
    pub fn all_file_ids(&self) -> Result<Vec<String>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let files = txn.open_table(FILES).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in files.iter().map_err(db_err)? {
            let (key, _) = entry.map_err(db_err)?;
            out.push(key.value().to_owned());
        }
        Ok(out)
    }

    /// Ids of the collections that hold the file.
    pub fn file_collections(&self, file_id: &str) -> Result<Vec<String>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(FILE_COLLECTIONS).map_err(db_err)?;
        suffixes(&table, file_id)
    }

    /// The transcript JSON of a file, without an access check (callers check first).
    pub fn transcript_of<T: DeserializeOwned>(&self, file_id: &str) -> Result<Option<T>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(TRANSCRIPTS).map_err(db_err)?;
        read_record(&table, file_id)
    }

    /// Changes a stored transcript in one transaction: reads it, lets `edit` change it, writes
    /// it back and touches the file's `updated_at`. `None` when there is no transcript.
    pub fn update_transcript<T, R, E>(
        &self,
        file_id: &str,
        edit: impl FnOnce(&mut T) -> Result<R, E>,
    ) -> Result<Option<(T, R)>, E>
    where
        T: DeserializeOwned + Serialize,
        E: From<StoreError>,
    {
        let txn = self.db.begin_write().map_err(db_err)?;
        let outcome = {
            let mut transcripts = txn.open_table(TRANSCRIPTS).map_err(db_err)?;
            let Some(mut transcript) = read_record::<T>(&transcripts, file_id)? else {
                return Ok(None);
            };
            let result = edit(&mut transcript)?;
            transcripts
                .insert(file_id, encode(&transcript)?.as_slice())
                .map_err(db_err)?;
            let mut files = txn.open_table(FILES).map_err(db_err)?;
            if let Some(mut file) = read_record::<FileRecord>(&files, file_id)? {
                file.updated_at = now_secs();
                files
                    .insert(file_id, encode(&file)?.as_slice())
                    .map_err(db_err)?;
            }
            (transcript, result)
        };
        txn.commit().map_err(db_err)?;
        Ok(Some(outcome))
    }

    /// Replaces a file's tags (cleaned: trimmed, lower-cased, unique, sorted).
    pub fn set_tags(&self, file_id: &str, tags: &[String]) -> Result<FileRecord> {
        let mut clean: Vec<String> = tags
            .iter()
            .map(|t| t.trim().to_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        clean.sort();
        clean.dedup();
        let txn = self.db.begin_write().map_err(db_err)?;
        let file = {
            let mut files = txn.open_table(FILES).map_err(db_err)?;
            let mut file =
                read_record::<FileRecord>(&files, file_id)?.ok_or(StoreError::NotFound("file"))?;
            file.tags = clean;
            file.updated_at = now_secs();
            files
                .insert(file_id, encode(&file)?.as_slice())
                .map_err(db_err)?;
            file
        };
        txn.commit().map_err(db_err)?;
        Ok(file)
    }

    // ---- collections ----

    pub fn create_collection(&self, record: &CollectionRecord) -> Result<()> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut collections = txn.open_table(COLLECTIONS).map_err(db_err)?;
            collections
                .insert(record.id.as_str(), encode(record)?.as_slice())
                .map_err(db_err)?;
            let mut user_collections = txn.open_table(USER_COLLECTIONS).map_err(db_err)?;
            user_collections
                .insert(pair(&record.owner_id, &record.id).as_str(), "owner")
                .map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    /// The collection and the user's role in it, or `None` if the user is not a member.
    pub fn collection_for(
        &self,
        user_id: &str,
        collection_id: &str,
    ) -> Result<Option<(CollectionRecord, Access)>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let user_collections = txn.open_table(USER_COLLECTIONS).map_err(db_err)?;
        let Some(role) = user_collections
            .get(pair(user_id, collection_id).as_str())
            .map_err(db_err)?
            .and_then(|v| Access::parse(v.value()))
        else {
            return Ok(None);
        };
        let collections = txn.open_table(COLLECTIONS).map_err(db_err)?;
        Ok(read_record::<CollectionRecord>(&collections, collection_id)?.map(|c| (c, role)))
    }

    pub fn list_collections(&self, user_id: &str) -> Result<Vec<CollectionView>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let user_collections = txn.open_table(USER_COLLECTIONS).map_err(db_err)?;
        let collections = txn.open_table(COLLECTIONS).map_err(db_err)?;
        let collection_files = txn.open_table(COLLECTION_FILES).map_err(db_err)?;
        let mut out = Vec::new();
        for collection_id in suffixes(&user_collections, user_id)? {
            let role = user_collections
                .get(pair(user_id, &collection_id).as_str())
                .map_err(db_err)?
                .and_then(|v| Access::parse(v.value()));
            let record = read_record::<CollectionRecord>(&collections, &collection_id)?;
            if let (Some(role), Some(record)) = (role, record) {
                let file_count = suffixes(&collection_files, &collection_id)?.len();
                out.push(CollectionView {
                    record,
                    role,
                    file_count,
                });
            }
        }
        out.sort_by(|a, b| {
            a.record
                .name
                .to_lowercase()
                .cmp(&b.record.name.to_lowercase())
        });
        Ok(out)
    }

    /// Changes a collection (name, description, shares) on its current record in one
    /// transaction, and brings the members index in line with its shares. Returns the changed
    /// record and the ids of the files whose readers changed.
    pub fn update_collection<E: From<StoreError>>(
        &self,
        collection_id: &str,
        change: impl FnOnce(&mut CollectionRecord) -> Result<(), E>,
    ) -> Result<(CollectionRecord, Vec<String>), E> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let (record, files) = {
            let mut collections = txn.open_table(COLLECTIONS).map_err(db_err)?;
            let old = read_record::<CollectionRecord>(&collections, collection_id)?
                .ok_or(StoreError::NotFound("collection"))?;
            let mut record = old.clone();
            change(&mut record)?;
            let record = &record;
            collections
                .insert(record.id.as_str(), encode(record)?.as_slice())
                .map_err(db_err)?;
            let mut user_collections = txn.open_table(USER_COLLECTIONS).map_err(db_err)?;
            for share in &old.shares {
                user_collections
                    .remove(pair(&share.user_id, &record.id).as_str())
                    .map_err(db_err)?;
            }
            for share in &record.shares {
                user_collections
                    .insert(
                        pair(&share.user_id, &record.id).as_str(),
                        share.role.as_str(),
                    )
                    .map_err(db_err)?;
            }
            let collection_files = txn.open_table(COLLECTION_FILES).map_err(db_err)?;
            let files = if old.shares != record.shares {
                suffixes(&collection_files, &record.id)?
            } else {
                Vec::new()
            };
            (record.clone(), files)
        };
        txn.commit().map_err(db_err)?;
        Ok((record, files))
    }

    /// Deletes a collection (not its files). Returns the ids of the files it held.
    pub fn delete_collection(&self, collection_id: &str) -> Result<Vec<String>> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let files = {
            let mut collections = txn.open_table(COLLECTIONS).map_err(db_err)?;
            let Some(old) = read_record::<CollectionRecord>(&collections, collection_id)? else {
                return Err(StoreError::NotFound("collection"));
            };
            collections.remove(collection_id).map_err(db_err)?;
            let mut user_collections = txn.open_table(USER_COLLECTIONS).map_err(db_err)?;
            user_collections
                .remove(pair(&old.owner_id, collection_id).as_str())
                .map_err(db_err)?;
            for share in &old.shares {
                user_collections
                    .remove(pair(&share.user_id, collection_id).as_str())
                    .map_err(db_err)?;
            }
            let mut collection_files = txn.open_table(COLLECTION_FILES).map_err(db_err)?;
            let mut file_collections = txn.open_table(FILE_COLLECTIONS).map_err(db_err)?;
            let files = suffixes(&collection_files, collection_id)?;
            for file_id in &files {
                collection_files
                    .remove(pair(collection_id, file_id).as_str())
                    .map_err(db_err)?;
                file_collections
                    .remove(pair(file_id, collection_id).as_str())
                    .map_err(db_err)?;
            }
            files
        };
        txn.commit().map_err(db_err)?;
        Ok(files)
    }

    /// Adds (`add`) or removes a file from a collection. Returns whether anything changed.
    pub fn set_collection_file(
        &self,
        collection_id: &str,
        file_id: &str,
        add: bool,
    ) -> Result<bool> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let changed = {
            let mut collection_files = txn.open_table(COLLECTION_FILES).map_err(db_err)?;
            let mut file_collections = txn.open_table(FILE_COLLECTIONS).map_err(db_err)?;
            let forward = pair(collection_id, file_id);
            let backward = pair(file_id, collection_id);
            if add {
                let now = now_secs();
                let existed = collection_files
                    .insert(forward.as_str(), now)
                    .map_err(db_err)?
                    .is_some();
                file_collections
                    .insert(backward.as_str(), now)
                    .map_err(db_err)?;
                !existed
            } else {
                let existed = collection_files
                    .remove(forward.as_str())
                    .map_err(db_err)?
                    .is_some();
                file_collections.remove(backward.as_str()).map_err(db_err)?;
                existed
            }
        };
        txn.commit().map_err(db_err)?;
        Ok(changed)
    }

    /// The files of a collection, in the order they were added.
    pub fn collection_files(&self, collection_id: &str) -> Result<Vec<FileRecord>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let collection_files = txn.open_table(COLLECTION_FILES).map_err(db_err)?;
        let files = txn.open_table(FILES).map_err(db_err)?;
        let mut added: Vec<(u64, FileRecord)> = Vec::new();
        let start = format!("{collection_id}/");
        let end = format!("{collection_id}0");
        for entry in collection_files
            .range(start.as_str()..end.as_str())
            .map_err(db_err)?
        {
            let (key, at) = entry.map_err(db_err)?;
            let Some((_, file_id)) = key.value().split_once('/') else {
                continue;
            };
            if let Some(file) = read_record::<FileRecord>(&files, file_id)? {
                added.push((at.value(), file));
            }
        }
        added.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.id.cmp(&b.1.id)));
        Ok(added.into_iter().map(|(_, f)| f).collect())
    }

    // ---- comments ----

    pub fn add_comment(&self, record: &CommentRecord) -> Result<()> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut comments = txn.open_table(COMMENTS).map_err(db_err)?;
            comments
                .insert(
                    pair(&record.file_id, &record.id).as_str(),
                    encode(record)?.as_slice(),
                )
                .map_err(db_err)?;
        }
        txn.commit().map_err(db_err)
    }

    /// A file's comments ordered by time in the media, then by creation.
    pub fn list_comments(&self, file_id: &str) -> Result<Vec<CommentRecord>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let comments = txn.open_table(COMMENTS).map_err(db_err)?;
        let start = format!("{file_id}/");
        let end = format!("{file_id}0");
        let mut out: Vec<CommentRecord> = Vec::new();
        for entry in comments
            .range(start.as_str()..end.as_str())
            .map_err(db_err)?
        {
            let (_, value) = entry.map_err(db_err)?;
            out.push(decode(value.value())?);
        }
        out.sort_by(|a, b| a.time.total_cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    pub fn get_comment(&self, file_id: &str, comment_id: &str) -> Result<Option<CommentRecord>> {
        self.get_json(COMMENTS, &pair(file_id, comment_id))
    }

    pub fn delete_comment(&self, file_id: &str, comment_id: &str) -> Result<bool> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let removed = {
            let mut comments = txn.open_table(COMMENTS).map_err(db_err)?;
            comments
                .remove(pair(file_id, comment_id).as_str())
                .map_err(db_err)?
                .is_some()
        };
        txn.commit().map_err(db_err)?;
        Ok(removed)
    }

    /// Tags of a user's own files with how many files carry each.
    pub fn tag_counts(&self, owner_id: &str) -> Result<BTreeMap<String, usize>> {
        let mut counts = BTreeMap::new();
        for file in self.list_user_files(owner_id)? {
            for tag in file.tags {
                *counts.entry(tag).or_insert(0) += 1;
            }
        }
        Ok(counts)
    }

    /// Files shared with the user through collections (not their own), each once.
    pub fn shared_files(&self, user_id: &str) -> Result<Vec<(FileRecord, Access)>> {
        let mut seen: BTreeMap<String, (FileRecord, Access)> = BTreeMap::new();
        for view in self.list_collections(user_id)? {
            if view.role == Access::Owner {
                continue;
            }
            for file in self.collection_files(&view.record.id)? {
                if file.owner_id == user_id {
                    continue;
                }
                let entry = seen.entry(file.id.clone()).or_insert((file, view.role));
                entry.1 = entry.1.max(view.role);
            }
        }
        Ok(seen.into_values().collect())
    }
}

/// Removes every trace of a deleted file from collections and comments, inside the
/// transaction that deletes the file.
pub(crate) fn forget_file(txn: &redb::WriteTransaction, file_id: &str) -> Result<()> {
    let mut file_collections = txn.open_table(FILE_COLLECTIONS).map_err(db_err)?;
    let mut collection_files = txn.open_table(COLLECTION_FILES).map_err(db_err)?;
    for collection_id in suffixes(&file_collections, file_id)? {
        file_collections
            .remove(pair(file_id, &collection_id).as_str())
            .map_err(db_err)?;
        collection_files
            .remove(pair(&collection_id, file_id).as_str())
            .map_err(db_err)?;
    }
    let mut comments = txn.open_table(COMMENTS).map_err(db_err)?;
    for comment_id in suffixes(&comments, file_id)? {
        comments
            .remove(pair(file_id, &comment_id).as_str())
            .map_err(db_err)?;
    }
    Ok(())
}

/// Adds or changes one member's role in a collection's shares.
pub fn upsert_share(shares: &mut Vec<Share>, user_id: &str, role: Access) {
    match shares.iter_mut().find(|s| s.user_id == user_id) {
        Some(share) => share.role = role,
        None => shares.push(Share {
            user_id: user_id.to_owned(),
            role,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::UploadOptions;

    fn file(id: &str, owner: &str) -> FileRecord {
        FileRecord {
            id: id.to_owned(),
            owner_id: owner.to_owned(),
            filename: format!("{id}.wav"),
            size: 1,
            sha256: format!("sha-{id}"),
            media_type: "audio/wav".to_owned(),
            status: crate::store::records::FileStatus::Completed,
            progress: 1.0,
            created_at: 1,
            updated_at: 1,
            options: UploadOptions::default(),
            error: None,
            duration_secs: None,
            container: None,
            codec: None,
            tags: Vec::new(),
            media_deleted_at: None,
        }
    }

    #[test]
    fn sharing_grants_and_revokes_access_through_collections() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        store.insert_file(&file("f1", "alice")).unwrap();
        store.insert_file(&file("f2", "alice")).unwrap();
        assert_eq!(
            store.file_access("alice", "f1").unwrap().unwrap().1,
            Access::Owner
        );
        assert!(store.file_access("bob", "f1").unwrap().is_none());

        let collection = CollectionRecord {
            id: "c1".to_owned(),
            owner_id: "alice".to_owned(),
            name: "Meetings".to_owned(),
            description: String::new(),
            created_at: 1,
            shares: Vec::new(),
            retention_exempt: false,
        };
        store.create_collection(&collection).unwrap();
        assert!(store.set_collection_file("c1", "f1", true).unwrap());
        assert!(!store.set_collection_file("c1", "f1", true).unwrap());
        assert!(
            store.file_access("bob", "f1").unwrap().is_none(),
            "not shared yet"
        );

        let set = |role: Option<Access>| {
            store
                .update_collection("c1", move |c| {
                    match role {
                        Some(role) => upsert_share(&mut c.shares, "bob", role),
                        None => c.shares.clear(),
                    }
                    Ok::<_, StoreError>(())
                })
                .unwrap()
                .1
        };
        let changed = set(Some(Access::Viewer));
        assert_eq!(changed, vec!["f1".to_owned()]);
        assert_eq!(
            store.file_access("bob", "f1").unwrap().unwrap().1,
            Access::Viewer
        );
        assert!(
            store.file_access("bob", "f2").unwrap().is_none(),
            "f2 is not in the collection"
        );
        assert!(matches!(
            store.file_with_access("bob", "f1", Access::Editor),
            Err(StoreError::AccessTooLow("editor"))
        ));
        assert_eq!(store.file_readers("f1").unwrap(), vec!["alice", "bob"]);
        assert_eq!(store.shared_files("bob").unwrap().len(), 1);
        assert_eq!(
            store.list_collections("bob").unwrap()[0].role,
            Access::Viewer
        );

        set(Some(Access::Editor));
        assert_eq!(
            store.file_access("bob", "f1").unwrap().unwrap().1,
            Access::Editor
        );

        set(None);
        assert!(store.file_access("bob", "f1").unwrap().is_none(), "revoked");
        assert!(store.list_collections("bob").unwrap().is_empty());

        set(Some(Access::Viewer));
        assert_eq!(
            store.delete_collection("c1").unwrap(),
            vec!["f1".to_owned()]
        );
        assert!(store.file_access("bob", "f1").unwrap().is_none());
        assert!(store.file_collections("f1").unwrap().is_empty());
    }

    #[test]
    fn comments_list_by_media_time_and_go_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        store.insert_file(&file("f1", "alice")).unwrap();
        for (id, time) in [("c1", 30.0), ("c2", 5.0), ("c3", 12.5)] {
            store
                .add_comment(&CommentRecord {
                    id: id.to_owned(),
                    file_id: "f1".to_owned(),
                    user_id: "alice".to_owned(),
                    time,
                    text: format!("at {time}"),
                    created_at: 1,
                })
                .unwrap();
        }
        let times: Vec<f64> = store
            .list_comments("f1")
            .unwrap()
            .iter()
            .map(|c| c.time)
            .collect();
        assert_eq!(times, vec![5.0, 12.5, 30.0]);
        assert!(store.delete_comment("f1", "c3").unwrap());
        assert!(!store.delete_comment("f1", "c3").unwrap());
        store.delete_user_file("alice", "f1").unwrap();
        assert!(store.list_comments("f1").unwrap().is_empty());
    }

    #[test]
    fn priorities_order_the_queue_and_old_job_records_are_purged() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let mut low = file("low", "alice");
        low.options.priority = 9;
        let normal = file("normal", "alice");
        let mut high = file("high", "alice");
        high.options.priority = 1;
        for f in [&low, &normal, &high] {
            store.insert_file(f).unwrap();
        }
        let order: Vec<String> = (0..3)
            .map(|_| store.claim_job(10, 60).unwrap().unwrap().0.file_id)
            .collect();
        assert_eq!(order, vec!["high", "normal", "low"]);
        for id in ["high", "normal", "low"] {
            store
                .finish_job(
                    id,
                    crate::store::JobOutcome::Failed {
                        message: "x".into(),
                    },
                    crate::store::RetryPolicy {
                        max_attempts: 3,
                        backoff_base_secs: 30,
                    },
                    false,
                    100,
                )
                .unwrap();
        }
        assert_eq!(
            store.purge_job_history(50).unwrap(),
            0,
            "ended after the cutoff"
        );
        assert_eq!(store.purge_job_history(101).unwrap(), 3);
        assert!(store.get_job("high").unwrap().is_none());
        let kept = store.get_file("high").unwrap().unwrap();
        assert_eq!(kept.status.as_str(), "error", "the file keeps its outcome");
        // A retry queues at the file's own priority.
        store.retry_job("alice", "high", 200).unwrap();
        assert_eq!(store.get_job("high").unwrap().unwrap().priority, 1);
    }

    #[test]
    fn tags_are_cleaned_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        store.insert_file(&file("f1", "alice")).unwrap();
        store.insert_file(&file("f2", "alice")).unwrap();
        let tagged = store
            .set_tags(
                "f1",
                &[" Board ".into(), "board".into(), "".into(), "Q3".into()],
            )
            .unwrap();
        assert_eq!(tagged.tags, vec!["board", "q3"]);
        store.set_tags("f2", &["q3".into()]).unwrap();
        let counts = store.tag_counts("alice").unwrap();
        assert_eq!(counts.get("q3"), Some(&2));
        assert_eq!(counts.get("board"), Some(&1));
    }
}
