//! Keyword mode: the parsed query with access control and filters, collected with exact counts.

use tantivy::Searcher;
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query};

use super::hits::file_groups;
use super::query::{Highlighter, QueryBuilder};
use super::schema::KIND_SEGMENT;
use super::{FileGroup, Hit, SearchError, SearchRequest, SearchService, collect};

impl SearchService {
    /// The keyword query with access control and filters; `None` when the text has no words.
    pub(super) fn keyword_query(
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

    pub(super) fn keyword(
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
}
