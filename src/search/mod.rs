//! Search over transcripts: a tantivy index of segments (keyword search with phrases, prefixes,
//! fuzzy matching, boolean operators, filters, highlights), MiniLM chunk vectors (semantic
//! search, exact scan), and hybrid search by reciprocal rank fusion. Access control is part of
//! every query.
//!
//! # Public API
//!
//! - [`SearchService::open`]`(index_dir, embedder)` opens or creates the index and starts the one
//!   writer thread. [`SearchService::opened`] says whether the index was `Existing`, `Created`,
//!   or `RecreatedAfterCorruption` (then the caller rebuilds it from redb).
//! - Writes (all blocking; call from a blocking thread): [`SearchService::upsert`] replaces every
//!   document of a file (it embeds the chunks whose text changed on the calling thread; a
//!   rename or tag change reuses the stored vectors), [`SearchService::delete`],
//!   [`SearchService::flush`] (returns once everything sent before is committed and visible),
//!   [`SearchService::rebuild`] (clear and reindex, with progress). The writer commits within
//!   [`writer::COMMIT_DELAY`] (200 ms) of a change without any flush.
//! - [`SearchService::indexed_files`]: file id → version, to compare with redb at start-up.
//! - [`SearchService::search`]`(request, viewer_id)`: blocking, `&self`, callable from many
//!   threads. Bad queries are [`SearchError::Query`] (HTTP 400).
//!
//! # Semantics
//!
//! - A viewer sees a document only if their id is in the file's `readers` (the owner is always a
//!   reader). The condition is a clause inside every query and the semantic scan, so hits,
//!   `total` and `files` never count what the viewer may not see. It never adds to a score.
//!   For most viewers it is the `kind` and `readers` term clauses; for a viewer who may read at
//!   least 1/32 of the documents (the homelab owner), the same condition as per-segment bitsets
//!   cached per viewer and segment (`acl`), since intersecting with two posting lists as long as
//!   the index costs more than the query itself.
//! - Keyword mode: words are analysed like the index (lower case, ASCII folding, the stemmer of
//!   the file's language, English when none is given, no stemming for languages without one).
//!   `"a phrase"`, `"a phrase"~2` (slop), `word*`, `word~1` / `word~2` (explicit fuzzy), `AND`,
//!   `OR`, `NOT`, `+word`, `-word`, parentheses, `word^2`. Words are OR-ed by default. A bare
//!   word that matches nothing the viewer can see becomes fuzzy (distance 1 up to 5 letters, 2
//!   from 6). An empty `q` matches every segment (filters still apply). `field:` syntax and
//!   ranges are errors (filters are request parameters).
//! - Semantic mode: the query is embedded, every visible chunk that passes the filters is
//!   scored (int8 scan, AVX2 when the CPU has it, on up to [`MAX_SCAN_THREADS`] threads from
//!   [`PARALLEL_SCAN_ROWS`] vectors; then the best 4× candidates rescored with the stored f32
//!   vectors); hits with cosine ≥ [`MIN_COSINE`], at most [`SEMANTIC_RESULTS`], best first;
//!   `score` is the true cosine. A hit is a chunk: `segment_id`/`start` of its first segment, `end` of its
//!   last, `speaker` the one with most words, `highlight` the escaped text (no marks).
//! - Hybrid mode: the best [`HYBRID_KEYWORD`] keyword hits and the semantic hits fused by
//!   reciprocal rank (k = 60). A keyword hit inside a semantic chunk gets both contributions
//!   (and absorbs the chunk); `score` is the fused score and `cosine` the chunk's true cosine.
//! - `total` counts all keyword matches exactly (keyword mode) or the fused/semantic list;
//!   `files` groups the same set by file, most matches first, at most [`MAX_FILE_GROUPS`]
//!   (file ids and names are read with one sorted pass over each segment's dictionary, so
//!   thousands of files cost about as much as a few).
//! - `page` starts at 1; `per_page` is 1..=100; `page × per_page` ≤ 10 000.
//! - Without an embedder, semantic and hybrid requests fail with
//!   [`SearchError::SemanticUnavailable`]; they never fall back to keywords silently.

mod acl;
mod collect;
pub mod embed;
mod query;
mod schema;
pub mod vectors;
pub mod writer;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};
use tantivy::collector::{Collector, Count, TopDocs};
use tantivy::columnar::StrColumn;
use tantivy::query::{
    AllQuery, BooleanQuery, ConstScoreQuery, EnableScoring, Occur, Query, RangeQuery, TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption, Value};
use tantivy::{
    DocAddress, DocId, Executor, Index, IndexReader, ReloadPolicy, Searcher, TERMINATED,
    TantivyDocument, Term,
};

pub use embed::Embedder;
use query::{Highlighter, QueryBuilder, escape, plain_words};
use schema::{Fields, KIND_CHUNK, KIND_FILE, KIND_SEGMENT, build_schema, register_analyzers};
use vectors::{Candidate, TopCandidates, VectorCache, chunk_segments, dot_f32, quantize};
use writer::{WriterOp, WriterThread};

/// Semantic hits below this cosine are not shown (unrelated text scores about 0–0.15 with
/// MiniLM, paraphrases 0.4 and up).
pub const MIN_COSINE: f32 = 0.2;
/// Most semantic hits per query.
pub const SEMANTIC_RESULTS: usize = 100;
/// Keyword hits taken into hybrid fusion.
pub const HYBRID_KEYWORD: usize = 200;
/// Reciprocal rank fusion constant.
pub const RRF_K: f32 = 60.0;
/// Most entries in `files`.
pub const MAX_FILE_GROUPS: usize = 200;
pub const MAX_PER_PAGE: usize = 100;
pub const MAX_RESULT_WINDOW: usize = 10_000;
/// The semantic scan runs on the search threads (see [`SearchService::set_search_threads`])
/// once the index holds this many chunk vectors; below, on one.
pub const PARALLEL_SCAN_ROWS: usize = 50_000;
/// Most threads one search uses by default.
pub const MAX_SCAN_THREADS: usize = 4;

/// One file and its transcript, as indexed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FileDoc {
    pub file_id: String,
    /// Transcript revision (or updated-at); [`SearchService::indexed_files`] returns it.
    pub version: u64,
    pub owner_id: String,
    /// User ids allowed to see the file: the owner and the users of collections shared with
    /// them (the owner is added if missing).
    pub readers: Vec<String>,
    pub collections: Vec<String>,
    pub filename: String,
    /// ISO 639-1 code (`en`, `fr`, …); empty means English.
    pub language: String,
    pub tags: Vec<String>,
    /// Unix seconds.
    pub uploaded_at: u64,
    /// `audio`, `video` or a MIME type.
    pub media_type: String,
    /// Seconds.
    pub duration: f64,
    pub segments: Vec<SegmentDoc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SegmentDoc {
    pub segment_id: usize,
    pub start: f64,
    pub end: f64,
    /// Display name.
    pub speaker: Option<String>,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Keyword,
    Semantic,
    Hybrid,
}

impl Mode {
    pub fn parse(text: &str) -> Option<Mode> {
        match text {
            "keyword" => Some(Mode::Keyword),
            "semantic" => Some(Mode::Semantic),
            "hybrid" => Some(Mode::Hybrid),
            _ => None,
        }
    }
}

/// A search. Filters are exact (case-insensitive for speaker, tag, language, media type);
/// `media_type` is `audio`, `video` or a MIME type; dates are unix seconds, inclusive.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchRequest {
    pub q: String,
    pub mode: Mode,
    pub speaker: Option<String>,
    pub tag: Option<String>,
    pub collection: Option<String>,
    pub language: Option<String>,
    pub media_type: Option<String>,
    pub date_from: Option<u64>,
    pub date_to: Option<u64>,
    pub min_duration: Option<f64>,
    pub max_duration: Option<f64>,
    pub file_id: Option<String>,
    /// From 1.
    pub page: usize,
    pub per_page: usize,
}

impl SearchRequest {
    /// First page of 20.
    pub fn new(q: impl Into<String>, mode: Mode) -> Self {
        Self {
            q: q.into(),
            mode,
            page: 1,
            per_page: 20,
            ..Self::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    pub file_id: String,
    pub segment_id: usize,
    /// Seconds: where the player jumps to.
    pub start: f64,
    pub end: f64,
    pub speaker: Option<String>,
    pub text: String,
    /// `text` HTML-escaped, matches in `<mark>…</mark>`.
    pub highlight: String,
    /// BM25 (keyword), true cosine (semantic), fused RRF score (hybrid).
    pub score: f32,
    /// The true cosine with the query when the semantic side found this hit.
    pub cosine: Option<f32>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FileGroup {
    pub file_id: String,
    pub filename: String,
    pub count: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchResponse {
    pub hits: Vec<Hit>,
    pub files: Vec<FileGroup>,
    pub total: usize,
    pub page: usize,
    pub per_page: usize,
    pub mode: Mode,
}

/// What [`SearchService::open`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    Existing,
    /// No index was there (first start, or the directory was deleted): rebuild from redb.
    Created,
    /// The index could not be used (reason given) and was replaced by an empty one: rebuild.
    RecreatedAfterCorruption {
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error("{0}")]
    Query(String),
    #[error("{0}")]
    Request(String),
    #[error(
        "semantic search is not available: the {} model is not loaded",
        embed::MODEL_NAME
    )]
    SemanticUnavailable,
    #[error("embedding model: {0}")]
    Model(String),
    #[error("search index: {0}")]
    Index(String),
    #[error("the search index at {0} is in use by another process")]
    Locked(String),
    #[error("the search writer has stopped")]
    Closed,
}

impl SearchError {
    /// Stable kebab-case code (HTTP: `search-query` and `search-request` are 400,
    /// `search-semantic-unavailable` 503, the rest 500).
    pub fn code(&self) -> &'static str {
        match self {
            SearchError::Query(_) => "search-query",
            SearchError::Request(_) => "search-request",
            SearchError::SemanticUnavailable => "search-semantic-unavailable",
            SearchError::Model(_) => "search-model",
            SearchError::Index(_) => "search-index",
            SearchError::Locked(_) => "search-locked",
            SearchError::Closed => "search-closed",
        }
    }

    fn index(error: impl std::fmt::Display) -> Self {
        SearchError::Index(error.to_string())
    }
}

/// Sizes for status pages and the benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct IndexStats {
    pub documents: u64,
    pub segments: usize,
    pub disk_bytes: u64,
    pub vector_memory_bytes: usize,
}

/// `audio/mpeg` → `audio`; `audio`/`video` stay; anything else as given.
pub fn media_kind(media: &str) -> &str {
    media.split('/').next().unwrap_or(media)
}

const VERSION_FILE: &str = "opentranscribe-search.version";
const WRITER_MEMORY_PER_THREAD: usize = 64 * 1024 * 1024;
const CHANNEL_CAPACITY: usize = 64;

pub struct SearchService {
    dir: PathBuf,
    reader: IndexReader,
    fields: Fields,
    sender: SyncSender<WriterOp>,
    thread: Mutex<Option<JoinHandle<()>>>,
    embedder: Option<Embedder>,
    vectors: Arc<VectorCache>,
    access: Arc<acl::AccessCache>,
    /// Threads of one search: segments collected in parallel, the vector scan split.
    search_threads: usize,
    executor: Executor,
    opened: Opened,
}

impl std::fmt::Debug for SearchService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchService")
            .field("dir", &self.dir)
            .field("opened", &self.opened)
            .finish_non_exhaustive()
    }
}

impl SearchService {
    /// Opens the index in `index_dir` (created if missing; replaced by an empty one if it is
    /// corrupt or from another schema) and starts the writer thread.
    pub fn open(
        index_dir: &Path,
        embedder: Option<Embedder>,
    ) -> Result<SearchService, SearchError> {
        std::fs::create_dir_all(index_dir).map_err(|e| {
            SearchError::Index(format!("cannot create {}: {e}", index_dir.display()))
        })?;
        let (schema, fields) = build_schema();
        let (index, reader, opened) = match try_open(index_dir, &schema) {
            Ok(Some((index, reader))) => (index, reader, Opened::Existing),
            Ok(None) => {
                let (index, reader) = create(index_dir, &schema)?;
                (index, reader, Opened::Created)
            }
            Err(reason) => {
                tracing::warn!(dir = %index_dir.display(), %reason, "search index unusable; recreating it empty");
                wipe(index_dir)?;
                let (index, reader) = create(index_dir, &schema)?;
                (index, reader, Opened::RecreatedAfterCorruption { reason })
            }
        };
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 4);
        let writer = index
            .writer_with_num_threads(threads, threads * WRITER_MEMORY_PER_THREAD)
            .map_err(|e| match e {
                tantivy::TantivyError::LockFailure(..) => {
                    SearchError::Locked(index_dir.display().to_string())
                }
                other => SearchError::index(other),
            })?;
        let vectors = Arc::new(VectorCache::default());
        let dimension = embedder.as_ref().map(Embedder::dimension);
        if let Some(dimension) = dimension {
            vectors
                .refresh(&reader.searcher(), dimension)
                .map_err(SearchError::index)?;
        }
        let (sender, receiver) = sync_channel(CHANNEL_CAPACITY);
        let worker = WriterThread {
            writer,
            reader: reader.clone(),
            file_id_field: fields.file_id,
            vectors: dimension.map(|d| (vectors.clone(), d)),
        };
        let thread = std::thread::Builder::new()
            .name("search-writer".to_owned())
            .spawn(move || worker.run(receiver))
            .map_err(|e| SearchError::Index(format!("cannot start the writer thread: {e}")))?;
        Ok(SearchService {
            dir: index_dir.to_path_buf(),
            reader,
            fields,
            sender,
            thread: Mutex::new(Some(thread)),
            embedder,
            vectors,
            access: Arc::new(acl::AccessCache::default()),
            search_threads: 1,
            executor: Executor::single_thread(),
            opened,
        }
        .with_search_threads(default_search_threads()))
    }

    /// Runs each search on `threads` threads (at least 1; the default is the machine's cores,
    /// at most [`MAX_SCAN_THREADS`]): segments are collected in parallel and the vector scan
    /// is split.
    pub fn set_search_threads(&mut self, threads: usize) {
        let threads = threads.max(1);
        self.executor = search_executor(threads);
        self.search_threads = threads;
    }

    fn with_search_threads(mut self, threads: usize) -> Self {
        self.set_search_threads(threads);
        self
    }

    /// Collects `query` over every segment on the search threads.
    fn collect<C: Collector>(
        &self,
        searcher: &Searcher,
        query: &dyn Query,
        collector: &C,
    ) -> Result<C::Fruit, SearchError> {
        let scoring = if collector.requires_scoring() {
            EnableScoring::enabled_from_searcher(searcher)
        } else {
            EnableScoring::disabled_from_searcher(searcher)
        };
        searcher
            .search_with_executor(query, collector, &self.executor, scoring)
            .map_err(SearchError::index)
    }

    pub fn opened(&self) -> &Opened {
        &self.opened
    }

    pub fn has_embedder(&self) -> bool {
        self.embedder.is_some()
    }

    pub fn embedder(&self) -> Option<&Embedder> {
        self.embedder.as_ref()
    }

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

    /// While on, the writer commits every [`writer::BULK_COMMIT_DELAY`] rather than within
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

    pub fn stats(&self) -> IndexStats {
        let searcher = self.reader.searcher();
        IndexStats {
            documents: searcher.num_docs(),
            segments: searcher.segment_readers().len(),
            disk_bytes: dir_size(&self.dir),
            vector_memory_bytes: self.vectors.memory_bytes(),
        }
    }

    pub fn search(
        &self,
        request: &SearchRequest,
        viewer_id: &str,
    ) -> Result<SearchResponse, SearchError> {
        validate_request(request)?;
        let searcher = self.reader.searcher();
        if self.access.memory_bytes() > 0 {
            let live: Vec<_> = searcher
                .segment_readers()
                .iter()
                .map(|r| r.segment_id())
                .collect();
            self.access.retain(&live);
        }
        let offset = (request.page - 1) * request.per_page;
        let (hits, files, total) = match request.mode {
            Mode::Keyword => self.keyword(&searcher, request, viewer_id, offset)?,
            Mode::Semantic => self.semantic(&searcher, request, viewer_id, offset)?,
            Mode::Hybrid => self.hybrid(&searcher, request, viewer_id, offset)?,
        };
        Ok(SearchResponse {
            hits,
            files,
            total,
            page: request.page,
            per_page: request.per_page,
            mode: request.mode,
        })
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

    fn term(&self, field: Field, value: &str) -> Box<dyn Query> {
        Box::new(TermQuery::new(
            Term::from_field_text(field, value),
            IndexRecordOption::Basic,
        ))
    }

    /// Documents of `kind` that `viewer_id` may read, as non-scoring clauses: the `kind` and
    /// `readers` terms, or for a viewer who may read a large share of the index the same
    /// condition as cached per-segment bitsets ([`acl`]).
    fn access_clauses(
        &self,
        searcher: &Searcher,
        viewer_id: &str,
        kind: &'static str,
    ) -> Vec<(Occur, Box<dyn Query>)> {
        let readers = Term::from_field_text(self.fields.readers, viewer_id);
        let documents: u64 = searcher
            .segment_readers()
            .iter()
            .map(|r| u64::from(r.max_doc()))
            .sum();
        let readable = searcher.doc_freq(&readers).unwrap_or(0);
        if documents > 0 && readable.saturating_mul(acl::DENSE_VIEWER_RATIO) >= documents {
            return vec![(
                Occur::Must,
                Box::new(acl::AccessQuery {
                    cache: self.access.clone(),
                    kind_field: self.fields.kind,
                    readers_field: self.fields.readers,
                    viewer: viewer_id.to_owned(),
                    kind,
                }),
            )];
        }
        let unscored = |query: Box<dyn Query>| -> Box<dyn Query> {
            Box::new(ConstScoreQuery::new(query, 0.0))
        };
        vec![
            (Occur::Must, unscored(self.term(self.fields.kind, kind))),
            (
                Occur::Must,
                unscored(self.term(self.fields.readers, viewer_id)),
            ),
        ]
    }

    /// Access control and the request's filters, for documents of `kind`.
    fn filter_clauses(
        &self,
        searcher: &Searcher,
        request: &SearchRequest,
        viewer_id: &str,
        kind: &'static str,
    ) -> Vec<(Occur, Box<dyn Query>)> {
        let f = &self.fields;
        let mut clauses = self.access_clauses(searcher, viewer_id, kind);
        let mut exact = |field: Field, value: &Option<String>, lower: bool| {
            if let Some(value) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
                let value = if lower {
                    value.to_lowercase()
                } else {
                    value.to_owned()
                };
                clauses.push((Occur::Must, self.term(field, &value)));
            }
        };
        exact(f.speaker, &request.speaker, true);
        exact(f.tags, &request.tag, true);
        exact(f.collections, &request.collection, false);
        exact(
            f.language,
            &request.language.as_deref().map(schema::normalize_language),
            false,
        );
        exact(f.media_type, &request.media_type, true);
        exact(f.file_id, &request.file_id, false);
        if request.date_from.is_some() || request.date_to.is_some() {
            let bound = |v: Option<u64>| {
                v.map_or(Bound::Unbounded, |v| {
                    Bound::Included(Term::from_field_u64(f.uploaded_at, v))
                })
            };
            clauses.push((
                Occur::Must,
                Box::new(RangeQuery::new(
                    bound(request.date_from),
                    bound(request.date_to),
                )),
            ));
        }
        if request.min_duration.is_some() || request.max_duration.is_some() {
            let bound = |v: Option<f64>| {
                v.map_or(Bound::Unbounded, |v| {
                    Bound::Included(Term::from_field_f64(f.duration, v))
                })
            };
            clauses.push((
                Occur::Must,
                Box::new(RangeQuery::new(
                    bound(request.min_duration),
                    bound(request.max_duration),
                )),
            ));
        }
        clauses
    }

    /// The text fields to search: the requested language's, or every field with any term.
    fn text_fields(&self, searcher: &Searcher, request: &SearchRequest) -> Vec<(usize, Field)> {
        if let Some(language) = request.language.as_deref().filter(|l| !l.trim().is_empty()) {
            let index = schema::language_field_index(language);
            return vec![(index, self.fields.text_lang[index])];
        }
        self.fields
            .text_lang
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, field)| {
                searcher.segment_readers().iter().any(|reader| {
                    reader
                        .inverted_index(*field)
                        .is_ok_and(|inverted| inverted.terms().num_terms() > 0)
                })
            })
            .collect()
    }

    /// The keyword query with access control and filters; `None` when the text has no words.
    fn keyword_query(
        &self,
        searcher: &Searcher,
        request: &SearchRequest,
        viewer_id: &str,
    ) -> Result<Option<(BooleanQuery, Highlighter)>, SearchError> {
        let fields = self.text_fields(searcher, request);
        let visibility = BooleanQuery::new(self.access_clauses(searcher, viewer_id, KIND_SEGMENT));
        let mut builder = QueryBuilder::new(searcher, fields, Box::new(visibility));
        let user_query: Box<dyn Query> = if request.q.trim().is_empty() {
            Box::new(AllQuery)
        } else {
            match builder.build(&request.q)? {
                Some(query) => query,
                None => return Ok(None),
            }
        };
        let mut clauses = vec![(Occur::Must, user_query)];
        clauses.extend(self.filter_clauses(searcher, request, viewer_id, KIND_SEGMENT));
        Ok(Some((BooleanQuery::new(clauses), builder.highlighter)))
    }

    fn keyword(
        &self,
        searcher: &Searcher,
        request: &SearchRequest,
        viewer_id: &str,
        offset: usize,
    ) -> Result<(Vec<Hit>, Vec<FileGroup>, usize), SearchError> {
        let Some((query, highlighter)) = self.keyword_query(searcher, request, viewer_id)? else {
            return Ok((Vec::new(), Vec::new(), 0));
        };
        let top = TopDocs::with_limit(request.per_page)
            .and_offset(offset)
            .order_by_score();
        let (top, total, counts) =
            self.collect(searcher, &query, &(top, Count, collect::FileCounts))?;
        let hits = top
            .into_iter()
            .map(|(score, address)| self.hit(searcher, address, score, None, Some(&highlighter)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((hits, file_groups(counts), total))
    }

    /// The semantic list: (true cosine, chunk address), best first.
    fn semantic_ranked(
        &self,
        searcher: &Searcher,
        request: &SearchRequest,
        viewer_id: &str,
    ) -> Result<Vec<(f32, DocAddress)>, SearchError> {
        let embedder = self
            .embedder
            .as_ref()
            .ok_or(SearchError::SemanticUnavailable)?;
        let text = plain_words(&request.q);
        if text.is_empty() {
            return Err(SearchError::Query(
                "semantic search needs a query with words".to_owned(),
            ));
        }
        let query_vector = embedder
            .embed(&[&text])?
            .pop()
            .ok_or_else(|| SearchError::Model("no vector for the query".to_owned()))?;
        self.scan(searcher, request, viewer_id, &query_vector)
    }

    /// Exact nearest neighbours of `query_vector` among the chunks `viewer_id` may see that pass
    /// the request's filters: (true cosine, document), best first (the semantic mode without
    /// embedding the query; the benchmark times it).
    pub fn nearest_chunks(
        &self,
        request: &SearchRequest,
        viewer_id: &str,
        query_vector: &[f32],
    ) -> Result<Vec<(f32, DocAddress)>, SearchError> {
        self.scan(&self.reader.searcher(), request, viewer_id, query_vector)
    }

    fn scan(
        &self,
        searcher: &Searcher,
        request: &SearchRequest,
        viewer_id: &str,
        query_vector: &[f32],
    ) -> Result<Vec<(f32, DocAddress)>, SearchError> {
        self.scan_parts(searcher, request, viewer_id, query_vector, None)
    }

    /// The scan on `parts` threads (`None`: one below [`PARALLEL_SCAN_ROWS`] vectors, else
    /// up to [`MAX_SCAN_THREADS`]).
    fn scan_parts(
        &self,
        searcher: &Searcher,
        request: &SearchRequest,
        viewer_id: &str,
        query_vector: &[f32],
        parts: Option<usize>,
    ) -> Result<Vec<(f32, DocAddress)>, SearchError> {
        let dimension = self
            .embedder
            .as_ref()
            .ok_or(SearchError::SemanticUnavailable)?
            .dimension();
        if query_vector.len() != dimension {
            return Err(SearchError::Request(format!(
                "query vector has {} dimensions, the index {dimension}",
                query_vector.len()
            )));
        }
        let mut codes = Vec::with_capacity(dimension);
        let query_scale = quantize(query_vector, &mut codes);
        let filter =
            BooleanQuery::new(self.filter_clauses(searcher, request, viewer_id, KIND_CHUNK));
        let weight = filter
            .weight(EnableScoring::disabled_from_searcher(searcher))
            .map_err(SearchError::index)?;
        let readers = searcher.segment_readers();
        let segments = readers
            .iter()
            .map(|reader| self.vectors.get(reader, dimension))
            .collect::<Result<Vec<_>, _>>()
            .map_err(SearchError::index)?;
        let parts = parts.unwrap_or_else(|| {
            let rows: usize = segments.iter().map(|s| s.rows()).sum();
            if rows >= PARALLEL_SCAN_ROWS {
                self.search_threads
            } else {
                1
            }
        });
        let parts = parts.max(1);
        // Part `part` of `parts` scans the same share of every segment's documents.
        let scan_part = |part: usize| -> tantivy::Result<TopCandidates> {
            let mut top = TopCandidates::new(SEMANTIC_RESULTS * 4);
            for (ord, reader) in readers.iter().enumerate() {
                let max_doc = u64::from(reader.max_doc());
                let from = (max_doc * part as u64 / parts as u64) as DocId;
                let to = (max_doc * (part as u64 + 1) / parts as u64) as DocId;
                if from >= to {
                    continue;
                }
                let vectors = &segments[ord];
                let mut scorer = weight.scorer(reader, 1.0)?;
                let alive = reader.alive_bitset();
                let mut doc = scorer.doc();
                if doc < from {
                    doc = scorer.seek(from);
                }
                while doc < to {
                    if alive.is_none_or(|a| a.is_alive(doc))
                        && let Some(score) = vectors.approx(doc, &codes, query_scale)
                    {
                        top.push(Candidate {
                            score,
                            segment_ord: ord as u32,
                            doc,
                        });
                    }
                    doc = scorer.advance();
                }
            }
            Ok(top)
        };
        let top = if parts == 1 {
            scan_part(0).map_err(SearchError::index)?
        } else {
            let results = std::thread::scope(|scope| {
                let others: Vec<_> = (1..parts)
                    .map(|part| {
                        let scan_part = &scan_part;
                        scope.spawn(move || scan_part(part))
                    })
                    .collect();
                let mut results = vec![scan_part(0)];
                for handle in others {
                    results.push(handle.join().unwrap_or_else(|_| {
                        Err(tantivy::TantivyError::InternalError(
                            "a vector scan thread panicked".to_owned(),
                        ))
                    }));
                }
                results
            });
            let mut merged = TopCandidates::new(SEMANTIC_RESULTS * 4);
            for result in results {
                for candidate in result.map_err(SearchError::index)?.into_vec() {
                    merged.push(candidate);
                }
            }
            merged
        };
        let mut ranked: Vec<(f32, DocAddress)> = top
            .into_vec()
            .into_iter()
            .filter_map(|c| {
                let exact = segments[c.segment_ord as usize].exact(c.doc)?;
                let cosine = dot_f32(query_vector, &exact);
                (cosine >= MIN_COSINE).then_some((cosine, DocAddress::new(c.segment_ord, c.doc)))
            })
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        ranked.truncate(SEMANTIC_RESULTS);
        Ok(ranked)
    }

    fn semantic(
        &self,
        searcher: &Searcher,
        request: &SearchRequest,
        viewer_id: &str,
        offset: usize,
    ) -> Result<(Vec<Hit>, Vec<FileGroup>, usize), SearchError> {
        let ranked = self.semantic_ranked(searcher, request, viewer_id)?;
        let mut lookup = FastLookup::new(searcher);
        lookup.prefetch(ranked.iter().map(|(_, address)| *address));
        let mut counts = collect::FileCountsFruit::new();
        for (_, address) in &ranked {
            let (file_id, filename) = lookup.file(*address);
            counts.entry(file_id).or_insert((0, filename)).0 += 1;
        }
        let hits = ranked
            .iter()
            .skip(offset)
            .take(request.per_page)
            .map(|(cosine, address)| self.hit(searcher, *address, *cosine, Some(*cosine), None))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((hits, file_groups(counts), ranked.len()))
    }

    fn hybrid(
        &self,
        searcher: &Searcher,
        request: &SearchRequest,
        viewer_id: &str,
        offset: usize,
    ) -> Result<(Vec<Hit>, Vec<FileGroup>, usize), SearchError> {
        let semantic = self.semantic_ranked(searcher, request, viewer_id)?;
        let keyword = match self.keyword_query(searcher, request, viewer_id)? {
            Some((query, keyword_highlighter)) => {
                let top = self.collect(
                    searcher,
                    &query,
                    &TopDocs::with_limit(HYBRID_KEYWORD).order_by_score(),
                )?;
                Some((top, keyword_highlighter))
            }
            None => None,
        };
        let mut lookup = FastLookup::new(searcher);
        lookup.prefetch(
            semantic.iter().map(|(_, address)| *address).chain(
                keyword
                    .iter()
                    .flat_map(|(top, _)| top.iter().map(|(_, address)| *address)),
            ),
        );
        // Semantic chunks: (file, first segment, last segment), and whether a keyword hit
        // inside already carries them.
        let chunks: Vec<(String, u64, u64)> = semantic
            .iter()
            .map(|(_, address)| {
                let (first, last) = lookup.segment_range(*address);
                (lookup.file(*address).0, first, last)
            })
            .collect();
        let mut absorbed = vec![false; semantic.len()];
        // (fused score, address, cosine, is a keyword segment hit)
        let mut fused: Vec<(f32, DocAddress, Option<f32>, bool)> = Vec::new();
        let mut highlighter = None;
        if let Some((top, keyword_highlighter)) = keyword {
            for (rank, (_, address)) in top.into_iter().enumerate() {
                let mut score = 1.0 / (RRF_K + rank as f32 + 1.0);
                let mut cosine = None;
                let file = lookup.file(address).0;
                let (segment, _) = lookup.segment_range(address);
                if let Some(index) = chunks
                    .iter()
                    .position(|(f, first, last)| *f == file && (*first..=*last).contains(&segment))
                {
                    score += 1.0 / (RRF_K + index as f32 + 1.0);
                    cosine = Some(semantic[index].0);
                    absorbed[index] = true;
                }
                fused.push((score, address, cosine, true));
            }
            highlighter = Some(keyword_highlighter);
        }
        for (index, (cosine, address)) in semantic.iter().enumerate() {
            if !absorbed[index] {
                fused.push((
                    1.0 / (RRF_K + index as f32 + 1.0),
                    *address,
                    Some(*cosine),
                    false,
                ));
            }
        }
        fused.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut counts = collect::FileCountsFruit::new();
        for (_, address, _, _) in &fused {
            let (file_id, filename) = lookup.file(*address);
            counts.entry(file_id).or_insert((0, filename)).0 += 1;
        }
        let hits = fused
            .iter()
            .skip(offset)
            .take(request.per_page)
            .map(|(score, address, cosine, is_segment)| {
                let highlighter = highlighter.as_ref().filter(|_| *is_segment);
                self.hit(searcher, *address, *score, *cosine, highlighter)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok((hits, file_groups(counts), fused.len()))
    }

    /// A hit from a stored segment or chunk document; chunks are never highlighted.
    fn hit(
        &self,
        searcher: &Searcher,
        address: DocAddress,
        score: f32,
        cosine: Option<f32>,
        highlighter: Option<&Highlighter>,
    ) -> Result<Hit, SearchError> {
        let doc: TantivyDocument = searcher.doc(address).map_err(SearchError::index)?;
        let f = &self.fields;
        let text_of = |field: Field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let number = |field: Field| doc.get_first(field).and_then(|v| v.as_f64()).unwrap_or(0.0);
        let text = text_of(f.text);
        let highlight = match highlighter {
            Some(h) => h.highlight(&text, schema::language_field_index(&text_of(f.language))),
            _ => escape(&text),
        };
        let speaker = Some(text_of(f.speaker_name)).filter(|s| !s.is_empty());
        Ok(Hit {
            file_id: text_of(f.file_id),
            segment_id: doc
                .get_first(f.segment_id)
                .and_then(|v| v.as_u64())
                .unwrap_or(0) as usize,
            start: number(f.start),
            end: number(f.end),
            speaker,
            highlight,
            text,
            score,
            cosine,
        })
    }
}

impl Drop for SearchService {
    fn drop(&mut self) {
        // Closing the channel ends the writer thread after a final commit.
        let (closed, _) = sync_channel(0);
        drop(std::mem::replace(&mut self.sender, closed));
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("the search writer thread panicked");
        }
    }
}

type U64Column = tantivy::columnar::Column<u64>;

/// Fast-field reads by document address, with columns opened once per segment and strings
/// cached by (segment, column, ordinal); [`FastLookup::prefetch`] resolves many addresses with
/// one pass over each dictionary (a single lookup decompresses a dictionary block).
struct FastLookup<'a> {
    searcher: &'a Searcher,
    columns: HashMap<u32, (Option<StrColumn>, Option<StrColumn>)>,
    segment_ids: HashMap<u32, (Option<U64Column>, Option<U64Column>)>,
    /// (segment, 0 for file id / 1 for filename, ordinal) → string.
    strings: HashMap<(u32, u8, u64), String>,
}

impl<'a> FastLookup<'a> {
    fn new(searcher: &'a Searcher) -> Self {
        Self {
            searcher,
            columns: HashMap::new(),
            segment_ids: HashMap::new(),
            strings: HashMap::new(),
        }
    }

    fn columns(&mut self, segment_ord: u32) -> &(Option<StrColumn>, Option<StrColumn>) {
        Self::open_columns(&mut self.columns, self.searcher, segment_ord)
    }

    fn open_columns<'c>(
        columns: &'c mut HashMap<u32, (Option<StrColumn>, Option<StrColumn>)>,
        searcher: &Searcher,
        segment_ord: u32,
    ) -> &'c (Option<StrColumn>, Option<StrColumn>) {
        columns.entry(segment_ord).or_insert_with(|| {
            let fast = searcher.segment_reader(segment_ord).fast_fields();
            (
                fast.str("file_id").ok().flatten(),
                fast.str("filename").ok().flatten(),
            )
        })
    }

    /// Resolves the file ids and filenames of `addresses` in one sorted pass per dictionary.
    fn prefetch(&mut self, addresses: impl Iterator<Item = DocAddress>) {
        let mut wanted: HashMap<(u32, u8), Vec<u64>> = HashMap::new();
        for address in addresses {
            let (ids, names) = self.columns(address.segment_ord);
            for (which, column) in [(0u8, ids), (1u8, names)] {
                if let Some(ord) = column.as_ref().and_then(|c| c.ords().first(address.doc_id)) {
                    wanted
                        .entry((address.segment_ord, which))
                        .or_default()
                        .push(ord);
                }
            }
        }
        for ((segment_ord, which), mut ords) in wanted {
            ords.sort_unstable();
            ords.dedup();
            let (ids, names) = self.columns(segment_ord);
            let column = if which == 0 { ids } else { names };
            if let Some(terms) = column
                .as_ref()
                .and_then(|c| collect::sorted_terms(c, &ords))
            {
                for (ord, term) in ords.into_iter().zip(terms) {
                    self.strings.insert((segment_ord, which, ord), term);
                }
            }
        }
    }

    fn string(&mut self, address: DocAddress, which: u8) -> String {
        let (ids, names) =
            Self::open_columns(&mut self.columns, self.searcher, address.segment_ord);
        let column = if which == 0 { ids } else { names };
        let Some(column) = column.as_ref() else {
            return String::new();
        };
        let Some(ord) = column.ords().first(address.doc_id) else {
            return String::new();
        };
        let key = (address.segment_ord, which, ord);
        if let Some(found) = self.strings.get(&key) {
            return found.clone();
        }
        let mut out = String::new();
        let _ = column.ord_to_str(ord, &mut out);
        self.strings.insert(key, out.clone());
        out
    }

    /// (file id, filename).
    fn file(&mut self, address: DocAddress) -> (String, String) {
        (self.string(address, 0), self.string(address, 1))
    }

    /// (first, last) segment id of a segment or chunk document.
    fn segment_range(&mut self, address: DocAddress) -> (u64, u64) {
        let searcher = self.searcher;
        let (first, last) = self
            .segment_ids
            .entry(address.segment_ord)
            .or_insert_with(|| {
                let fast = searcher.segment_reader(address.segment_ord).fast_fields();
                (
                    fast.column_opt::<u64>("segment_id").ok().flatten(),
                    fast.column_opt::<u64>("segment_last").ok().flatten(),
                )
            });
        let first = first
            .as_ref()
            .and_then(|c| c.first(address.doc_id))
            .unwrap_or(0);
        let last = last
            .as_ref()
            .and_then(|c| c.first(address.doc_id))
            .unwrap_or(first);
        (first, last)
    }
}

fn default_search_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_SCAN_THREADS)
}

/// A pool of `threads` (single-threaded for 1, or if the pool cannot be made).
fn search_executor(threads: usize) -> Executor {
    if threads <= 1 {
        return Executor::single_thread();
    }
    Executor::multi_thread(threads, "search-").unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot start the search threads; searching on one");
        Executor::single_thread()
    })
}

fn file_groups(counts: collect::FileCountsFruit) -> Vec<FileGroup> {
    let mut groups: Vec<FileGroup> = counts
        .into_iter()
        .map(|(file_id, (count, filename))| FileGroup {
            file_id,
            filename,
            count,
        })
        .collect();
    groups.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.filename.cmp(&b.filename))
            .then_with(|| a.file_id.cmp(&b.file_id))
    });
    groups.truncate(MAX_FILE_GROUPS);
    groups
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

fn validate_request(request: &SearchRequest) -> Result<(), SearchError> {
    if request.page == 0 {
        return Err(SearchError::Request("page starts at 1".to_owned()));
    }
    if request.per_page == 0 || request.per_page > MAX_PER_PAGE {
        return Err(SearchError::Request(format!(
            "per_page must be between 1 and {MAX_PER_PAGE}"
        )));
    }
    if request.page.saturating_mul(request.per_page) > MAX_RESULT_WINDOW {
        return Err(SearchError::Request(format!(
            "only the first {MAX_RESULT_WINDOW} results can be paged through"
        )));
    }
    for (name, value) in [
        ("min_duration", request.min_duration),
        ("max_duration", request.max_duration),
    ] {
        if value.is_some_and(|v| !v.is_finite()) {
            return Err(SearchError::Request(format!("{name} must be a number")));
        }
    }
    Ok(())
}

/// `Ok(None)` when `dir` holds no index; `Err(reason)` when it holds one we cannot use.
fn try_open(
    dir: &Path,
    schema: &tantivy::schema::Schema,
) -> Result<Option<(Index, IndexReader)>, String> {
    let has_meta = dir.join("meta.json").exists();
    if !has_meta {
        let empty = std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none());
        return if empty {
            Ok(None)
        } else {
            Err("meta.json is missing".to_owned())
        };
    }
    let version = std::fs::read_to_string(dir.join(VERSION_FILE)).unwrap_or_default();
    if version.trim() != schema::SCHEMA_VERSION.to_string() {
        return Err(format!(
            "schema version {:?}, expected {}",
            version.trim(),
            schema::SCHEMA_VERSION
        ));
    }
    let index = Index::open_in_dir(dir).map_err(|e| e.to_string())?;
    if index.schema() != *schema {
        return Err("the index has another schema".to_owned());
    }
    let corrupt = index.validate_checksum().map_err(|e| e.to_string())?;
    if !corrupt.is_empty() {
        let names: Vec<String> = corrupt.iter().map(|p| p.display().to_string()).collect();
        return Err(format!("checksum mismatch in {}", names.join(", ")));
    }
    register_analyzers(&index);
    let reader = reader_for(&index).map_err(|e| e.to_string())?;
    Ok(Some((index, reader)))
}

fn create(
    dir: &Path,
    schema: &tantivy::schema::Schema,
) -> Result<(Index, IndexReader), SearchError> {
    let index = Index::create_in_dir(dir, schema.clone()).map_err(SearchError::index)?;
    register_analyzers(&index);
    std::fs::write(dir.join(VERSION_FILE), schema::SCHEMA_VERSION.to_string())
        .map_err(|e| SearchError::Index(format!("cannot write {VERSION_FILE}: {e}")))?;
    let reader = reader_for(&index).map_err(SearchError::index)?;
    Ok((index, reader))
}

fn reader_for(index: &Index) -> tantivy::Result<IndexReader> {
    index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()
}

/// Empties an unusable index directory, refusing if it holds anything tantivy or we would
/// not have written (a misconfigured path must never cost someone their files).
fn wipe(dir: &Path) -> Result<(), SearchError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| SearchError::Index(format!("cannot read {}: {e}", dir.display())))?;
    let mut paths = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = path.is_file()
            && (name == "meta.json"
                || name == ".managed.json"
                || name == VERSION_FILE
                || name.starts_with(".tantivy")
                || name.ends_with(".lock")
                || [
                    ".idx",
                    ".pos",
                    ".term",
                    ".store",
                    ".fast",
                    ".fieldnorm",
                    ".del",
                    ".tmp",
                ]
                .iter()
                .any(|ext| name.ends_with(ext)));
        if !ours {
            return Err(SearchError::Index(format!(
                "{} is unusable and holds {name}, which is not part of a search index; not deleting it",
                dir.display()
            )));
        }
        paths.push(path);
    }
    for path in paths {
        std::fs::remove_file(&path)
            .map_err(|e| SearchError::Index(format!("cannot remove {}: {e}", path.display())))?;
    }
    Ok(())
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
