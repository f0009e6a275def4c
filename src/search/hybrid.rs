//! Hybrid mode: the best keyword hits and the semantic hits fused by reciprocal rank.

use tantivy::collector::TopDocs;
use tantivy::{DocAddress, Searcher};

use super::hits::{FastLookup, file_groups};
use super::{
    FileGroup, HYBRID_KEYWORD, Hit, MIN_COSINE, RRF_K, SearchError, SearchRequest, SearchService,
    collect,
};

impl SearchService {
    pub(super) fn hybrid(
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
            if !absorbed[index] && *cosine >= MIN_COSINE {
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
}
