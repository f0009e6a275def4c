//! The library's file list: which files a user sees (own, shared with them, in a collection),
//! filtered, sorted and paged. Own files are read along the store's order indexes (creation,
//! name, size): without a filter only the page's records are decoded; with one, records are
//! decoded one at a time and only the page is kept. Files shared with the user (a short list)
//! are sorted in memory and merged into that stream; a collection's files likewise.

use std::cmp::Ordering;

use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::file_order::FileOrder;
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

/// The index order and direction a `sort` value names.
fn order_of(sort: &str) -> (FileOrder, bool) {
    match sort {
        "created" => (FileOrder::Created, true),
        "-created" => (FileOrder::Created, false),
        "name" => (FileOrder::Name, false),
        "-name" => (FileOrder::Name, true),
        "size" => (FileOrder::Size, false),
        _ => (FileOrder::Size, true),
    }
}

/// Counts what passes and keeps only the requested window of it.
struct Window {
    offset: usize,
    limit: usize,
    total: usize,
    items: Vec<(FileRecord, Access)>,
}

impl Window {
    fn push(&mut self, item: (FileRecord, Access)) {
        if self.total >= self.offset && self.items.len() < self.limit {
            self.items.push(item);
        }
        self.total += 1;
    }
}

/// What the file list shows of a file's transcript: its language and how many speakers it has.
/// Segments are skipped while parsing (never kept), so a long transcript costs a scan only.
#[derive(Debug, serde::Deserialize)]
pub struct TranscriptSummary {
    #[serde(default)]
    pub language: String,
    #[serde(default)]
    pub speakers: Vec<serde::de::IgnoredAny>,
    /// The transcribed length (for containers whose header does not say how long they are).
    #[serde(default)]
    pub duration: f64,
}

/// The transcript summary of a file (blocking); `None` when it has no transcript.
pub fn transcript_summary(store: &Store, file_id: &str) -> Result<Option<TranscriptSummary>> {
    Ok(store.transcript_of::<TranscriptSummary>(file_id)?)
}

/// Lists the files `user_id` may see that match `query` (blocking: run it off the executor).
pub fn list_files(store: &Store, user_id: &str, query: &FileQuery) -> Result<FilePage> {
    let offset = query.page.saturating_sub(1).saturating_mul(query.per_page);
    let (order, descending) = order_of(&query.sort);
    let tag = query.tag.as_ref().map(|t| t.trim().to_lowercase());
    let keep = |f: &FileRecord| {
        query.status.is_none_or(|s| f.status == s)
            && tag.as_ref().is_none_or(|t| f.tags.contains(t))
    };
    let unfiltered = query.status.is_none() && query.tag.is_none();
    if query.collection.is_none() && query.scope == "own" && unfiltered {
        let (files, total) =
            store.page_own_files(user_id, order, descending, offset, query.per_page)?;
        return Ok(FilePage {
            items: files.into_iter().map(|f| (f, Access::Owner)).collect(),
            total,
        });
    }
    let in_order = |a: &FileRecord, b: &FileRecord| -> Ordering {
        let ascending = order.compare(a, b);
        if descending {
            ascending.reverse()
        } else {
            ascending
        }
    };
    let mut window = Window {
        offset,
        limit: query.per_page,
        total: 0,
        items: Vec::new(),
    };
    // Files reached other than by ownership: a collection's, or those shared with the user.
    let mut others: Vec<(FileRecord, Access)> = if let Some(collection_id) = &query.collection {
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
    } else if query.scope != "own" {
        store.shared_files(user_id)?
    } else {
        Vec::new()
    };
    others.retain(|(f, _)| keep(f));
    others.sort_by(|a, b| in_order(&a.0, &b.0));
    let mut others = others.into_iter().peekable();
    if query.collection.is_none() && query.scope != "shared" {
        // Merge the user's own files, streamed in index order, with the others.
        store.visit_own_files(user_id, order, descending, |file| {
            if keep(&file) {
                while let Some(other) = others.next_if(|o| in_order(&o.0, &file).is_lt()) {
                    window.push(other);
                }
                window.push((file, Access::Owner));
            }
            true
        })?;
    }
    for other in others {
        window.push(other);
    }
    Ok(FilePage {
        items: window.items,
        total: window.total,
    })
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
            media_deleted_at: None,
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

    /// Every sort, filter and scope, paged by the store, equals sorting all of the user's
    /// files in memory, after inserts, renames (which move files in the name order) and
    /// deletes; and a database from before the order index gets it by migration.
    #[test]
    fn index_paging_equals_sorting_everything_after_renames_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let names = [
            "b.wav", "A.wav", "c.mp3", "a.wav", "Zed.ogg", "b.wav", "é.wav",
        ];
        let mut ids = Vec::new();
        for (n, name) in names.iter().enumerate() {
            let mut file = record("alice", name, [5, 3, 9, 3, 1, 7, 2][n]);
            if n % 2 == 0 {
                file.tags = vec!["meeting".to_owned()];
            }
            if n % 3 == 0 {
                file.status = FileStatus::Completed;
            }
            ids.push(file.id.clone());
            store.insert_file(&file).unwrap();
            store.insert_file(&record("bob", name, 4)).unwrap();
        }
        store
            .update_user_file("alice", &ids[1], |f| {
                f.filename = "zz-renamed.wav".to_owned()
            })
            .unwrap()
            .unwrap();
        // Another user cannot rename alice's file.
        assert!(
            store
                .update_user_file("bob", &ids[2], |f| f.filename = "x".to_owned())
                .unwrap()
                .is_none()
        );
        store.delete_user_file("alice", &ids[3]).unwrap().unwrap();
        let all: Vec<FileRecord> = store.list_user_files("alice").unwrap();
        assert_eq!(all.len(), 6);
        let check = |store: &Store| {
            for sort in ["created", "-created", "name", "-name", "size", "-size"] {
                for (status, tag) in [
                    (None, None),
                    (Some(FileStatus::Completed), None),
                    (None, Some("Meeting")),
                ] {
                    let (order, descending) = order_of(sort);
                    let mut expected: Vec<&FileRecord> = all
                        .iter()
                        .filter(|f| status.is_none_or(|s| f.status == s))
                        .filter(|f| tag.is_none_or(|_| f.tags.contains(&"meeting".to_owned())))
                        .collect();
                    expected.sort_by(|a, b| {
                        let o = order.compare(a, b);
                        if descending { o.reverse() } else { o }
                    });
                    let expected: Vec<&str> = expected.iter().map(|f| f.id.as_str()).collect();
                    for per_page in [1, 2, 4, 50] {
                        let mut got = Vec::new();
                        for page in 1..=8 {
                            let query = FileQuery {
                                page,
                                per_page,
                                status,
                                sort: sort.to_owned(),
                                tag: tag.map(str::to_owned),
                                scope: "own".to_owned(),
                                collection: None,
                            };
                            let result = list_files(store, "alice", &query).unwrap();
                            assert_eq!(result.total, expected.len(), "{sort} {status:?} {tag:?}");
                            got.extend(result.items.into_iter().map(|(f, _)| f.id));
                        }
                        assert_eq!(got, expected, "{sort} {status:?} {tag:?} {per_page}");
                    }
                }
            }
        };
        check(&store);
        // The same database as it was before version 4: no order index, then migrated.
        let path = dir.path().join("db.redb");
        drop(store);
        {
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.delete_table(crate::store::tables::USER_FILE_ORDER)
                .unwrap();
            txn.open_table(crate::store::tables::META)
                .unwrap()
                .insert(crate::store::tables::SCHEMA_VERSION_KEY, 3)
                .unwrap();
            txn.commit().unwrap();
        }
        let store = Store::open(&path).unwrap();
        check(&store);
    }
}
