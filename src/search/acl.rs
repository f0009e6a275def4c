//! Access control for viewers who may read a large share of the index (the homelab owner, an
//! auditor): per tantivy segment, a bitset of the documents of one kind the viewer may read,
//! computed once from the `kind` and `readers` postings and cached while the segment is in the
//! index (segments are immutable; deletions are applied by the caller through the segment's
//! alive bitset, as for any query). A query then intersects with the bitset instead of with
//! two posting lists as long as the index. The condition is exactly the `kind` and `readers`
//! term clauses it replaces; it never adds a score.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tantivy::index::SegmentId;
use tantivy::query::{
    BitSetDocSet, BooleanQuery, ConstScorer, EnableScoring, Explanation, Occur, Query, Scorer,
    TermQuery, Weight,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{BitSet, DocId, DocSet, Score, SegmentReader, TERMINATED, TantivyError, Term};

/// The cached bitsets use at most this much memory (one bit per document per viewer and
/// kind); the least recently used viewer is dropped first.
pub const ACCESS_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// A viewer who may read at least 1/`DENSE_VIEWER_RATIO` of the documents is checked through
/// the cache; other viewers keep the `readers` term clause (their posting list is short).
pub const DENSE_VIEWER_RATIO: u64 = 32;

#[derive(Default)]
pub struct AccessCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<(String, &'static str), Entry>,
    tick: u64,
    bytes: usize,
}

#[derive(Default)]
struct Entry {
    last_used: u64,
    segments: HashMap<SegmentId, Arc<BitSet>>,
}

fn bitset_bytes(bits: &BitSet) -> usize {
    (bits.max_value() as usize).div_ceil(64) * 8
}

impl AccessCache {
    /// The documents of `kind` in this segment whose `readers` include `viewer`.
    fn segment(
        &self,
        reader: &SegmentReader,
        fields: (Field, Field),
        viewer: &str,
        kind: &'static str,
    ) -> tantivy::Result<Arc<BitSet>> {
        let key = (viewer.to_owned(), kind);
        let id = reader.segment_id();
        {
            let mut inner = self.lock();
            inner.tick += 1;
            let tick = inner.tick;
            if let Some(entry) = inner.entries.get_mut(&key) {
                entry.last_used = tick;
                if let Some(bits) = entry.segments.get(&id) {
                    return Ok(bits.clone());
                }
            }
        }
        // Computed outside the lock: two threads may compute the same bitset, which costs work
        // but never correctness.
        let bits = Arc::new(compute(reader, fields, viewer, kind)?);
        let mut inner = self.lock();
        let size = bitset_bytes(&bits);
        inner.tick += 1;
        let tick = inner.tick;
        let entry = inner.entries.entry(key.clone()).or_default();
        entry.last_used = tick;
        if entry.segments.insert(id, bits.clone()).is_none() {
            inner.bytes += size;
        }
        while inner.bytes > ACCESS_CACHE_BYTES {
            let oldest = inner
                .entries
                .iter()
                .filter(|(k, _)| **k != key)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone());
            let Some(oldest) = oldest else { break };
            if let Some(entry) = inner.entries.remove(&oldest) {
                inner.bytes -= entry
                    .segments
                    .values()
                    .map(|b| bitset_bytes(b))
                    .sum::<usize>();
            }
        }
        Ok(bits)
    }

    /// Forgets the bitsets of segments that are no longer in the index.
    pub fn retain(&self, live: &[SegmentId]) {
        let mut inner = self.lock();
        let mut freed = 0;
        for entry in inner.entries.values_mut() {
            entry.segments.retain(|id, bits| {
                let keep = live.contains(id);
                if !keep {
                    freed += bitset_bytes(bits);
                }
                keep
            });
        }
        inner.entries.retain(|_, e| !e.segments.is_empty());
        inner.bytes -= freed;
    }

    pub fn memory_bytes(&self) -> usize {
        self.lock().bytes
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn compute(
    reader: &SegmentReader,
    (kind_field, readers_field): (Field, Field),
    viewer: &str,
    kind: &str,
) -> tantivy::Result<BitSet> {
    let schema = reader.schema();
    let term = |field: Field, value: &str| -> Box<dyn Query> {
        Box::new(TermQuery::new(
            Term::from_field_text(field, value),
            IndexRecordOption::Basic,
        ))
    };
    let query = BooleanQuery::new(vec![
        (Occur::Must, term(kind_field, kind)),
        (Occur::Must, term(readers_field, viewer)),
    ]);
    let weight = query.weight(EnableScoring::disabled_from_schema(schema))?;
    let mut bits = BitSet::with_max_value(reader.max_doc());
    let mut scorer = weight.scorer(reader, 1.0)?;
    let mut doc = scorer.doc();
    while doc != TERMINATED {
        bits.insert(doc);
        doc = scorer.advance();
    }
    Ok(bits)
}

/// Matches the documents of `kind` that `viewer` may read (score 0), through the cache.
#[derive(Clone)]
pub struct AccessQuery {
    pub cache: Arc<AccessCache>,
    pub kind_field: Field,
    pub readers_field: Field,
    pub viewer: String,
    pub kind: &'static str,
}

impl std::fmt::Debug for AccessQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessQuery")
            .field("viewer", &self.viewer)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Query for AccessQuery {
    fn weight(&self, _scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(AccessWeight(self.clone())))
    }
}

struct AccessWeight(AccessQuery);

impl Weight for AccessWeight {
    fn scorer(&self, reader: &SegmentReader, _boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let q = &self.0;
        let bits = q
            .cache
            .segment(reader, (q.kind_field, q.readers_field), &q.viewer, q.kind)?;
        Ok(Box::new(ConstScorer::new(
            BitSetDocSet::from(BitSet::clone(&bits)),
            0.0,
        )))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        let mut scorer = self.scorer(reader, 1.0)?;
        if scorer.doc() > doc || scorer.seek(doc) != doc {
            return Err(TantivyError::InvalidArgument(format!(
                "document {doc} is not visible to this viewer"
            )));
        }
        Ok(Explanation::new("access control", 0.0))
    }
}
