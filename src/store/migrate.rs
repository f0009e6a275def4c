//! Schema versions and the migrations between them, run in one write transaction at open.

use redb::{ReadableTable, WriteTransaction};

use super::records::FileRecord;
use super::tables::{BLOB_REFS, FILES, JOBS, META, QUEUE, SCHEMA_VERSION_KEY, USER_FILES};

/// The schema this code reads and writes.
pub const CURRENT_VERSION: u64 = 4;

type Migration = fn(&WriteTransaction) -> Result<(), String>;

/// `MIGRATIONS[i]` takes a database from version `i + 1` to `i + 2`.
const MIGRATIONS: &[Migration] = &[v1_to_v2, v2_to_v3, v3_to_v4];

/// Reads the stored schema version without writing: `Some(version)` when a migration will run,
/// `None` for a new or current database, an error for a database newer than this code.
pub fn pending(db: &redb::Database) -> Result<Option<u64>, String> {
    use redb::ReadableDatabase;
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let found = meta
        .get(SCHEMA_VERSION_KEY)
        .map_err(|e| e.to_string())?
        .map(|v| v.value());
    match found {
        Some(found) if found > CURRENT_VERSION => Err(too_new(found)),
        Some(found) if found < CURRENT_VERSION => Ok(Some(found)),
        _ => Ok(None),
    }
}

fn too_new(found: u64) -> String {
    format!(
        "database schema version {found} is newer than this program understands ({CURRENT_VERSION}); \
         this opentranscribe ({}) is older than the one that last wrote the database: install that \
         version or newer (a downgrade needs a backup taken before the upgrade, restored with \
         `opentranscribe restore`)",
        env!("CARGO_PKG_VERSION")
    )
}

/// Brings the database to [`CURRENT_VERSION`]. Returns the version found before.
/// A database newer than this code is refused rather than guessed at.
pub fn run(txn: &WriteTransaction) -> Result<u64, String> {
    let found = {
        let meta = txn.open_table(META).map_err(|e| e.to_string())?;
        meta.get(SCHEMA_VERSION_KEY)
            .map_err(|e| e.to_string())?
            .map(|v| v.value())
    };
    let Some(found) = found else {
        // A new database: create every table at the current version.
        super::create_all_tables(txn).map_err(|e| e.to_string())?;
        set_version(txn, CURRENT_VERSION)?;
        return Ok(0);
    };
    if found > CURRENT_VERSION {
        return Err(too_new(found));
    }
    for version in found..CURRENT_VERSION {
        let index = usize::try_from(version - 1).map_err(|e| e.to_string())?;
        let migration = MIGRATIONS
            .get(index)
            .ok_or_else(|| format!("no migration from schema version {version}"))?;
        migration(txn)?;
        tracing::info!(from = version, to = version + 1, "migrated database schema");
    }
    super::create_all_tables(txn).map_err(|e| e.to_string())?;
    set_version(txn, CURRENT_VERSION)?;
    Ok(found)
}

fn set_version(txn: &WriteTransaction, version: u64) -> Result<(), String> {
    let mut meta = txn.open_table(META).map_err(|e| e.to_string())?;
    meta.insert(SCHEMA_VERSION_KEY, version)
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Version 2 adds the per-user file index and blob reference counts, derived from `files`.
fn v1_to_v2(txn: &WriteTransaction) -> Result<(), String> {
    let files = txn.open_table(FILES).map_err(|e| e.to_string())?;
    let mut user_files = txn.open_table(USER_FILES).map_err(|e| e.to_string())?;
    let mut blob_refs = txn.open_table(BLOB_REFS).map_err(|e| e.to_string())?;
    for entry in files.iter().map_err(|e| e.to_string())? {
        let (_, value) = entry.map_err(|e| e.to_string())?;
        let record: FileRecord =
            serde_json::from_slice(value.value()).map_err(|e| format!("file record: {e}"))?;
        user_files
            .insert(
                super::user_file_key(&record.owner_id, &record.id).as_str(),
                record.created_at,
            )
            .map_err(|e| e.to_string())?;
        let count = blob_refs
            .get(record.sha256.as_str())
            .map_err(|e| e.to_string())?
            .map(|v| v.value())
            .unwrap_or(0);
        blob_refs
            .insert(record.sha256.as_str(), count + 1)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Version 3 adds the job queue: every file still waiting or interrupted gets a queued job.
fn v2_to_v3(txn: &WriteTransaction) -> Result<(), String> {
    let mut files = txn.open_table(FILES).map_err(|e| e.to_string())?;
    let mut jobs = txn.open_table(JOBS).map_err(|e| e.to_string())?;
    let mut queue = txn.open_table(QUEUE).map_err(|e| e.to_string())?;
    let mut pending = Vec::new();
    for entry in files.iter().map_err(|e| e.to_string())? {
        let (_, value) = entry.map_err(|e| e.to_string())?;
        let record: FileRecord =
            serde_json::from_slice(value.value()).map_err(|e| format!("file record: {e}"))?;
        if matches!(record.status.as_str(), "queued" | "processing") {
            pending.push(record);
        }
    }
    for mut record in pending {
        let job = super::new_job(&record, 0);
        let bytes = serde_json::to_vec(&job).map_err(|e| e.to_string())?;
        jobs.insert(record.id.as_str(), bytes.as_slice())
            .map_err(|e| e.to_string())?;
        queue
            .insert(job.queue_key.as_str(), record.id.as_str())
            .map_err(|e| e.to_string())?;
        record.status = crate::store::records::FileStatus::Queued;
        record.progress = 0.0;
        let bytes = serde_json::to_vec(&record).map_err(|e| e.to_string())?;
        files
            .insert(record.id.as_str(), bytes.as_slice())
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Version 4 adds the name and size order of each user's files, derived from `files`.
fn v3_to_v4(txn: &WriteTransaction) -> Result<(), String> {
    let files = txn.open_table(FILES).map_err(|e| e.to_string())?;
    for entry in files.iter().map_err(|e| e.to_string())? {
        let (_, value) = entry.map_err(|e| e.to_string())?;
        let record: FileRecord =
            serde_json::from_slice(value.value()).map_err(|e| format!("file record: {e}"))?;
        super::file_order::index_file(txn, &record).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn set_raw_version(path: &std::path::Path, version: u64) {
        let db = redb::Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(SCHEMA_VERSION_KEY, version)
            .unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn a_newer_database_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        drop(Store::open(&path).unwrap());
        set_raw_version(&path, CURRENT_VERSION + 1);
        let error = Store::open(&path).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(&format!(
                "schema version {} is newer than this program understands ({CURRENT_VERSION})",
                CURRENT_VERSION + 1
            )),
            "{message}"
        );
        assert!(matches!(error, super::super::StoreError::DatabaseTooNew(_)));
        // The refused database still holds its own version (nothing was migrated or reset).
        let db = redb::ReadOnlyDatabase::open(&path).unwrap();
        let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
        let version = txn
            .open_table(META)
            .unwrap()
            .get(SCHEMA_VERSION_KEY)
            .unwrap()
            .map(|v| v.value());
        assert_eq!(version, Some(CURRENT_VERSION + 1));
        assert!(
            !dir.path().join("backups").exists(),
            "no backup for a refused database"
        );
    }

    #[test]
    fn a_migration_is_preceded_by_a_copy_of_the_old_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        crate::store::write_v1_fixture(&path, &[], &[]).unwrap();
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), CURRENT_VERSION);
        let copies: Vec<_> = std::fs::read_dir(dir.path().join("backups"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(copies.len(), 1, "{copies:?}");
        let name = copies[0]
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            name.starts_with(&format!("pre-migration-v1-to-v{CURRENT_VERSION}-")),
            "{name}"
        );
        let copy = redb::ReadOnlyDatabase::open(&copies[0]).unwrap();
        let txn = redb::ReadableDatabase::begin_read(&copy).unwrap();
        let version = txn
            .open_table(META)
            .unwrap()
            .get(SCHEMA_VERSION_KEY)
            .unwrap()
            .map(|v| v.value());
        assert_eq!(version, Some(1), "the copy holds the old schema");
        drop(store);
        // A current database opens without another copy.
        drop(Store::open(&path).unwrap());
        assert_eq!(
            std::fs::read_dir(dir.path().join("backups"))
                .unwrap()
                .count(),
            1
        );
    }
}
