//! Semantic mode: the query embedded, then an exact scan of the visible chunk vectors (int8
//! scan split across threads, best candidates rescored with the stored f32 vectors).

use tantivy::query::{BooleanQuery, EnableScoring, Query};
use tantivy::{DocAddress, DocId, Searcher};

use super::hits::{FastLookup, file_groups};
use super::query::plain_words;
use super::schema::KIND_CHUNK;
use super::vectors::{Candidate, TopCandidates, dot_f32, quantize};
use super::{
    FileGroup, Hit, PARALLEL_SCAN_ROWS, SEMANTIC_FLOOR, SEMANTIC_RESULTS, SearchError,
    SearchRequest, SearchService, collect,
};

impl SearchService {
    /// The semantic list: (true cosine, chunk address), best first.
    pub(super) fn semantic_ranked(
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
    /// up to [`MAX_SCAN_THREADS`](super::MAX_SCAN_THREADS)).
    pub(super) fn scan_parts(
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
                (cosine > SEMANTIC_FLOOR).then_some((cosine, DocAddress::new(c.segment_ord, c.doc)))
            })
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
        ranked.truncate(SEMANTIC_RESULTS);
        Ok(ranked)
    }

    pub(super) fn semantic(
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
}
