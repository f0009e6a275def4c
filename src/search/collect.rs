//! A tantivy collector counting matches per file (for `files` in responses), reading the file
//! id and filename from fast fields so that no stored document is opened.

use std::collections::HashMap;

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::StrColumn;
use tantivy::{DocId, Score, SegmentOrdinal, SegmentReader};

/// file id → (matches, filename).
pub type FileCountsFruit = HashMap<String, (usize, String)>;

pub struct FileCounts;

pub struct FileCountsSegment {
    ids: Option<StrColumn>,
    names: Option<StrColumn>,
    counts: HashMap<u64, (usize, DocId)>,
}

impl Collector for FileCounts {
    type Fruit = FileCountsFruit;
    type Child = FileCountsSegment;

    fn for_segment(
        &self,
        _segment_ord: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<FileCountsSegment> {
        Ok(FileCountsSegment {
            ids: reader.fast_fields().str("file_id")?,
            names: reader.fast_fields().str("filename")?,
            counts: HashMap::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<FileCountsFruit>) -> tantivy::Result<FileCountsFruit> {
        let mut merged = FileCountsFruit::new();
        for fruit in fruits {
            for (file_id, (count, filename)) in fruit {
                merged.entry(file_id).or_insert((0, filename)).0 += count;
            }
        }
        Ok(merged)
    }
}

impl SegmentCollector for FileCountsSegment {
    type Fruit = FileCountsFruit;

    fn collect(&mut self, doc: DocId, _score: Score) {
        if let Some(ids) = &self.ids
            && let Some(ord) = ids.ords().first(doc)
        {
            self.counts.entry(ord).or_insert((0, doc)).0 += 1;
        }
    }

    fn harvest(self) -> FileCountsFruit {
        let mut out = FileCountsFruit::with_capacity(self.counts.len());
        let Some(ids) = &self.ids else { return out };
        // One pass over each dictionary with sorted ordinals: a lookup per ordinal decodes its
        // dictionary block from the start, which dominated queries with thousands of files.
        let mut entries: Vec<(u64, usize, DocId)> = self
            .counts
            .into_iter()
            .map(|(ord, (count, doc))| (ord, count, doc))
            .collect();
        entries.sort_unstable_by_key(|(ord, _, _)| *ord);
        let id_ords: Vec<u64> = entries.iter().map(|(ord, _, _)| *ord).collect();
        let Some(file_ids) = sorted_terms(ids, &id_ords) else {
            return out;
        };
        let name_ords: Vec<Option<u64>> = entries
            .iter()
            .map(|(_, _, doc)| self.names.as_ref().and_then(|n| n.ords().first(*doc)))
            .collect();
        let mut sorted_name_ords: Vec<u64> = name_ords.iter().flatten().copied().collect();
        sorted_name_ords.sort_unstable();
        sorted_name_ords.dedup();
        let names: HashMap<u64, String> = match &self.names {
            Some(column) => sorted_terms(column, &sorted_name_ords)
                .map(|names| sorted_name_ords.iter().copied().zip(names).collect())
                .unwrap_or_default(),
            None => HashMap::new(),
        };
        for ((file_id, (_, count, _)), name_ord) in file_ids.into_iter().zip(entries).zip(name_ords)
        {
            let filename = name_ord
                .and_then(|ord| names.get(&ord).cloned())
                .unwrap_or_default();
            out.insert(file_id, (count, filename));
        }
        out
    }
}

/// The strings of sorted ordinals of a string column, in order; `None` if any is missing.
pub fn sorted_terms(column: &StrColumn, ords: &[u64]) -> Option<Vec<String>> {
    let mut terms = Vec::with_capacity(ords.len());
    let complete = column
        .dictionary()
        .sorted_ords_to_term_cb(ords, |bytes| {
            terms.push(String::from_utf8_lossy(bytes).into_owned());
        })
        .ok()?;
    (complete && terms.len() == ords.len()).then_some(terms)
}

/// The first value of a string fast field for `doc`, empty when absent.
pub fn fast_str(column: Option<&StrColumn>, doc: DocId) -> String {
    let mut out = String::new();
    if let Some(column) = column
        && let Some(ord) = column.ords().first(doc)
    {
        let _ = column.ord_to_str(ord, &mut out);
    }
    out
}
