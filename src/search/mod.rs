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
//!   vectors); the best chunks it has with cosine > [`SEMANTIC_FLOOR`], at most
//!   [`SEMANTIC_RESULTS`], best first;
//!   `score` is the true cosine. A hit is a chunk: `segment_id`/`start` of its first segment, `end` of its
//!   last, `speaker` the one with most words, `highlight` the escaped text (no marks).
//! - Hybrid mode: the best [`HYBRID_KEYWORD`] keyword hits and the semantic hits fused by
//!   reciprocal rank (k = 60). A keyword hit inside a semantic chunk gets both contributions
//!   (and absorbs the chunk); `score` is the fused score and `cosine` the chunk's true cosine;
//!   a chunk with no keyword hit joins from [`MIN_COSINE`] up.
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
mod filters;
mod hits;
mod hybrid;
mod index_dir;
mod keyword;
mod query;
mod schema;
mod semantic;
mod update;
pub mod vectors;
pub mod writer;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};
use tantivy::collector::Collector;
use tantivy::query::{EnableScoring, Query};
use tantivy::{Executor, IndexReader, Searcher};

pub use embed::Embedder;
use filters::validate_request;
use index_dir::{create, dir_size, try_open, wipe};
use schema::{Fields, build_schema};
use vectors::VectorCache;
use writer::{WriterOp, WriterThread};

/// Semantic mode returns the best chunks it has, ranked, down to this cosine: a question
/// against a chunk of natural conversation that answers it scores only 0.2–0.35 with MiniLM
/// (the whole chunk's other talk dilutes it), so a fixed cut at 0.2 left real answers out.
/// Only chunks pointing away from the query (cosine ≤ 0) are dropped.
pub const SEMANTIC_FLOOR: f32 = 0.0;
/// In hybrid mode, a chunk no keyword hit lies in joins the results from this cosine up
/// (unrelated text scores about 0–0.15 with MiniLM); a keyword hit always shows the cosine of
/// the chunk it lies in.
pub const MIN_COSINE: f32 = 0.15;
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
    /// The file's LLM summary (summary, action items, decisions, topics), searchable as one
    /// more passage at time 0; absent until a summary is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
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
