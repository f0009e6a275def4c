//! Consistent copies of the database: a snapshot of every catalogued table from one read
//! transaction into a fresh redb file, and the raw file copy taken before a migration.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use redb::{
    Database, Key, MultimapTableHandle, ReadTransaction, ReadableDatabase, ReadableTable,
    TableDefinition, TableError, TableHandle, Value, WriteTransaction,
};

use super::error::{Result, StoreError};
use super::records::FileRecord;
use super::tables::*;
use super::{Store, db_err};

/// What a snapshot copied.
#[derive(Debug, Clone, Default)]
pub struct SnapshotReport {
    /// (table name, rows copied), in catalogue order.
    pub tables: Vec<(String, u64)>,
    pub schema_version: u64,
    /// Every blob SHA-256 a file record in the snapshot refers to.
    pub blobs: BTreeSet<String>,
    pub files: u64,
}

impl Store {
    /// Writes a snapshot of the whole database, as of one read transaction, to `dest` (a new
    /// file). Writers are not blocked; what they commit afterwards is not in the snapshot.
    pub fn snapshot_to(&self, dest: &Path) -> Result<SnapshotReport> {
        let txn = self.db.begin_read().map_err(db_err)?;
        snapshot_txn(&txn, dest)
    }
}

/// Snapshot of a database file that no daemon holds open (offline backup). Opened read-only,
/// so an old schema is copied as it is, not migrated.
pub fn snapshot_file(source: &Path, dest: &Path) -> Result<SnapshotReport> {
    let db = redb::ReadOnlyDatabase::open(source).map_err(|e| {
        StoreError::DatabaseBusy(format!("cannot open {} read-only: {e}", source.display()))
    })?;
    let txn = db.begin_read().map_err(db_err)?;
    snapshot_txn(&txn, dest)
}

fn snapshot_txn(source: &ReadTransaction, dest: &Path) -> Result<SnapshotReport> {
    if dest.exists() {
        return Err(StoreError::BackupExists(format!(
            "{} exists already",
            dest.display()
        )));
    }
    let target = Database::create(dest)
        .map_err(|e| db_err(format!("cannot create {}: {e}", dest.display())))?;
    let write = target.begin_write().map_err(db_err)?;
    let mut report = SnapshotReport::default();
    copy_catalogue(source, &write, &mut report.tables)?;
    let copied: BTreeSet<&str> = report.tables.iter().map(|(n, _)| n.as_str()).collect();
    let mut unknown: Vec<String> = source
        .list_tables()
        .map_err(db_err)?
        .map(|t| t.name().to_owned())
        .filter(|name| !copied.contains(name.as_str()))
        .collect();
    unknown.extend(
        source
            .list_multimap_tables()
            .map_err(db_err)?
            .map(|t| t.name().to_owned()),
    );
    if !unknown.is_empty() {
        // Refuse rather than write a backup that silently lacks data.
        drop(write);
        drop(target);
        let _ = std::fs::remove_file(dest);
        return Err(StoreError::BackupIncomplete(format!(
            "tables {} are not in the backup catalogue (src/store/backup.rs); refusing an incomplete backup",
            unknown.join(", ")
        )));
    }
    write.commit().map_err(db_err)?;
    // Read what we wrote back from the snapshot, so the blob list matches it exactly.
    let txn = target.begin_read().map_err(db_err)?;
    if let Ok(meta) = txn.open_table(META) {
        report.schema_version = meta
            .get(SCHEMA_VERSION_KEY)
            .map_err(db_err)?
            .map(|v| v.value())
            .unwrap_or(0);
    }
    if let Ok(files) = txn.open_table(FILES) {
        for entry in files.iter().map_err(db_err)? {
            let (_, value) = entry.map_err(db_err)?;
            let record: FileRecord = serde_json::from_slice(value.value()).map_err(db_err)?;
            // A file whose media retention deleted keeps its hash but no longer its blob.
            if record.media_deleted_at.is_none() {
                report.blobs.insert(record.sha256);
            }
            report.files += 1;
        }
    }
    drop(txn);
    drop(target);
    File::open(dest)
        .and_then(|f| f.sync_all())
        .map_err(|e| db_err(format!("cannot sync {}: {e}", dest.display())))?;
    Ok(report)
}

/// Copies every table of the catalogue. A table added to `tables.rs` must be added here too;
/// `every_catalogued_table_is_backed_up` fails until it is, and a backup of a database holding
/// a table missing here is refused.
fn copy_catalogue(
    source: &ReadTransaction,
    target: &WriteTransaction,
    out: &mut Vec<(String, u64)>,
) -> Result<()> {
    copy_table(source, target, META, out)?;
    copy_table(source, target, USERS, out)?;
    copy_table(source, target, USERNAMES, out)?;
    copy_table(source, target, SESSIONS, out)?;
    copy_table(source, target, API_TOKENS, out)?;
    copy_table(source, target, FILES, out)?;
    copy_table(source, target, USER_FILES, out)?;
    copy_table(source, target, USER_FILE_ORDER, out)?;
    copy_table(source, target, BLOB_REFS, out)?;
    copy_table(source, target, JOBS, out)?;
    copy_table(source, target, QUEUE, out)?;
    copy_table(source, target, TRANSCRIPTS, out)?;
    copy_table(source, target, COLLECTIONS, out)?;
    copy_table(source, target, COLLECTION_FILES, out)?;
    copy_table(source, target, FILE_COLLECTIONS, out)?;
    copy_table(source, target, USER_COLLECTIONS, out)?;
    copy_table(source, target, COMMENTS, out)?;
    copy_table(source, target, PROFILES, out)?;
    copy_table(source, target, USER_PROFILES, out)?;
    copy_table(source, target, PROFILE_FILES, out)?;
    copy_table(source, target, SPEAKER_EMBEDDINGS, out)?;
    copy_table(source, target, WAVEFORMS, out)?;
    copy_table(source, target, AUDIT, out)?;
    copy_table(source, target, RETENTION_RULES, out)?;
    copy_table(source, target, WEBHOOKS, out)?;
    copy_table(source, target, DELIVERIES, out)?;
    copy_table(source, target, DELIVERY_DUE, out)?;
    copy_table(source, target, USER_DELIVERIES, out)?;
    copy_table(source, target, UPLOADS, out)?;
    copy_table(source, target, SUMMARIES, out)?;
    copy_table(source, target, LLM_PROMPTS, out)?;
    Ok(())
}

fn copy_table<K: Key + 'static, V: Value + 'static>(
    source: &ReadTransaction,
    target: &WriteTransaction,
    definition: TableDefinition<K, V>,
    out: &mut Vec<(String, u64)>,
) -> Result<()> {
    let name = definition.name().to_owned();
    let table = match source.open_table(definition) {
        Ok(table) => table,
        // An older schema lacks tables added later; nothing to copy.
        Err(TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(db_err(format!("table {name}: {e}"))),
    };
    let mut copy = target.open_table(definition).map_err(db_err)?;
    let mut rows = 0u64;
    for entry in table.iter().map_err(db_err)? {
        let (key, value) = entry.map_err(db_err)?;
        copy.insert(key.value(), value.value()).map_err(db_err)?;
        rows += 1;
    }
    out.push((name, rows));
    Ok(())
}

/// Where the automatic copy taken before migrating from `from_version` goes: `backups/` beside
/// the database file.
pub fn pre_migration_path(db_path: &Path, from_version: u64) -> PathBuf {
    let stamp = utc_stamp();
    let dir = db_path
        .parent()
        .map(|p| p.join("backups"))
        .unwrap_or_else(|| PathBuf::from("backups"));
    dir.join(format!(
        "pre-migration-v{from_version}-to-v{}-{stamp}.redb",
        super::migrate::CURRENT_VERSION
    ))
}

/// The current UTC time as `YYYYMMDDTHHMMSSZ`, for file names that sort by age.
pub fn utc_stamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// Snapshots the database (open, not yet migrated) into `backups/` beside it and checks that
/// the copy holds the version it should. A raw copy of an open redb file would need a repair to
/// open, so the copy is a snapshot like any backup.
pub(crate) fn copy_before_migration(
    db: &Database,
    db_path: &Path,
    from_version: u64,
) -> std::result::Result<PathBuf, String> {
    let dest = pre_migration_path(db_path, from_version);
    if let Some(dir) = dest.parent() {
        crate::fsutil::create_private_dir(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let partial = dest.with_extension("redb.partial");
    let _ = std::fs::remove_file(&partial);
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let report = snapshot_txn(&txn, &partial).map_err(|e| e.to_string())?;
    if report.schema_version != from_version {
        let _ = std::fs::remove_file(&partial);
        return Err(format!(
            "the copy {} reads schema version {}, expected {from_version}",
            partial.display(),
            report.schema_version
        ));
    }
    std::fs::rename(&partial, &dest)
        .map_err(|e| format!("cannot rename to {}: {e}", dest.display()))?;
    if let Some(dir) = dest.parent() {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::{FileRecord, Role};

    fn file_record(id: &str, owner: &str, sha: &str) -> FileRecord {
        FileRecord {
            id: id.to_owned(),
            owner_id: owner.to_owned(),
            sha256: sha.to_owned(),
            filename: format!("{id}.wav"),
            size: 10,
            media_type: "audio/wav".to_owned(),
            status: crate::store::records::FileStatus::Completed,
            progress: 1.0,
            created_at: 1,
            updated_at: 1,
            options: Default::default(),
            error: None,
            duration_secs: None,
            container: None,
            codec: None,
            tags: Vec::new(),
            media_deleted_at: None,
        }
    }

    /// Names declared with `TableDefinition::new("…")` in tables.rs, read from its source so a
    /// table added there cannot be missed even before any code creates it.
    fn declared_tables() -> BTreeSet<String> {
        let source = include_str!("tables.rs");
        let mut names = BTreeSet::new();
        for marker in ["TableDefinition::new(\"", "MultimapTableDefinition::new(\""] {
            for (index, _) in source.match_indices(marker) {
                let rest = &source[index + marker.len()..];
                if let Some(end) = rest.find('"') {
                    names.insert(rest[..end].to_owned());
                }
            }
        }
        names
    }

    #[test]
    fn every_catalogued_table_is_backed_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let report = store.snapshot_to(&dir.path().join("snap.redb")).unwrap();
        let copied: BTreeSet<String> = report.tables.iter().map(|(n, _)| n.clone()).collect();
        let declared = declared_tables();
        assert!(declared.len() >= 11, "{declared:?}");
        let missing: Vec<&String> = declared.difference(&copied).collect();
        assert!(
            missing.is_empty(),
            "tables declared in tables.rs but not copied by the backup: {missing:?}"
        );
        // And every table a fresh database has (create_all_tables) is copied.
        let txn = store.db.begin_read().unwrap();
        for table in txn.list_tables().unwrap() {
            assert!(copied.contains(table.name()), "{} not copied", table.name());
        }
    }

    #[test]
    fn a_table_outside_the_catalogue_makes_the_backup_fail() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        {
            let txn = store.db.begin_write().unwrap();
            let stray: TableDefinition<&str, u64> = TableDefinition::new("not_in_catalogue");
            txn.open_table(stray).unwrap().insert("k", 1).unwrap();
            txn.commit().unwrap();
        }
        let dest = dir.path().join("snap.redb");
        let error = store.snapshot_to(&dest).unwrap_err().to_string();
        assert!(error.contains("not_in_catalogue"), "{error}");
        assert!(!dest.exists(), "an incomplete snapshot was left behind");
    }

    #[test]
    fn snapshot_holds_the_data_and_its_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let user = store
            .create_user("u1", "alice", "phc-hash", Role::Admin)
            .unwrap();
        let sha_a = "a".repeat(64);
        let sha_b = "b".repeat(64);
        store
            .insert_file(&file_record("f1", &user.id, &sha_a))
            .unwrap();
        store
            .insert_file(&file_record("f2", &user.id, &sha_b))
            .unwrap();
        let dest = dir.path().join("snap.redb");
        let report = store.snapshot_to(&dest).unwrap();
        assert_eq!(report.files, 2);
        assert_eq!(report.blobs, BTreeSet::from([sha_a.clone(), sha_b]));
        assert_eq!(
            report.schema_version,
            crate::store::migrate::CURRENT_VERSION
        );
        // Writes after the snapshot are not in it.
        store
            .insert_file(&file_record("f3", &user.id, &"c".repeat(64)))
            .unwrap();
        drop(store);
        let copy = Store::open(&dest).unwrap();
        assert_eq!(copy.get_user_by_name("alice").unwrap().unwrap().id, user.id);
        let files = copy.list_user_files(&user.id).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(copy.blob_ref_count(&sha_a).unwrap(), 1);
        // A snapshot never overwrites.
        let again = Store::open(&dir.path().join("db.redb"))
            .unwrap()
            .snapshot_to(&dest);
        assert!(again.is_err());
    }
}
