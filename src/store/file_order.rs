//! A user's files in creation, name or size order, read along an index: the file list pages
//! by the store, decoding only what it shows (or, when it filters, one record at a time),
//! never collecting a user's whole library. The `user_file_order` index is kept in step with
//! `files` here, inside the caller's write transaction.

use std::cmp::Ordering;

use redb::{ReadableDatabase, WriteTransaction};

use super::error::Result;
use super::records::FileRecord;
use super::tables::{FILES, USER_FILE_ORDER, USER_FILES};
use super::{Store, db_err, decode};

/// What a user's files are ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOrder {
    /// Creation (ids are UUIDv7, so id order is creation order).
    Created,
    /// Name, case-insensitive, ties by id.
    Name,
    /// Size in bytes, ties by id.
    Size,
}

impl FileOrder {
    /// How two records compare in this order, ascending; the same order the index holds.
    pub fn compare(self, a: &FileRecord, b: &FileRecord) -> Ordering {
        match self {
            FileOrder::Created => a.id.cmp(&b.id),
            FileOrder::Name => name_key(&a.filename)
                .cmp(&name_key(&b.filename))
                .then_with(|| a.id.cmp(&b.id)),
            FileOrder::Size => a.size.cmp(&b.size).then_with(|| a.id.cmp(&b.id)),
        }
    }
}

/// The name as the index sorts it: lower-cased, NULs (the key's separator) made spaces.
fn name_key(name: &str) -> String {
    name.to_lowercase().replace('\0', " ")
}

fn order_keys(record: &FileRecord) -> [String; 2] {
    [
        format!(
            "{}/n/{}\0{}",
            record.owner_id,
            name_key(&record.filename),
            record.id
        ),
        format!("{}/s/{:020}/{}", record.owner_id, record.size, record.id),
    ]
}

/// Adds `record` to the order index, inside `txn`.
pub(crate) fn index_file(txn: &WriteTransaction, record: &FileRecord) -> Result<()> {
    let mut order = txn.open_table(USER_FILE_ORDER).map_err(db_err)?;
    for key in order_keys(record) {
        order.insert(key.as_str(), 0).map_err(db_err)?;
    }
    Ok(())
}

/// Removes `record` from the order index, inside `txn`.
pub(crate) fn unindex_file(txn: &WriteTransaction, record: &FileRecord) -> Result<()> {
    let mut order = txn.open_table(USER_FILE_ORDER).map_err(db_err)?;
    for key in order_keys(record) {
        order.remove(key.as_str()).map_err(db_err)?;
    }
    Ok(())
}

/// The file id at the end of an index key (`…/<id>` or `…\0<id>`).
fn id_of(key: &str) -> Option<&str> {
    key.rsplit(['/', '\0']).next().filter(|id| !id.is_empty())
}

impl Store {
    /// Walks `owner_id`'s files in `order` (descending if asked), decoding one record at a
    /// time and handing it to `visit` until it answers `false`.
    pub fn visit_own_files(
        &self,
        owner_id: &str,
        order: FileOrder,
        descending: bool,
        mut visit: impl FnMut(FileRecord) -> bool,
    ) -> Result<()> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let files = txn.open_table(FILES).map_err(db_err)?;
        let mut each = |key: &str| -> Result<bool> {
            let Some(id) = id_of(key) else {
                return Ok(true);
            };
            match files.get(id).map_err(db_err)? {
                Some(value) => Ok(visit(decode(value.value())?)),
                None => Ok(true),
            }
        };
        macro_rules! walk {
            ($table:expr, $start:expr, $end:expr) => {{
                let range = $table
                    .range($start.as_str()..$end.as_str())
                    .map_err(db_err)?;
                let keys: Box<dyn Iterator<Item = _>> = if descending {
                    Box::new(range.rev())
                } else {
                    Box::new(range)
                };
                for entry in keys {
                    let (key, _) = entry.map_err(db_err)?;
                    if !each(key.value())? {
                        break;
                    }
                }
            }};
        }
        match order {
            FileOrder::Created => {
                let table = txn.open_table(USER_FILES).map_err(db_err)?;
                // '0' sorts right after '/'.
                walk!(table, format!("{owner_id}/"), format!("{owner_id}0"));
            }
            FileOrder::Name | FileOrder::Size => {
                let table = txn.open_table(USER_FILE_ORDER).map_err(db_err)?;
                let kind = if order == FileOrder::Name { 'n' } else { 's' };
                walk!(
                    table,
                    format!("{owner_id}/{kind}/"),
                    format!("{owner_id}/{kind}0")
                );
            }
        }
        Ok(())
    }

    /// One page of `owner_id`'s files in `order`, and how many there are: only the page's
    /// records are decoded, the total counts index keys. The file list without filters.
    pub fn page_own_files(
        &self,
        owner_id: &str,
        order: FileOrder,
        descending: bool,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<FileRecord>, usize)> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let files = txn.open_table(FILES).map_err(db_err)?;
        let (table, start, end) = match order {
            FileOrder::Created => (
                txn.open_table(USER_FILES).map_err(db_err)?,
                format!("{owner_id}/"),
                format!("{owner_id}0"),
            ),
            FileOrder::Name | FileOrder::Size => {
                let kind = if order == FileOrder::Name { 'n' } else { 's' };
                // Both tables map &str keys; only the keys are read.
                let table = txn.open_table(USER_FILE_ORDER).map_err(db_err)?;
                (
                    table,
                    format!("{owner_id}/{kind}/"),
                    format!("{owner_id}/{kind}0"),
                )
            }
        };
        let range = table.range(start.as_str()..end.as_str()).map_err(db_err)?;
        let keys: Box<dyn Iterator<Item = _>> = if descending {
            Box::new(range.rev())
        } else {
            Box::new(range)
        };
        let mut total = 0;
        let mut page = Vec::new();
        for entry in keys {
            let (key, _) = entry.map_err(db_err)?;
            let index = total;
            total += 1;
            if index < offset || page.len() >= limit {
                continue;
            }
            let Some(id) = id_of(key.value()) else {
                continue;
            };
            if let Some(value) = files.get(id).map_err(db_err)? {
                page.push(decode(value.value())?);
            }
        }
        Ok((page, total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_back_from_both_kinds_of_key() {
        assert_eq!(id_of("u/n/a/b.wav\0f1"), Some("f1"));
        assert_eq!(id_of("u/s/00000000000000000012/f2"), Some("f2"));
        assert_eq!(id_of("u/f3"), Some("f3"));
        assert_eq!(id_of("u/s/1/"), None);
    }
}
