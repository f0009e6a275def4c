//! The writer thread: the only owner of the tantivy `IndexWriter`. It applies operations in the
//! order they were sent and commits in batches: within [`COMMIT_DELAY`] of the first pending
//! operation, at once when [`COMMIT_OPS`] pile up, and whenever someone waits in `flush`.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::time::{Duration, Instant};

use tantivy::schema::Field;
use tantivy::{IndexReader, IndexWriter, TantivyDocument, Term};

use super::vectors::VectorCache;

/// Longest an operation waits for its commit (edits must be searchable within a second).
pub const COMMIT_DELAY: Duration = Duration::from_millis(200);
/// Operations that trigger a commit without waiting.
pub const COMMIT_OPS: usize = 256;

pub enum WriterOp {
    /// All documents of one file, replacing whatever the index had for it.
    Replace {
        file_id: String,
        docs: Vec<TantivyDocument>,
    },
    Delete(String),
    Clear,
    Flush(SyncSender<Result<(), String>>),
    /// Bulk loading: commit every [`BULK_COMMIT_DELAY`] instead (fewer, larger segments).
    Bulk(bool),
}

/// Commit interval while bulk loading.
pub const BULK_COMMIT_DELAY: Duration = Duration::from_secs(10);

pub struct WriterThread {
    pub writer: IndexWriter<TantivyDocument>,
    pub reader: IndexReader,
    pub file_id_field: Field,
    pub vectors: Option<(Arc<VectorCache>, usize)>,
}

impl WriterThread {
    pub fn run(mut self, ops: Receiver<WriterOp>) {
        let mut pending = 0usize;
        let mut first_pending: Option<Instant> = None;
        let mut delay = COMMIT_DELAY;
        let mut max_ops = COMMIT_OPS;
        loop {
            let received = match first_pending {
                None => ops.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(since) => {
                    let wait = delay.saturating_sub(since.elapsed());
                    ops.recv_timeout(wait)
                }
            };
            match received {
                Ok(WriterOp::Replace { file_id, docs }) => {
                    self.writer
                        .delete_term(Term::from_field_text(self.file_id_field, &file_id));
                    for doc in docs {
                        if let Err(e) = self.writer.add_document(doc) {
                            tracing::error!(error = %e, file_id, "search index: add document");
                        }
                    }
                    pending += 1;
                }
                Ok(WriterOp::Delete(file_id)) => {
                    self.writer
                        .delete_term(Term::from_field_text(self.file_id_field, &file_id));
                    pending += 1;
                }
                Ok(WriterOp::Clear) => {
                    if let Err(e) = self.writer.delete_all_documents() {
                        tracing::error!(error = %e, "search index: clear");
                    }
                    pending += 1;
                }
                Ok(WriterOp::Flush(reply)) => {
                    let result = self.commit();
                    pending = 0;
                    first_pending = None;
                    let _ = reply.send(result);
                    continue;
                }
                Ok(WriterOp::Bulk(bulk)) => {
                    (delay, max_ops) = if bulk {
                        (BULK_COMMIT_DELAY, usize::MAX)
                    } else {
                        (COMMIT_DELAY, COMMIT_OPS)
                    };
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    if pending > 0
                        && let Err(e) = self.commit()
                    {
                        tracing::error!(error = %e, "search index: final commit");
                    }
                    break;
                }
            }
            if pending > 0 {
                let since = *first_pending.get_or_insert_with(Instant::now);
                if pending >= max_ops || since.elapsed() >= delay {
                    if let Err(e) = self.commit() {
                        tracing::error!(error = %e, "search index: commit");
                    }
                    pending = 0;
                    first_pending = None;
                }
            }
        }
        if let Err(e) = self.writer.wait_merging_threads() {
            tracing::warn!(error = %e, "search index: merge threads at shutdown");
        }
    }

    /// Commits, reloads the searchers and preloads the vectors of new segments, so that a
    /// search after this sees the change with no loading of its own.
    fn commit(&mut self) -> Result<(), String> {
        self.writer.commit().map_err(|e| e.to_string())?;
        self.reader.reload().map_err(|e| e.to_string())?;
        if let Some((cache, dimension)) = &self.vectors {
            cache
                .refresh(&self.reader.searcher(), *dimension)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
