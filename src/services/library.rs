//! The library's file list: which files a user sees (own, shared with them, in a collection),
//! filtered, sorted and paged. The common case (own files by date, no filter) is paged by the
//! store along its owner index, so only one page of records is read.

use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::records::{Access, FileRecord, FileStatus};

/// What the file list asks for.
#[derive(Debug, Clone, Default)]
pub struct FileQuery {
    pub page: usize,
    pub per_page: usize,
    pub status: Option<FileStatus>,
    /// `created` (newest first), `-created`, `name`, `-name`, `size`, `-size`.
    pub sort: String,
    pub tag: Option<String>,
    /// `own`, `shared` or `all`.
    pub scope: String,
    pub collection: Option<String>,
}

/// One page of files with the caller's access to each, and how many match in all.
#[derive(Debug)]
pub struct FilePage {
    pub items: Vec<(FileRecord, Access)>,
    pub total: usize,
}

/// Lists the files `user_id` may see that match `query` (blocking: run it off the executor).
pub fn list_files(store: &Store, user_id: &str, query: &FileQuery) -> Result<FilePage> {
    let offset = query.page.saturating_sub(1).saturating_mul(query.per_page);
    let plain = query.collection.is_none()
        && query.scope == "own"
        && query.status.is_none()
        && query.tag.is_none()
        && matches!(query.sort.as_str(), "created" | "-created");
    if plain {
        let (files, total) =
            store.page_user_files(user_id, query.sort == "-created", offset, query.per_page)?;
        return Ok(FilePage {
            items: files.into_iter().map(|f| (f, Access::Owner)).collect(),
            total,
        });
    }
    let mut files: Vec<(FileRecord, Access)> = if let Some(collection_id) = &query.collection {
        store
            .collection_for(user_id, collection_id)?
            .ok_or_else(|| Error::not_found("collection"))?;
        let mut out = Vec::new();
        for file in store.collection_files(collection_id)? {
            if let Some(access) = store.file_access(user_id, &file.id)? {
                out.push(access);
            }
        }
        out
    } else {
        let mut out = Vec::new();
        if query.scope != "shared" {
            out.extend(
                store
                    .list_user_files(user_id)?
                    .into_iter()
                    .map(|f| (f, Access::Owner)),
            );
        }
        if query.scope != "own" {
            out.extend(store.shared_files(user_id)?);
        }
        out
    };
    if let Some(status) = query.status {
        files.retain(|(f, _)| f.status == status);
    }
    if let Some(tag) = &query.tag {
        let tag = tag.trim().to_lowercase();
        files.retain(|(f, _)| f.tags.contains(&tag));
    }
    match query.sort.as_str() {
        // Ids are UUIDv7, so they order by creation time.
        "created" => files.sort_by(|a, b| b.0.id.cmp(&a.0.id)),
        "-created" => files.sort_by(|a, b| a.0.id.cmp(&b.0.id)),
        "name" => files.sort_by_key(|f| f.0.filename.to_lowercase()),
        "-name" => files.sort_by_key(|f| std::cmp::Reverse(f.0.filename.to_lowercase())),
        "size" => files.sort_by_key(|f| f.0.size),
        _ => files.sort_by_key(|f| std::cmp::Reverse(f.0.size)),
    }
    let total = files.len();
    let items = files
        .into_iter()
        .skip(offset)
        .take(query.per_page)
        .collect();
    Ok(FilePage { items, total })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::UploadOptions;

    fn record(owner: &str, name: &str, size: u64) -> FileRecord {
        FileRecord {
            id: uuid::Uuid::now_v7().to_string(),
            owner_id: owner.to_owned(),
            filename: name.to_owned(),
            size,
            sha256: format!("{name}-sha"),
            media_type: "audio/wav".to_owned(),
            status: FileStatus::Queued,
            progress: 0.0,
            created_at: 1,
            updated_at: 1,
            options: UploadOptions::default(),
            error: None,
            duration_secs: None,
            container: None,
            codec: None,
            tags: Vec::new(),
        }
    }

    /// The index-paged list and the general one agree on order, pages and totals.
    #[test]
    fn pages_along_the_owner_index_match_the_general_list() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let mut ids = Vec::new();
        for n in 0..7 {
            let file = record("alice", &format!("f{n}.wav"), 10 + n);
            ids.push(file.id.clone());
            store.insert_file(&file).unwrap();
            store.insert_file(&record("bob", "other.wav", 1)).unwrap();
        }
        let query = |sort: &str, page: usize, tag: Option<&str>| FileQuery {
            page,
            per_page: 3,
            status: None,
            sort: sort.to_owned(),
            tag: tag.map(str::to_owned),
            scope: "own".to_owned(),
            collection: None,
        };
        let names = |page: &FilePage| -> Vec<String> {
            page.items.iter().map(|(f, _)| f.filename.clone()).collect()
        };
        let newest = list_files(&store, "alice", &query("created", 1, None)).unwrap();
        assert_eq!(newest.total, 7);
        assert_eq!(names(&newest), ["f6.wav", "f5.wav", "f4.wav"]);
        let last = list_files(&store, "alice", &query("created", 3, None)).unwrap();
        assert_eq!(names(&last), ["f0.wav"]);
        let oldest = list_files(&store, "alice", &query("-created", 2, None)).unwrap();
        assert_eq!(names(&oldest), ["f3.wav", "f4.wav", "f5.wav"]);
        assert!(
            oldest
                .items
                .iter()
                .all(|(f, a)| f.owner_id == "alice" && *a == Access::Owner)
        );
        // The general path (a sort the index does not hold) gives the same totals.
        let by_size = list_files(&store, "alice", &query("-size", 1, None)).unwrap();
        assert_eq!(by_size.total, 7);
        assert_eq!(names(&by_size), ["f6.wav", "f5.wav", "f4.wav"]);
        let beyond = list_files(&store, "alice", &query("created", 9, None)).unwrap();
        assert!(beyond.items.is_empty());
        assert_eq!(beyond.total, 7);
    }
}
