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
        let mut out = FileCountsFruit::new();
        let Some(ids) = &self.ids else { return out };
        for (ord, (count, doc)) in self.counts {
            let mut file_id = String::new();
            if !ids.ord_to_str(ord, &mut file_id).unwrap_or(false) {
                continue;
            }
            out.insert(file_id, (count, fast_str(self.names.as_ref(), doc)));
        }
        out
    }
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
