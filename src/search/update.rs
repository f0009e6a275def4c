//! Keeping the index current: upsert (embedding only the chunks whose text changed), delete,
//! flush, rebuild, bulk mode, and the indexed-files listing compared with redb at start-up.

use std::collections::HashMap;
use std::sync::mpsc::sync_channel;

use tantivy::query::{BooleanQuery, EnableScoring, Occur, Query};
use tantivy::{TERMINATED, TantivyDocument};

use super::schema::{self, KIND_CHUNK, KIND_FILE};
use super::vectors::{self, chunk_segments};
use super::writer::WriterOp;
use super::{FileDoc, SearchError, SearchService, collect};

impl SearchService {
    /// Replaces every document of `doc.file_id`. Blocks while new chunk text is embedded
    /// (MiniLM on the CPU: tens of milliseconds per 200-word chunk).
    pub fn upsert(&self, doc: FileDoc) -> Result<(), SearchError> {
        let docs = self.prepare(&doc)?;
        self.send(WriterOp::Replace {
            file_id: doc.file_id,
            docs,
        })
    }

    /// As [`SearchService::upsert`] with vectors already computed for this file's chunks (same
    /// order as [`vectors::chunk_segments`]); for bulk loads and the benchmark.
    pub fn upsert_with_vectors(
        &self,
        doc: FileDoc,
        vectors: Vec<Vec<f32>>,
    ) -> Result<(), SearchError> {
        validate_doc(&doc)?;
        let chunks = chunk_segments(&doc.segments);
        if chunks.len() != vectors.len() {
            return Err(SearchError::Request(format!(
                "{} vectors for {} chunks",
                vectors.len(),
                chunks.len()
            )));
        }
        let pairs: Vec<_> = chunks
            .into_iter()
            .zip(vectors.into_iter().map(Some))
            .collect();
        let docs = schema::file_documents(&self.fields, &doc, &pairs, self.embedder.is_some());
        self.send(WriterOp::Replace {
            file_id: doc.file_id,
            docs,
        })
    }

    pub fn delete(&self, file_id: &str) -> Result<(), SearchError> {
        self.send(WriterOp::Delete(file_id.to_owned()))
    }

    /// Returns once every operation sent before is committed and visible to searches.
    pub fn flush(&self) -> Result<(), SearchError> {
        let (reply, done) = sync_channel(1);
        self.send(WriterOp::Flush(reply))?;
        done.recv()
            .map_err(|_| SearchError::Closed)?
            .map_err(SearchError::Index)
    }

    /// Clears the index and indexes `docs`; `progress(done, total)` after each file, `total`
    /// being the iterator's size hint. Searches see partial results until it returns.
    pub fn rebuild(
        &self,
        docs: impl Iterator<Item = FileDoc>,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<(), SearchError> {
        self.send(WriterOp::Clear)?;
        self.flush()?;
        self.set_bulk(true)?;
        let (low, high) = docs.size_hint();
        let total = high.unwrap_or(low);
        let mut result = Ok(());
        for (done, doc) in docs.enumerate() {
            result = self.upsert(doc);
            if result.is_err() {
                break;
            }
            progress(done + 1, total.max(done + 1));
        }
        self.set_bulk(false)?;
        result.and(self.flush())
    }

    /// While on, the writer commits every
    /// [`writer::BULK_COMMIT_DELAY`](super::writer::BULK_COMMIT_DELAY) rather than within
    /// 200 ms: for bulk loads (`rebuild` turns it on and off itself).
    pub fn set_bulk(&self, bulk: bool) -> Result<(), SearchError> {
        self.send(WriterOp::Bulk(bulk))
    }

    /// file id → version of every indexed file. With an embedder, files indexed without
    /// vectors are left out, so that a start-up comparison reindexes them.
    pub fn indexed_files(&self) -> Result<HashMap<String, u64>, SearchError> {
        let searcher = self.reader.searcher();
        let query = self.term(self.fields.kind, KIND_FILE);
        let weight = query
            .weight(EnableScoring::disabled_from_searcher(&searcher))
            .map_err(SearchError::index)?;
        let mut out = HashMap::new();
        for reader in searcher.segment_readers() {
            let fast = reader.fast_fields();
            let ids = fast.str("file_id").map_err(SearchError::index)?;
            let versions = fast
                .column_opt::<u64>("version")
                .map_err(SearchError::index)?;
            let embedded = fast
                .column_opt::<u64>("embedded")
                .map_err(SearchError::index)?;
            let mut scorer = weight.scorer(reader, 1.0).map_err(SearchError::index)?;
            let mut doc = scorer.doc();
            while doc != TERMINATED {
                if !reader.is_deleted(doc) {
                    let has_vectors = embedded.as_ref().and_then(|c| c.first(doc)) == Some(1);
                    if has_vectors || self.embedder.is_none() {
                        let version = versions.as_ref().and_then(|c| c.first(doc)).unwrap_or(0);
                        out.insert(collect::fast_str(ids.as_ref(), doc), version);
                    }
                }
                doc = scorer.advance();
            }
        }
        Ok(out)
    }

    fn send(&self, op: WriterOp) -> Result<(), SearchError> {
        self.sender.send(op).map_err(|_| SearchError::Closed)
    }

    fn prepare(&self, doc: &FileDoc) -> Result<Vec<TantivyDocument>, SearchError> {
        validate_doc(doc)?;
        let Some(embedder) = &self.embedder else {
            return Ok(schema::file_documents(&self.fields, doc, &[], false));
        };
        let chunks = chunk_segments(&doc.segments);
        let existing = self.existing_vectors(&doc.file_id)?;
        let missing: Vec<&str> = chunks
            .iter()
            .filter(|c| !existing.contains_key(&c.text_hash()))
            .map(|c| c.text.as_str())
            .collect();
        let mut fresh = embedder.embed(&missing)?.into_iter();
        let mut pairs = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let vector = match existing.get(&chunk.text_hash()) {
                Some(v) => v.clone(),
                None => fresh
                    .next()
                    .ok_or_else(|| SearchError::Model("fewer vectors than chunks".to_owned()))?,
            };
            pairs.push((chunk, Some(vector)));
        }
        Ok(schema::file_documents(&self.fields, doc, &pairs, true))
    }

    /// Vectors of the file's chunks already in the index, by text hash.
    fn existing_vectors(&self, file_id: &str) -> Result<HashMap<u64, Vec<f32>>, SearchError> {
        let searcher = self.reader.searcher();
        let query = BooleanQuery::new(vec![
            (Occur::Must, self.term(self.fields.kind, KIND_CHUNK)),
            (Occur::Must, self.term(self.fields.file_id, file_id)),
        ]);
        let weight = query
            .weight(EnableScoring::disabled_from_searcher(&searcher))
            .map_err(SearchError::index)?;
        let mut out = HashMap::new();
        for reader in searcher.segment_readers() {
            let hashes = reader
                .fast_fields()
                .column_opt::<u64>("chunk_hash")
                .map_err(SearchError::index)?;
            let column = reader
                .fast_fields()
                .bytes("vector")
                .map_err(SearchError::index)?;
            let (Some(hashes), Some(column)) = (hashes, column) else {
                continue;
            };
            let mut scorer = weight.scorer(reader, 1.0).map_err(SearchError::index)?;
            let mut doc = scorer.doc();
            while doc != TERMINATED {
                if !reader.is_deleted(doc)
                    && let (Some(hash), Some(ord)) =
                        (hashes.first(doc), column.term_ords(doc).next())
                {
                    let mut bytes = Vec::new();
                    if column.ord_to_bytes(ord, &mut bytes).unwrap_or(false) {
                        out.insert(hash, vectors::decode_vector(&bytes));
                    }
                }
                doc = scorer.advance();
            }
        }
        Ok(out)
    }
}

fn validate_doc(doc: &FileDoc) -> Result<(), SearchError> {
    if doc.file_id.trim().is_empty() {
        return Err(SearchError::Request("a file needs a file_id".to_owned()));
    }
    if doc.owner_id.trim().is_empty() {
        return Err(SearchError::Request(format!(
            "file {} has no owner_id",
            doc.file_id
        )));
    }
    Ok(())
}
