//! Building results: a hit from a stored document, file groups, and `FastLookup` (file ids,
//! filenames and segment ranges read from fast fields).

use std::collections::HashMap;

use tantivy::columnar::StrColumn;
use tantivy::schema::{Field, Value};
use tantivy::{DocAddress, Searcher, TantivyDocument};

use super::query::{Highlighter, escape};
use super::{FileGroup, Hit, MAX_FILE_GROUPS, SearchError, SearchService, collect, schema};

impl SearchService {
    /// A hit from a stored segment or chunk document; chunks are never highlighted.
    pub(super) fn hit(
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

type U64Column = tantivy::columnar::Column<u64>;

/// Fast-field reads by document address, with columns opened once per segment and strings
/// cached by (segment, column, ordinal); [`FastLookup::prefetch`] resolves many addresses with
/// one pass over each dictionary (a single lookup decompresses a dictionary block).
pub(super) struct FastLookup<'a> {
    searcher: &'a Searcher,
    columns: HashMap<u32, (Option<StrColumn>, Option<StrColumn>)>,
    segment_ids: HashMap<u32, (Option<U64Column>, Option<U64Column>)>,
    /// (segment, 0 for file id / 1 for filename, ordinal) → string.
    strings: HashMap<(u32, u8, u64), String>,
}

impl<'a> FastLookup<'a> {
    pub(super) fn new(searcher: &'a Searcher) -> Self {
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
    pub(super) fn prefetch(&mut self, addresses: impl Iterator<Item = DocAddress>) {
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
    pub(super) fn file(&mut self, address: DocAddress) -> (String, String) {
        (self.string(address, 0), self.string(address, 1))
    }

    /// (first, last) segment id of a segment or chunk document.
    pub(super) fn segment_range(&mut self, address: DocAddress) -> (u64, u64) {
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

pub(super) fn file_groups(counts: collect::FileCountsFruit) -> Vec<FileGroup> {
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
