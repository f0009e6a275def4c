//! Keyword queries: the user's text parsed with tantivy's query grammar (phrases, `word*`,
//! `word~N`, AND/OR/NOT, +/-, parentheses), turned into tantivy queries over the per-language
//! text fields, with fuzzy matching for words that match nothing the viewer can see; and the
//! highlighter that marks the matched words in a segment's text.

use std::collections::HashSet;

use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, EnableScoring, FuzzyTermQuery, Occur, PhraseQuery, Query,
    TermQuery,
};
use tantivy::query_grammar::{self, Delimiter, UserInputAst, UserInputLeaf, UserInputLiteral};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{Searcher, TERMINATED, Term};

use super::SearchError;
use super::schema::analyzer;

/// Longest accepted query, in bytes.
pub const MAX_QUERY_BYTES: usize = 1000;
/// Most words in a query (each becomes a disjunction over the language fields).
pub const MAX_QUERY_WORDS: usize = 32;

/// What a word matches in one text field, kept for highlighting.
#[derive(Debug, Clone)]
enum Matcher {
    Exact(String),
    Prefix(String),
    Fuzzy(String, u8),
}

/// The words a query can match, per text field (index into the language fields).
#[derive(Debug, Default, Clone)]
pub struct Highlighter {
    per_field: Vec<Vec<Matcher>>,
}

impl Highlighter {
    fn add(&mut self, field_index: usize, matcher: Matcher) {
        if self.per_field.len() <= field_index {
            self.per_field.resize(field_index + 1, Vec::new());
        }
        self.per_field[field_index].push(matcher);
    }

    /// `text` HTML-escaped, with `<mark>…</mark>` around the words that the query matched,
    /// analysed as the index analysed them (field `field_index`).
    pub fn highlight(&self, text: &str, field_index: usize) -> String {
        let matchers = self
            .per_field
            .get(field_index)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        if !matchers.is_empty() {
            let mut analyzer = analyzer(field_index);
            let mut stream = analyzer.token_stream(text);
            while stream.advance() {
                let token = stream.token();
                if matchers.iter().any(|m| matches(m, &token.text)) {
                    ranges.push((token.offset_from, token.offset_to));
                }
            }
        }
        let mut out = String::with_capacity(text.len() + ranges.len() * 13);
        let mut at = 0;
        for (from, to) in ranges {
            if from < at || to > text.len() {
                continue;
            }
            escape_into(&text[at..from], &mut out);
            out.push_str("<mark>");
            escape_into(&text[from..to], &mut out);
            out.push_str("</mark>");
            at = to;
        }
        escape_into(&text[at..], &mut out);
        out
    }
}

fn matches(matcher: &Matcher, token: &str) -> bool {
    match matcher {
        Matcher::Exact(term) => term == token,
        Matcher::Prefix(prefix) => token.starts_with(prefix.as_str()),
        Matcher::Fuzzy(term, distance) => edit_distance(term, token) <= usize::from(*distance),
    }
}

/// Optimal string alignment distance (a transposition costs one), as tantivy's fuzzy query.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_into(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(text, &mut out);
    out
}

/// Fuzzy distance for a word that matched nothing exactly: none under 3 characters, 1 up to 5,
/// 2 from 6.
fn automatic_distance(word: &str) -> u8 {
    match word.chars().count() {
        0..=2 => 0,
        3..=5 => 1,
        _ => 2,
    }
}

/// Builds keyword queries for one search.
pub struct QueryBuilder<'a> {
    pub searcher: &'a Searcher,
    /// (index into the language fields, field) for the fields searched.
    pub fields: Vec<(usize, Field)>,
    /// Restricts the "does this word match anything?" probe to what the viewer may see, so the
    /// choice of fuzzy matching reveals nothing about other users' files.
    pub visibility: Box<dyn Query>,
    pub highlighter: Highlighter,
    words: usize,
}

impl<'a> QueryBuilder<'a> {
    pub fn new(
        searcher: &'a Searcher,
        fields: Vec<(usize, Field)>,
        visibility: Box<dyn Query>,
    ) -> Self {
        Self {
            searcher,
            fields,
            visibility,
            highlighter: Highlighter::default(),
            words: 0,
        }
    }

    /// The user's query; `None` when it has no searchable words (e.g. only punctuation).
    pub fn build(&mut self, text: &str) -> Result<Option<Box<dyn Query>>, SearchError> {
        if text.len() > MAX_QUERY_BYTES {
            return Err(SearchError::Query(format!(
                "the query is longer than {MAX_QUERY_BYTES} bytes"
            )));
        }
        let ast = query_grammar::parse_query(text).map_err(|_| {
            SearchError::Query(
                "cannot parse the query: check quotes, parentheses and operators".to_owned(),
            )
        })?;
        self.convert(&ast)
    }

    fn convert(&mut self, ast: &UserInputAst) -> Result<Option<Box<dyn Query>>, SearchError> {
        match ast {
            UserInputAst::Leaf(leaf) => self.leaf(leaf),
            UserInputAst::Boost(inner, boost) => Ok(self.convert(inner)?.map(|q| {
                Box::new(BoostQuery::new(q, boost.into_inner() as f32)) as Box<dyn Query>
            })),
            UserInputAst::Clause(clauses) => {
                let mut subqueries: Vec<(Occur, Box<dyn Query>)> = Vec::new();
                for (occur, sub) in clauses {
                    let occur = match occur {
                        Some(query_grammar::Occur::Must) => Occur::Must,
                        Some(query_grammar::Occur::MustNot) => Occur::MustNot,
                        Some(query_grammar::Occur::Should) | None => Occur::Should,
                    };
                    // Words under NOT are not highlighted.
                    let saved = (occur == Occur::MustNot).then(|| self.highlighter.clone());
                    let converted = self.convert(sub)?;
                    if let Some(saved) = saved {
                        self.highlighter = saved;
                    }
                    if let Some(query) = converted {
                        subqueries.push((occur, query));
                    }
                }
                if subqueries.is_empty() {
                    return Ok(None);
                }
                if subqueries.iter().all(|(occur, _)| *occur == Occur::MustNot) {
                    subqueries.push((Occur::Must, Box::new(AllQuery)));
                }
                Ok(Some(Box::new(BooleanQuery::new(subqueries))))
            }
        }
    }

    fn leaf(&mut self, leaf: &UserInputLeaf) -> Result<Option<Box<dyn Query>>, SearchError> {
        match leaf {
            UserInputLeaf::Literal(literal) => self.literal(literal),
            UserInputLeaf::All => Ok(Some(Box::new(AllQuery))),
            UserInputLeaf::Range { .. } | UserInputLeaf::Set { .. } => Err(SearchError::Query(
                "ranges and sets are not supported in the query; use the filters".to_owned(),
            )),
            UserInputLeaf::Exists { .. } => Err(SearchError::Query(
                "field queries are not supported; use the filters".to_owned(),
            )),
            UserInputLeaf::Regex { .. } => Err(SearchError::Query(
                "regular expressions are not supported".to_owned(),
            )),
        }
    }

    fn literal(
        &mut self,
        literal: &UserInputLiteral,
    ) -> Result<Option<Box<dyn Query>>, SearchError> {
        if let Some(field) = &literal.field_name {
            return Err(SearchError::Query(format!(
                "`{field}:` field queries are not supported; use the filters (or quote the text)"
            )));
        }
        let quoted = literal.delimiter != Delimiter::None;
        let mut literal = literal.clone();
        let mut tilde = false;
        if !quoted {
            // The grammar keeps `*` and `~N` inside bare words: `budg*`, `budgte~1`, `budgte~`.
            if let Some(stem) = literal.phrase.strip_suffix('*') {
                literal.phrase = stem.to_owned();
                literal.prefix = true;
            } else if let Some((word, distance)) = literal.phrase.rsplit_once('~')
                && distance.chars().all(|c| c.is_ascii_digit())
            {
                literal.slop = if distance.is_empty() {
                    1
                } else {
                    distance.parse::<u32>().map_err(|_| {
                        SearchError::Query(format!("`~{distance}`: the fuzzy distance is 1 or 2"))
                    })?
                };
                literal.phrase = word.to_owned();
                tilde = true;
            }
        }
        let text = literal.phrase.clone();
        let mut per_field: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let mut probe_terms: Vec<(usize, Field, String)> = Vec::new();
        let mut single_word = true;
        for &(field_index, field) in &self.fields {
            let tokens = tokens(&mut analyzer(field_index), &text);
            if tokens.is_empty() {
                continue;
            }
            self.words += 1;
            if self.words > MAX_QUERY_WORDS * self.fields.len().max(1) {
                return Err(SearchError::Query(format!(
                    "the query has more than {MAX_QUERY_WORDS} words"
                )));
            }
            if tokens.len() > 1 {
                single_word = false;
                let terms: Vec<(usize, Term)> = tokens
                    .iter()
                    .map(|(position, token)| (*position, Term::from_field_text(field, token)))
                    .collect();
                let slop = if quoted { literal.slop } else { 0 };
                if literal.prefix {
                    let mut query = tantivy::query::PhrasePrefixQuery::new_with_offset(terms);
                    query.set_max_expansions(50);
                    per_field.push((Occur::Should, Box::new(query)));
                    for (_, token) in &tokens[..tokens.len() - 1] {
                        self.highlighter
                            .add(field_index, Matcher::Exact(token.clone()));
                    }
                    let last = tokens[tokens.len() - 1].1.clone();
                    self.highlighter.add(field_index, Matcher::Prefix(last));
                } else {
                    per_field.push((
                        Occur::Should,
                        Box::new(PhraseQuery::new_with_offset_and_slop(terms, slop)),
                    ));
                    for (_, token) in &tokens {
                        self.highlighter
                            .add(field_index, Matcher::Exact(token.clone()));
                    }
                }
                continue;
            }
            let token = tokens[0].1.clone();
            let term = Term::from_field_text(field, &token);
            if literal.prefix {
                // A one-term phrase prefix is tantivy's term-range prefix query (a distance-0
                // prefix automaton matches only the exact term in tantivy 0.27).
                per_field.push((
                    Occur::Should,
                    Box::new(tantivy::query::PhrasePrefixQuery::new(vec![term])),
                ));
                self.highlighter.add(field_index, Matcher::Prefix(token));
            } else if !quoted && literal.slop > 0 {
                let distance = literal.slop.min(2) as u8;
                per_field.push((
                    Occur::Should,
                    Box::new(FuzzyTermQuery::new(term, distance, true)),
                ));
                self.highlighter
                    .add(field_index, Matcher::Fuzzy(token, distance));
            } else {
                probe_terms.push((field_index, field, token));
            }
        }
        if !probe_terms.is_empty() {
            // `word~0` asks for the exact word.
            let automatic = !quoted && single_word && !tilde;
            let exists = !automatic || self.any_visible(&probe_terms)?;
            for (field_index, field, token) in probe_terms {
                let term = Term::from_field_text(field, &token);
                let distance = if exists {
                    0
                } else {
                    automatic_distance(&token)
                };
                if distance == 0 {
                    per_field.push((
                        Occur::Should,
                        Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs)),
                    ));
                    self.highlighter.add(field_index, Matcher::Exact(token));
                } else {
                    per_field.push((
                        Occur::Should,
                        Box::new(FuzzyTermQuery::new(term, distance, true)),
                    ));
                    self.highlighter
                        .add(field_index, Matcher::Fuzzy(token, distance));
                }
            }
        }
        Ok(match per_field.len() {
            0 => None,
            1 => per_field.pop().map(|(_, q)| q),
            _ => Some(Box::new(BooleanQuery::new(per_field))),
        })
    }

    /// Whether any of these exact terms occurs in a document the viewer may see.
    fn any_visible(&self, terms: &[(usize, Field, String)]) -> Result<bool, SearchError> {
        let any_term: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|(_, field, token)| {
                (
                    Occur::Should,
                    Box::new(TermQuery::new(
                        Term::from_field_text(*field, token),
                        IndexRecordOption::Basic,
                    )) as Box<dyn Query>,
                )
            })
            .collect();
        let query = BooleanQuery::new(vec![
            (
                Occur::Must,
                Box::new(BooleanQuery::new(any_term)) as Box<dyn Query>,
            ),
            (Occur::Must, self.visibility.box_clone()),
        ]);
        let weight = query
            .weight(EnableScoring::disabled_from_searcher(self.searcher))
            .map_err(SearchError::index)?;
        for reader in self.searcher.segment_readers() {
            let mut scorer = weight.scorer(reader, 1.0).map_err(SearchError::index)?;
            let mut doc = scorer.doc();
            while doc != TERMINATED {
                if !reader.is_deleted(doc) {
                    return Ok(true);
                }
                doc = scorer.advance();
            }
        }
        Ok(false)
    }
}

/// Analysed tokens with their positions.
fn tokens(analyzer: &mut TextAnalyzer, text: &str) -> Vec<(usize, String)> {
    let mut stream = analyzer.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        let token = stream.token();
        out.push((token.position, token.text.clone()));
    }
    out
}

/// Words of the query for the semantic side (the operators removed), for embedding.
pub fn plain_words(text: &str) -> String {
    let words: HashSet<&str> = ["AND", "OR", "NOT"].into_iter().collect();
    text.split(|c: char| c.is_whitespace())
        .filter(|w| !words.contains(w))
        .map(|w| {
            w.trim_matches(|c: char| matches!(c, '"' | '+' | '-' | '*' | '(' | ')' | '~' | '^'))
        })
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}
