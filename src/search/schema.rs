//! The tantivy schema (one document per segment, per semantic chunk and per file), the
//! per-language analyzers and how a `FileDoc` becomes documents.

use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    TextAnalyzer,
};
use tantivy::{Index, TantivyDocument};

use super::vectors::Chunk;
use super::{FileDoc, media_kind};

/// Document kinds, in the `kind` field.
pub const KIND_SEGMENT: &str = "seg";
pub const KIND_CHUNK: &str = "chunk";
pub const KIND_FILE: &str = "file";

/// Stemming languages: (ISO 639-1 code, tantivy language). Text in any other language goes to
/// the unstemmed `plain` field; text with no language to English.
pub const STEMMED: &[(&str, Language)] = &[
    ("en", Language::English),
    ("ar", Language::Arabic),
    ("da", Language::Danish),
    ("nl", Language::Dutch),
    ("fi", Language::Finnish),
    ("fr", Language::French),
    ("de", Language::German),
    ("el", Language::Greek),
    ("hu", Language::Hungarian),
    ("it", Language::Italian),
    ("no", Language::Norwegian),
    ("pt", Language::Portuguese),
    ("ro", Language::Romanian),
    ("ru", Language::Russian),
    ("es", Language::Spanish),
    ("sv", Language::Swedish),
    ("ta", Language::Tamil),
    ("tr", Language::Turkish),
];

/// Index of the unstemmed field in [`Fields::text`] (after the stemmed ones).
pub const PLAIN: usize = STEMMED.len();

/// Bumped whenever the schema or the analyzers change; a different version is rebuilt.
pub const SCHEMA_VERSION: u64 = 1;

#[derive(Debug, Clone)]
pub struct Fields {
    pub kind: Field,
    pub file_id: Field,
    pub owner_id: Field,
    pub readers: Field,
    pub collections: Field,
    pub tags: Field,
    pub language: Field,
    pub media_type: Field,
    pub speaker: Field,
    pub speaker_name: Field,
    pub filename: Field,
    pub uploaded_at: Field,
    pub duration: Field,
    pub start: Field,
    pub end: Field,
    pub segment_id: Field,
    pub segment_last: Field,
    pub version: Field,
    pub embedded: Field,
    pub schema_version: Field,
    pub chunk_hash: Field,
    pub text: Field,
    pub vector: Field,
    /// One indexed text field per entry of [`STEMMED`], then `text_plain`.
    pub text_lang: Vec<Field>,
}

pub fn build_schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let kind = builder.add_text_field("kind", STRING);
    let file_id = builder.add_text_field("file_id", STRING | STORED | FAST);
    let owner_id = builder.add_text_field("owner_id", STRING | STORED);
    let readers = builder.add_text_field("readers", STRING);
    let collections = builder.add_text_field("collections", STRING);
    let tags = builder.add_text_field("tags", STRING);
    let language = builder.add_text_field("language", STRING | STORED);
    let media_type = builder.add_text_field("media_type", STRING);
    let speaker = builder.add_text_field("speaker", STRING);
    let speaker_name = builder.add_text_field("speaker_name", STORED);
    let filename = builder.add_text_field("filename", STORED | FAST);
    let uploaded_at = builder.add_u64_field("uploaded_at", INDEXED | FAST | STORED);
    let duration = builder.add_f64_field("duration", INDEXED | FAST);
    let start = builder.add_f64_field("start", STORED);
    let end = builder.add_f64_field("end", STORED);
    let segment_id = builder.add_u64_field("segment_id", STORED | FAST);
    let segment_last = builder.add_u64_field("segment_last", STORED | FAST);
    let version = builder.add_u64_field("version", STORED | FAST);
    let embedded = builder.add_u64_field("embedded", STORED | FAST);
    let schema_version = builder.add_u64_field("schema_version", STORED | FAST);
    let chunk_hash = builder.add_u64_field("chunk_hash", FAST);
    let text = builder.add_text_field("text", STORED);
    let vector = builder.add_bytes_field("vector", FAST);
    let mut text_lang = Vec::new();
    let names = STEMMED
        .iter()
        .map(|(code, _)| *code)
        .chain(std::iter::once("plain"));
    for code in names {
        let options = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(&analyzer_name(code))
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        text_lang.push(builder.add_text_field(&format!("text_{code}"), options));
    }
    let fields = Fields {
        kind,
        file_id,
        owner_id,
        readers,
        collections,
        tags,
        language,
        media_type,
        speaker,
        speaker_name,
        filename,
        uploaded_at,
        duration,
        start,
        end,
        segment_id,
        segment_last,
        version,
        embedded,
        schema_version,
        chunk_hash,
        text,
        vector,
        text_lang,
    };
    (builder.build(), fields)
}

fn analyzer_name(code: &str) -> String {
    format!("ot_{code}")
}

/// The analyzer of text field `index`: words, long tokens dropped, lower-cased, ASCII-folded,
/// stemmed (except `plain`).
pub fn analyzer(index: usize) -> TextAnalyzer {
    let base = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(60))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter);
    match STEMMED.get(index) {
        Some((_, language)) => base.filter(Stemmer::new(*language)).build(),
        None => base.build(),
    }
}

/// Registers our analyzers; tantivy does not persist them, so this runs at every open.
pub fn register_analyzers(index: &Index) {
    for (i, (code, _)) in STEMMED.iter().enumerate() {
        index
            .tokenizers()
            .register(&analyzer_name(code), analyzer(i));
    }
    index
        .tokenizers()
        .register(&analyzer_name("plain"), analyzer(PLAIN));
}

/// Which text field a file's language uses: its stemmer, English when unknown or empty, the
/// unstemmed field for a language tantivy has no stemmer for.
pub fn language_field_index(language: &str) -> usize {
    let code = normalize_language(language);
    if code.is_empty() {
        return 0;
    }
    let code = match code.as_str() {
        "nb" | "nn" => "no",
        other => other,
    };
    STEMMED
        .iter()
        .position(|(c, _)| *c == code)
        .unwrap_or(PLAIN)
}

/// `en-US`, `EN`, ` en ` → `en`.
pub fn normalize_language(language: &str) -> String {
    let lower = language.trim().to_lowercase();
    lower
        .split(['-', '_'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The metadata every document of a file carries (so filters and access control work the same
/// on segments, chunks and the file record).
fn add_file_fields(fields: &Fields, doc: &mut TantivyDocument, file: &FileDoc, kind: &str) {
    doc.add_text(fields.kind, kind);
    doc.add_text(fields.file_id, &file.file_id);
    doc.add_text(fields.owner_id, &file.owner_id);
    doc.add_text(fields.readers, &file.owner_id);
    for reader in &file.readers {
        if reader != &file.owner_id {
            doc.add_text(fields.readers, reader);
        }
    }
    for collection in &file.collections {
        doc.add_text(fields.collections, collection);
    }
    for tag in &file.tags {
        doc.add_text(fields.tags, tag.trim().to_lowercase());
    }
    doc.add_text(fields.language, normalize_language(&file.language));
    let media = file.media_type.trim().to_lowercase();
    doc.add_text(fields.media_type, &media);
    let kind_of_media = media_kind(&media);
    if kind_of_media != media {
        doc.add_text(fields.media_type, kind_of_media);
    }
    doc.add_text(fields.filename, &file.filename);
    doc.add_u64(fields.uploaded_at, file.uploaded_at);
    doc.add_f64(fields.duration, file.duration);
}

/// Every document for one file: a file record, one per segment, one per chunk (with its vector
/// when there is one).
pub fn file_documents(
    fields: &Fields,
    file: &FileDoc,
    chunks: &[(Chunk, Option<Vec<f32>>)],
    embedded: bool,
) -> Vec<TantivyDocument> {
    let text_field = fields.text_lang[language_field_index(&file.language)];
    let mut docs = Vec::with_capacity(file.segments.len() + chunks.len() + 1);
    let mut record = TantivyDocument::default();
    add_file_fields(fields, &mut record, file, KIND_FILE);
    record.add_u64(fields.version, file.version);
    record.add_u64(fields.embedded, u64::from(embedded));
    record.add_u64(fields.schema_version, SCHEMA_VERSION);
    docs.push(record);
    for segment in &file.segments {
        let mut doc = TantivyDocument::default();
        add_file_fields(fields, &mut doc, file, KIND_SEGMENT);
        if let Some(name) = segment.speaker.as_deref() {
            doc.add_text(fields.speaker, name.trim().to_lowercase());
            doc.add_text(fields.speaker_name, name);
        }
        doc.add_u64(fields.segment_id, segment.segment_id as u64);
        doc.add_u64(fields.segment_last, segment.segment_id as u64);
        doc.add_f64(fields.start, segment.start);
        doc.add_f64(fields.end, segment.end);
        doc.add_text(fields.text, &segment.text);
        doc.add_text(text_field, &segment.text);
        docs.push(doc);
    }
    if let Some(summary) = file.summary.as_deref().filter(|s| !s.trim().is_empty()) {
        // The summary is one more passage, after the last segment, pointing at the start.
        let mut doc = TantivyDocument::default();
        add_file_fields(fields, &mut doc, file, KIND_SEGMENT);
        doc.add_text(fields.speaker_name, "Summary");
        let after_last = file.segments.last().map_or(0, |s| s.segment_id + 1) as u64;
        doc.add_u64(fields.segment_id, after_last);
        doc.add_u64(fields.segment_last, after_last);
        doc.add_f64(fields.start, 0.0);
        doc.add_f64(fields.end, 0.0);
        doc.add_text(fields.text, summary);
        doc.add_text(text_field, summary);
        docs.push(doc);
    }
    for (chunk, vector) in chunks {
        let Some(vector) = vector else { continue };
        let mut doc = TantivyDocument::default();
        add_file_fields(fields, &mut doc, file, KIND_CHUNK);
        for name in &chunk.speakers {
            doc.add_text(fields.speaker, name.trim().to_lowercase());
        }
        if let Some(name) = chunk.main_speaker.as_deref() {
            doc.add_text(fields.speaker_name, name);
        }
        doc.add_u64(fields.segment_id, chunk.first_segment as u64);
        doc.add_u64(fields.segment_last, chunk.last_segment as u64);
        doc.add_f64(fields.start, chunk.start);
        doc.add_f64(fields.end, chunk.end);
        doc.add_text(fields.text, &chunk.text);
        doc.add_u64(fields.chunk_hash, chunk.text_hash());
        let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
        doc.add_bytes(fields.vector, &bytes);
        docs.push(doc);
    }
    docs
}
