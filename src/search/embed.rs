//! Sentence embeddings with all-MiniLM-L6-v2 (int8 ONNX): a BERT WordPiece tokenizer (lower
//! case, accents stripped, punctuation split, `[CLS] … [SEP]`, at most 256 tokens), the
//! session, mean pooling of the last hidden state over the attention mask, L2 normalisation.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use ort::session::Session;
use ort::value::Tensor;

use super::SearchError;
use crate::models::runtime::Runtime;

/// The model's name in the cache.
pub const MODEL_NAME: &str = "minilm-l6-v2";
/// Tokens per input, `[CLS]` and `[SEP]` included (sentence-transformers' max_seq_length).
pub const MAX_TOKENS: usize = 256;
/// Texts per ONNX run.
const BATCH: usize = 8;

/// BERT's uncased WordPiece tokenizer, read from `vocab.txt`.
#[derive(Debug)]
pub struct WordPiece {
    vocab: HashMap<String, i64>,
    cls: i64,
    sep: i64,
    unk: i64,
}

impl WordPiece {
    pub fn from_vocab_file(path: &Path) -> Result<Self, SearchError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SearchError::Model(format!("cannot read {}: {e}", path.display())))?;
        Self::from_vocab(&text)
    }

    pub fn from_vocab(text: &str) -> Result<Self, SearchError> {
        let vocab: HashMap<String, i64> = text
            .lines()
            .enumerate()
            .map(|(i, token)| (token.to_owned(), i as i64))
            .collect();
        let id = |token: &str| {
            vocab
                .get(token)
                .copied()
                .ok_or_else(|| SearchError::Model(format!("vocab.txt has no {token}")))
        };
        Ok(Self {
            cls: id("[CLS]")?,
            sep: id("[SEP]")?,
            unk: id("[UNK]")?,
            vocab,
        })
    }

    /// Token ids with `[CLS]` and `[SEP]`, truncated to [`MAX_TOKENS`].
    pub fn encode(&self, text: &str) -> Vec<i64> {
        let mut ids = vec![self.cls];
        'words: for word in basic_tokens(text) {
            for id in self.word_pieces(&word) {
                if ids.len() == MAX_TOKENS - 1 {
                    break 'words;
                }
                ids.push(id);
            }
        }
        ids.push(self.sep);
        ids
    }

    /// Greedy longest-match-first, `##` for continuations; a word that cannot be split (or is
    /// over 100 characters) is `[UNK]`.
    fn word_pieces(&self, word: &str) -> Vec<i64> {
        let chars: Vec<char> = word.chars().collect();
        if chars.len() > 100 {
            return vec![self.unk];
        }
        let mut pieces = Vec::new();
        let mut start = 0;
        let mut candidate = String::new();
        while start < chars.len() {
            let mut end = chars.len();
            let mut found = None;
            while start < end {
                candidate.clear();
                if start > 0 {
                    candidate.push_str("##");
                }
                candidate.extend(&chars[start..end]);
                if let Some(&id) = self.vocab.get(&candidate) {
                    found = Some(id);
                    break;
                }
                end -= 1;
            }
            match found {
                Some(id) => pieces.push(id),
                None => return vec![self.unk],
            }
            start = end;
        }
        pieces
    }
}

fn is_bert_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r') || c.is_whitespace()
}

/// Unicode "C*" categories as BERT sees them (tab, newline and CR count as whitespace instead).
fn is_bert_control(c: char) -> bool {
    if matches!(c, '\t' | '\n' | '\r') {
        return false;
    }
    c.is_control()
        || matches!(c as u32,
            0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x180E
            | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F
            | 0xFEFF | 0xFFF9..=0xFFFB | 0xE000..=0xF8FF)
}

/// ASCII punctuation and symbols split like punctuation by BERT, plus Unicode punctuation blocks.
fn is_bert_punctuation(c: char) -> bool {
    let code = c as u32;
    (33..=47).contains(&code)
        || (58..=64).contains(&code)
        || (91..=96).contains(&code)
        || (123..=126).contains(&code)
        || matches!(code,
            0x00A1 | 0x00A7 | 0x00AB | 0x00B6 | 0x00B7 | 0x00BB | 0x00BF | 0x037E | 0x0387
            | 0x055A..=0x055F | 0x0589 | 0x05BE | 0x05C0 | 0x05C3 | 0x05C6 | 0x05F3 | 0x05F4
            | 0x060C | 0x060D | 0x061B | 0x061F | 0x066A..=0x066D | 0x06D4
            | 0x2010..=0x2027 | 0x2030..=0x2043 | 0x2045..=0x2051 | 0x2053..=0x205E
            | 0x207D | 0x207E | 0x208D | 0x208E | 0x2308..=0x230B | 0x2329 | 0x232A
            | 0x2768..=0x2775 | 0x27C5 | 0x27C6 | 0x27E6..=0x27EF | 0x2983..=0x2998
            | 0x29D8..=0x29DB | 0x29FC | 0x29FD | 0x2CF9..=0x2CFC | 0x2CFE | 0x2CFF
            | 0x2E00..=0x2E4F | 0x3001..=0x3003 | 0x3008..=0x3011 | 0x3014..=0x301F
            | 0x3030 | 0x303D | 0x30A0 | 0x30FB | 0xFE10..=0xFE19 | 0xFE30..=0xFE52
            | 0xFE54..=0xFE61 | 0xFE63 | 0xFE68 | 0xFE6A | 0xFE6B | 0xFF01..=0xFF03
            | 0xFF05..=0xFF0A | 0xFF0C..=0xFF0F | 0xFF1A | 0xFF1B | 0xFF1F | 0xFF20
            | 0xFF3B..=0xFF3D | 0xFF3F | 0xFF5B | 0xFF5D | 0xFF5F..=0xFF65)
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

/// BERT's basic tokenizer: clean, split CJK characters, lower-case and strip accents (NFD,
/// combining marks dropped), split on whitespace and punctuation.
fn basic_tokens(text: &str) -> Vec<String> {
    use unicode_normalization::UnicodeNormalization;
    use unicode_normalization::char::is_combining_mark;
    let mut tokens = Vec::new();
    let mut current = String::new();
    let flush = |current: &mut String, tokens: &mut Vec<String>| {
        if !current.is_empty() {
            tokens.push(std::mem::take(current));
        }
    };
    for c in text.chars() {
        if c == '\0' || c == '\u{FFFD}' || is_bert_control(c) {
            continue;
        }
        if is_bert_whitespace(c) {
            flush(&mut current, &mut tokens);
            continue;
        }
        if is_cjk(c) {
            flush(&mut current, &mut tokens);
            tokens.push(c.to_string());
            continue;
        }
        for lower in c.to_lowercase() {
            for d in std::iter::once(lower).nfd() {
                if is_combining_mark(d) {
                    continue;
                }
                if is_bert_punctuation(d) {
                    flush(&mut current, &mut tokens);
                    tokens.push(d.to_string());
                } else {
                    current.push(d);
                }
            }
        }
    }
    flush(&mut current, &mut tokens);
    tokens
}

/// The MiniLM session and its tokenizer. `embed` is safe to call from many threads (one run at
/// a time: the session is behind a mutex).
pub struct Embedder {
    session: Mutex<Session>,
    tokenizer: WordPiece,
    dimension: usize,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("dimension", &self.dimension)
            .finish_non_exhaustive()
    }
}

impl Embedder {
    /// Loads `model.onnx` and `vocab.txt` from `model_dir` (the cache's `minilm-l6-v2/`).
    pub fn load(runtime: &Runtime, model_dir: &Path) -> Result<Embedder, SearchError> {
        let model = model_dir.join("model.onnx");
        if !model.is_file() {
            return Err(SearchError::Model(format!(
                "{} is missing; import the {MODEL_NAME} model (scripts/fetch-models)",
                model.display()
            )));
        }
        let tokenizer = WordPiece::from_vocab_file(&model_dir.join("vocab.txt"))?;
        let session = runtime
            .session(&model)
            .map_err(|e| SearchError::Model(e.to_string()))?;
        let embedder = Embedder {
            session: Mutex::new(session),
            tokenizer,
            dimension: 384,
        };
        let probe = embedder.embed(&["probe"])?;
        let dimension = probe.first().map_or(0, |v| v.len());
        if dimension == 0 {
            return Err(SearchError::Model(
                "the embedding model returned an empty vector".to_owned(),
            ));
        }
        Ok(Embedder {
            dimension,
            ..embedder
        })
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    pub fn tokenizer(&self) -> &WordPiece {
        &self.tokenizer
    }

    /// One unit-length vector per text.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, SearchError> {
        let encoded: Vec<Vec<i64>> = texts.iter().map(|t| self.tokenizer.encode(t)).collect();
        // Similar lengths batched together waste less padding.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| encoded[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for batch in order.chunks(BATCH) {
            let inputs: Vec<&[i64]> = batch.iter().map(|&i| encoded[i].as_slice()).collect();
            for (vector, &i) in self.run(&inputs)?.into_iter().zip(batch) {
                out[i] = vector;
            }
        }
        Ok(out)
    }

    fn run(&self, batch: &[&[i64]]) -> Result<Vec<Vec<f32>>, SearchError> {
        let rows = batch.len();
        let width = batch.iter().map(|ids| ids.len()).max().unwrap_or(0);
        let mut ids = vec![0i64; rows * width];
        let mut mask = vec![0i64; rows * width];
        for (r, tokens) in batch.iter().enumerate() {
            ids[r * width..r * width + tokens.len()].copy_from_slice(tokens);
            mask[r * width..r * width + tokens.len()].fill(1);
        }
        let types = vec![0i64; rows * width];
        let shape = vec![rows as i64, width as i64];
        let fail = |e: ort::Error| SearchError::Model(format!("minilm: {e}"));
        let mut session = self.session.lock().unwrap_or_else(|e| e.into_inner());
        let outputs = session
            .run(ort::inputs![
                "input_ids" => Tensor::from_array((shape.clone(), ids)).map_err(fail)?,
                "attention_mask" => Tensor::from_array((shape.clone(), mask.clone())).map_err(fail)?,
                "token_type_ids" => Tensor::from_array((shape, types)).map_err(fail)?,
            ])
            .map_err(fail)?;
        let (out_shape, hidden) = outputs["last_hidden_state"]
            .try_extract_tensor::<f32>()
            .map_err(fail)?;
        let dim = *out_shape.last().unwrap_or(&0) as usize;
        if out_shape.len() != 3 || dim == 0 || hidden.len() != rows * width * dim {
            return Err(SearchError::Model(format!(
                "minilm: unexpected output shape {out_shape:?}"
            )));
        }
        let mut vectors = Vec::with_capacity(rows);
        for r in 0..rows {
            let mut pooled = vec![0f32; dim];
            let mut count = 0f32;
            for t in 0..width {
                if mask[r * width + t] == 0 {
                    continue;
                }
                count += 1.0;
                let row = &hidden[(r * width + t) * dim..(r * width + t + 1) * dim];
                for (p, h) in pooled.iter_mut().zip(row) {
                    *p += h;
                }
            }
            let count = count.max(1.0);
            pooled.iter_mut().for_each(|p| *p /= count);
            let norm = pooled.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            pooled.iter_mut().for_each(|p| *p /= norm);
            vectors.push(pooled);
        }
        Ok(vectors)
    }
}
