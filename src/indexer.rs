//! Keeps the search index in step with redb. redb is the truth; the index is derived and can
//! always be rebuilt from it.
//!
//! - At start-up the index is opened (a missing or corrupt one is recreated empty) and compared
//!   with redb in the background: every file whose indexed version differs is reindexed, every
//!   indexed file that no longer exists is removed. A version is a hash of everything indexed
//!   about a file (transcript text, speaker names, readers, tags, collections, name), so any
//!   change missed while the daemon was down is caught.
//! - While running, file ids arrive from two sources: job and edit events on the broadcast
//!   channel (`file.completed`, `file.deleted`, `speaker.updated`, `transcript.updated`) and
//!   [`crate::app::AppState::files_changed`] (tags, sharing, profile renames). They are batched,
//!   read from redb on a blocking thread and sent to the search writer, which commits within
//!   200 ms, so changes are searchable within a second.
//! - `opentranscribe reindex` rebuilds the whole index offline with a progress bar.

use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::search::{Embedder, FileDoc, Opened, SearchService, SegmentDoc};
use crate::store::Store;
use crate::store::records::FileRecord;
use crate::transcript::Transcript;

/// Where the index lives in the data dir.
pub fn index_dir(config: &Config) -> std::path::PathBuf {
    config.data_dir.join("search")
}

/// Loads MiniLM from the model cache when it is there; without it semantic search answers
/// "not available" (never a silent keyword fallback).
pub fn load_embedder(config: &Config) -> Option<Embedder> {
    let dir = config.models_dir.join("minilm-l6-v2");
    if !dir.join("model.onnx").exists() {
        tracing::warn!(dir = %dir.display(), "sentence model missing; semantic search is off");
        return None;
    }
    let runtime = match crate::models::runtime::Runtime::get_or_init(&config.runtime_settings()) {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::warn!(error = %e, "ONNX Runtime unavailable; semantic search is off");
            return None;
        }
    };
    match Embedder::load(&runtime, &dir) {
        Ok(embedder) => Some(embedder),
        Err(e) => {
            tracing::warn!(error = %e, "cannot load the sentence model; semantic search is off");
            None
        }
    }
}

/// Opens the index for the daemon or the CLI.
pub fn open(config: &Config) -> Result<SearchService> {
    let dir = index_dir(config);
    SearchService::open(&dir, load_embedder(config)).map_err(|e| Error::internal("search-index", e))
}

fn version_of(doc: &FileDoc) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_vec(doc)
        .unwrap_or_default()
        .hash(&mut hasher);
    // How files are cut into semantic chunks is part of what is indexed: a change reindexes.
    (
        crate::search::vectors::CHUNK_WORDS,
        crate::search::vectors::CHUNK_MIN_WORDS_AT_TURN,
        crate::search::vectors::CHUNK_OVERLAP_WORDS,
    )
        .hash(&mut hasher);
    // 0 is kept for "never indexed".
    hasher.finish().max(1)
}

/// Everything the index holds about one file, read from redb; `None` when the file is gone or
/// has no transcript yet (then it must not be in the index).
pub fn file_doc(store: &Store, file_id: &str) -> Result<Option<FileDoc>> {
    let Some(file) = store.get_file(file_id)? else {
        return Ok(None);
    };
    let Some(transcript) = store.transcript_of::<Transcript>(file_id)? else {
        return Ok(None);
    };
    let readers = store.file_readers(file_id)?;
    let collections = store.file_collections(file_id)?;
    let mut doc = build_doc(&file, &transcript, readers, collections);
    if let Some(summary) = store.summary_of(file_id)?
        && summary.status == "done"
    {
        doc.summary = Some(summary_text(&summary));
        doc.version = version_of(&doc);
    }
    Ok(Some(doc))
}

fn build_doc(
    file: &FileRecord,
    transcript: &Transcript,
    readers: Vec<String>,
    collections: Vec<String>,
) -> FileDoc {
    let name_of = |speaker: &Option<String>| -> Option<String> {
        let id = speaker.as_ref()?;
        let found = transcript.speakers.iter().find(|s| &s.id == id);
        Some(
            found
                .and_then(|s| s.name.clone())
                .unwrap_or_else(|| found.map(|s| s.label.clone()).unwrap_or_else(|| id.clone())),
        )
    };
    let mut doc = FileDoc {
        file_id: file.id.clone(),
        version: 0,
        owner_id: file.owner_id.clone(),
        readers,
        collections,
        filename: file.filename.clone(),
        language: transcript.language.clone(),
        tags: file.tags.clone(),
        uploaded_at: file.created_at,
        media_type: file.media_type.clone(),
        duration: file.duration_secs.unwrap_or(transcript.duration),
        segments: transcript
            .segments
            .iter()
            .map(|s| SegmentDoc {
                segment_id: s.id,
                start: s.start,
                end: s.end,
                speaker: name_of(&s.speaker),
                text: s.text.trim().to_owned(),
            })
            .collect(),
        summary: None,
    };
    doc.version = version_of(&doc);
    doc
}

/// The searchable text of a summary: the summary, then its items.
fn summary_text(summary: &crate::store::summaries::SummaryRecord) -> String {
    let mut text = summary.summary.clone();
    for item in summary
        .action_items
        .iter()
        .chain(&summary.decisions)
        .chain(&summary.topics)
    {
        text.push('\n');
        text.push_str(&item.text);
    }
    text
}

/// Brings one file's documents in line with redb.
fn sync_file(store: &Store, search: &SearchService, file_id: &str) -> Result<()> {
    let outcome = match file_doc(store, file_id)? {
        Some(doc) => search.upsert(doc),
        None => search.delete(file_id),
    };
    outcome.map_err(|e| Error::internal("search-index", e))
}

/// Compares the whole index with redb and fixes what differs (or rebuilds it when it was just
/// created). Returns how many files were reindexed or removed.
pub fn reconcile(store: &Store, search: &SearchService) -> Result<usize> {
    let indexed = search
        .indexed_files()
        .map_err(|e| Error::internal("search-index", e))?;
    let mut changed = 0;
    let mut seen = BTreeSet::new();
    for file_id in store.all_file_ids()? {
        seen.insert(file_id.clone());
        match file_doc(store, &file_id)? {
            Some(doc) => {
                if indexed.get(&file_id) != Some(&doc.version) {
                    search
                        .upsert(doc)
                        .map_err(|e| Error::internal("search-index", e))?;
                    changed += 1;
                }
            }
            None => {
                if indexed.contains_key(&file_id) {
                    search
                        .delete(&file_id)
                        .map_err(|e| Error::internal("search-index", e))?;
                    changed += 1;
                }
            }
        }
    }
    for file_id in indexed.keys().filter(|id| !seen.contains(*id)) {
        search
            .delete(file_id)
            .map_err(|e| Error::internal("search-index", e))?;
        changed += 1;
    }
    search
        .flush()
        .map_err(|e| Error::internal("search-index", e))?;
    Ok(changed)
}

/// Clears and rebuilds the index from redb; `progress(done, total)`.
pub fn rebuild(
    store: &Store,
    search: &SearchService,
    mut progress: impl FnMut(usize, usize),
) -> Result<usize> {
    let ids = store.all_file_ids()?;
    let total = ids.len();
    let docs: Vec<FileDoc> = {
        let mut out = Vec::new();
        for id in &ids {
            if let Some(doc) = file_doc(store, id)? {
                out.push(doc);
            }
        }
        out
    };
    let count = docs.len();
    let mut done = 0;
    search
        .rebuild(docs.into_iter(), |_, _| {
            done += 1;
            progress(done, total);
        })
        .map_err(|e| Error::internal("search-index", e))?;
    Ok(count)
}

/// The handle the rest of the daemon uses to say "these files changed".
#[derive(Clone, Debug)]
pub struct IndexQueue {
    sender: mpsc::UnboundedSender<String>,
}

impl IndexQueue {
    pub fn push(&self, file_ids: Vec<String>) {
        for id in file_ids {
            let _ = self.sender.send(id);
        }
    }
}

/// Starts the indexer: a start-up reconciliation, then live updates until shutdown.
pub fn spawn(
    store: Store,
    search: Arc<SearchService>,
    events: tokio::sync::broadcast::Sender<crate::jobs::FileEvent>,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> IndexQueue {
    let (sender, mut receiver) = mpsc::unbounded_channel::<String>();
    let queue = IndexQueue { sender };
    let mut subscription = events.subscribe();
    let forward = queue.clone();
    let stop = shutdown.clone();
    tracker.spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                event = subscription.recv() => match event {
                    Ok(event) => {
                        if matches!(event.kind, "file.completed" | "file.deleted" | "speaker.updated" | "transcript.updated") {
                            forward.push(vec![event.file_id]);
                        }
                    }
                    // Missed events: compare everything.
                    Err(RecvError::Lagged(_)) => forward.push(vec![String::new()]),
                    Err(RecvError::Closed) => return,
                },
            }
        }
    });
    tracker.spawn(async move {
        let initial = {
            let (store, search) = (store.clone(), search.clone());
            tokio::task::spawn_blocking(move || {
                let started = std::time::Instant::now();
                let result = if *search.opened() == Opened::Existing {
                    reconcile(&store, &search)
                } else {
                    tracing::info!(opened = ?search.opened(), "rebuilding the search index from the database");
                    rebuild(&store, &search, |_, _| {})
                };
                (result, started.elapsed())
            })
            .await
        };
        match initial {
            Ok((Ok(n), took)) => tracing::info!(files = n, seconds = took.as_secs_f64(), "search index in step with the database"),
            Ok((Err(e), _)) => tracing::error!(error = %e, "search index check failed"),
            Err(e) => tracing::error!(error = %e, "search index check panicked"),
        }
        loop {
            let first = tokio::select! {
                _ = shutdown.cancelled() => return,
                id = receiver.recv() => match id { Some(id) => id, None => return },
            };
            // Gather what else arrives within a moment, so a burst is one batch.
            let mut batch = BTreeSet::from([first]);
            tokio::time::sleep(Duration::from_millis(50)).await;
            while let Ok(id) = receiver.try_recv() {
                batch.insert(id);
            }
            let (store, search) = (store.clone(), search.clone());
            let outcome = tokio::task::spawn_blocking(move || -> Result<()> {
                if batch.contains("") {
                    reconcile(&store, &search)?;
                    return Ok(());
                }
                for id in &batch {
                    sync_file(&store, &search, id)?;
                }
                Ok(())
            })
            .await;
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "search indexing failed"),
                Err(e) => tracing::error!(error = %e, "search indexing panicked"),
            }
        }
    });
    queue
}
