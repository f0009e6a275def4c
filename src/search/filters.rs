//! Access control and the request's filters as tantivy clauses, the text fields to search, and
//! request validation.

use std::ops::Bound;

use tantivy::query::{ConstScoreQuery, Occur, Query, RangeQuery, TermQuery};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{Searcher, Term};

use super::{
    MAX_PER_PAGE, MAX_RESULT_WINDOW, SearchError, SearchRequest, SearchService, acl, schema,
};

impl SearchService {
    pub(super) fn term(&self, field: Field, value: &str) -> Box<dyn Query> {
        Box::new(TermQuery::new(
            Term::from_field_text(field, value),
            IndexRecordOption::Basic,
        ))
    }

    /// Documents of `kind` that `viewer_id` may read, as non-scoring clauses: the `kind` and
    /// `readers` terms, or for a viewer who may read a large share of the index the same
    /// condition as cached per-segment bitsets ([`acl`]).
    pub(super) fn access_clauses(
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
    pub(super) fn filter_clauses(
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
    pub(super) fn text_fields(
        &self,
        searcher: &Searcher,
        request: &SearchRequest,
    ) -> Vec<(usize, Field)> {
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
}

pub(super) fn validate_request(request: &SearchRequest) -> Result<(), SearchError> {
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
