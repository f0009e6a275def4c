//! Semantic chunks and their vectors: cutting a transcript into ~200-word chunks along speaker
//! turns, the in-memory int8 copy of every segment's vectors for the exact scan, and the scan.
//!
//! The f32 vectors live in the tantivy index itself (a bytes fast field on chunk documents), so
//! they are committed, deleted and merged together with the documents they belong to and can
//! never disagree with them. For the scan each tantivy segment's vectors are loaded once into
//! an int8 matrix (per-vector scale, rows in document order so that a scan reads memory
//! sequentially); candidates from the scan are rescored with the stored f32 vectors, so every
//! score shown is the true cosine.

use std::collections::{BinaryHeap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use tantivy::columnar::BytesColumn;
use tantivy::index::SegmentId;
use tantivy::{DocId, SegmentReader};

use super::SegmentDoc;

/// Target words per chunk, the smallest chunk worth cutting at a speaker change, and the words
/// carried over into the next chunk when a chunk has to be cut inside a speaker turn.
///
/// Short on purpose: in conversation the answer to a question is one sentence among small
/// talk, and a 200-word chunk's other words drown it (measured with MiniLM, "where did she
/// grow up" against three phone calls that answer it: 0.249, 0.009 and 0.025 for the whole
/// call, 0.369, 0.085 and 0.222 for its best 40-word window; unrelated text 0.008–0.025).
pub const CHUNK_WORDS: usize = 48;
pub const CHUNK_MIN_WORDS_AT_TURN: usize = 24;
pub const CHUNK_OVERLAP_WORDS: usize = 16;

/// A run of consecutive segments embedded together.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub first_segment: usize,
    pub last_segment: usize,
    pub start: f64,
    pub end: f64,
    /// Every speaker with words in the chunk (for the speaker filter).
    pub speakers: Vec<String>,
    /// The speaker with the most words, shown with the hit.
    pub main_speaker: Option<String>,
    pub text: String,
}

impl Chunk {
    /// Identifies the text, so that a rename or tag change reuses vectors instead of embedding.
    pub fn text_hash(&self) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.text.hash(&mut hasher);
        hasher.finish()
    }
}

fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// Cuts segments into chunks of about [`CHUNK_WORDS`] words. A chunk ends at a speaker change
/// once it holds [`CHUNK_MIN_WORDS_AT_TURN`] words, and must end at [`CHUNK_WORDS`]; a chunk cut
/// inside a turn hands its last ~[`CHUNK_OVERLAP_WORDS`] words' segments to the next one.
pub fn chunk_segments(segments: &[SegmentDoc]) -> Vec<Chunk> {
    let mut chunks = Vec::new();
    let counts: Vec<usize> = segments.iter().map(|s| words(&s.text)).collect();
    let mut begin = 0;
    while begin < segments.len() {
        let mut total = 0;
        let mut end = begin;
        let mut cut_at_turn = false;
        while end < segments.len() {
            if end > begin
                && total >= CHUNK_MIN_WORDS_AT_TURN
                && segments[end].speaker != segments[end - 1].speaker
            {
                cut_at_turn = true;
                break;
            }
            total += counts[end];
            end += 1;
            if total >= CHUNK_WORDS {
                break;
            }
        }
        if total > 0 {
            chunks.push(make_chunk(&segments[begin..end]));
        }
        if end >= segments.len() {
            break;
        }
        let mut next = end;
        if !cut_at_turn && segments[end].speaker == segments[end - 1].speaker {
            let mut carried = 0;
            while next > begin + 1 && carried + counts[next - 1] <= CHUNK_OVERLAP_WORDS {
                carried += counts[next - 1];
                next -= 1;
            }
        }
        begin = next;
    }
    chunks
}

fn make_chunk(segments: &[SegmentDoc]) -> Chunk {
    let mut per_speaker: Vec<(String, usize)> = Vec::new();
    let mut text = String::new();
    for segment in segments {
        let trimmed = segment.text.trim();
        if !trimmed.is_empty() {
            if !text.is_empty() {
                text.push(' ');
            }
            text.push_str(trimmed);
        }
        if let Some(name) = &segment.speaker {
            let count = words(trimmed);
            match per_speaker.iter_mut().find(|(n, _)| n == name) {
                Some(entry) => entry.1 += count,
                None => per_speaker.push((name.clone(), count)),
            }
        }
    }
    let main_speaker = per_speaker
        .iter()
        .max_by_key(|(_, count)| *count)
        .map(|(name, _)| name.clone());
    Chunk {
        first_segment: segments[0].segment_id,
        last_segment: segments[segments.len() - 1].segment_id,
        start: segments[0].start,
        end: segments[segments.len() - 1].end,
        speakers: per_speaker.into_iter().map(|(name, _)| name).collect(),
        main_speaker,
        text,
    }
}

/// Bytes of one stored f32 vector back to floats.
pub fn decode_vector(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Symmetric int8 quantisation with one scale per vector: `v ≈ scale · q`.
pub fn quantize(vector: &[f32], out: &mut Vec<i8>) -> f32 {
    let max = vector.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    out.extend(
        vector
            .iter()
            .map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8),
    );
    scale
}

/// Dot product of two int8 vectors (of equal length; a longer one is cut to the shorter). Uses
/// AVX2 when the CPU has it (checked at run time, once), else a portable loop.
#[inline]
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked just above), the only requirement of a
        // `#[target_feature(enable = "avx2")]` function.
        #[allow(unsafe_code)]
        return unsafe { dot_i8_avx2(a, b) };
    }
    dot_i8_portable(a, b)
}

/// The portable dot product: widening multiply-add over fixed 32-lane blocks, in a shape LLVM
/// vectorises with the baseline instruction set.
pub fn dot_i8_portable(a: &[i8], b: &[i8]) -> i32 {
    let mut lanes = [0i32; 32];
    let mut chunks_a = a.chunks_exact(32);
    let mut chunks_b = b.chunks_exact(32);
    for (ca, cb) in (&mut chunks_a).zip(&mut chunks_b) {
        for i in 0..32 {
            lanes[i] += i32::from(i16::from(ca[i]) * i16::from(cb[i]));
        }
    }
    let mut sum: i32 = lanes.iter().sum();
    for (x, y) in chunks_a.remainder().iter().zip(chunks_b.remainder()) {
        sum += i32::from(*x) * i32::from(*y);
    }
    sum
}

/// AVX2 dot product, exact for every i8 value: 16 lanes at a time sign-extended to i16
/// (`vpmovsxbw`) and multiplied with pairwise adds into i32 (`vpmaddwd`; a pair sums to at most
/// 2 · 128² < 2³¹, and 384-dimension rows cannot overflow the i32 lanes).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[allow(unsafe_code)]
unsafe fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
    use std::arch::x86_64::{
        __m128i, _mm_add_epi32, _mm_cvtsi128_si32, _mm_loadu_si128, _mm_shuffle_epi32,
        _mm256_add_epi32, _mm256_castsi256_si128, _mm256_cvtepi8_epi16, _mm256_extracti128_si256,
        _mm256_madd_epi16, _mm256_setzero_si256,
    };
    let n = a.len().min(b.len());
    let blocks = n / 16;
    let mut acc0 = _mm256_setzero_si256();
    let mut acc1 = _mm256_setzero_si256();
    let mut i = 0;
    while i + 1 < blocks {
        // SAFETY: blocks i and i + 1 (16 bytes each) lie within the first n bytes of both
        // slices; unaligned loads accept any address.
        let (a0, b0, a1, b1) = unsafe {
            (
                _mm_loadu_si128(a.as_ptr().add(i * 16).cast::<__m128i>()),
                _mm_loadu_si128(b.as_ptr().add(i * 16).cast::<__m128i>()),
                _mm_loadu_si128(a.as_ptr().add(i * 16 + 16).cast::<__m128i>()),
                _mm_loadu_si128(b.as_ptr().add(i * 16 + 16).cast::<__m128i>()),
            )
        };
        acc0 = _mm256_add_epi32(
            acc0,
            _mm256_madd_epi16(_mm256_cvtepi8_epi16(a0), _mm256_cvtepi8_epi16(b0)),
        );
        acc1 = _mm256_add_epi32(
            acc1,
            _mm256_madd_epi16(_mm256_cvtepi8_epi16(a1), _mm256_cvtepi8_epi16(b1)),
        );
        i += 2;
    }
    if i < blocks {
        // SAFETY: as above, for block i.
        let (a0, b0) = unsafe {
            (
                _mm_loadu_si128(a.as_ptr().add(i * 16).cast::<__m128i>()),
                _mm_loadu_si128(b.as_ptr().add(i * 16).cast::<__m128i>()),
            )
        };
        acc0 = _mm256_add_epi32(
            acc0,
            _mm256_madd_epi16(_mm256_cvtepi8_epi16(a0), _mm256_cvtepi8_epi16(b0)),
        );
    }
    let acc = _mm256_add_epi32(acc0, acc1);
    let s = _mm_add_epi32(
        _mm256_castsi256_si128(acc),
        _mm256_extracti128_si256::<1>(acc),
    );
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
    let mut sum = _mm_cvtsi128_si32(s);
    for j in blocks * 16..n {
        sum += i32::from(a[j]) * i32::from(b[j]);
    }
    sum
}

pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let mut chunks_a = a.chunks_exact(16);
    let mut chunks_b = b.chunks_exact(16);
    for (ca, cb) in (&mut chunks_a).zip(&mut chunks_b) {
        for i in 0..16 {
            lanes[i] += ca[i] * cb[i];
        }
    }
    let mut sum: f32 = lanes.iter().sum();
    for (x, y) in chunks_a.remainder().iter().zip(chunks_b.remainder()) {
        sum += x * y;
    }
    sum
}

/// The int8 vectors of one tantivy segment, rows addressed through `row_of_doc`.
pub struct SegmentVectors {
    pub dimension: usize,
    /// `u32::MAX` for documents without a vector.
    row_of_doc: Vec<u32>,
    codes: Vec<i8>,
    scales: Vec<f32>,
    column: Option<BytesColumn>,
}

impl SegmentVectors {
    fn load(reader: &SegmentReader, dimension: usize) -> tantivy::Result<SegmentVectors> {
        let max_doc = reader.max_doc() as usize;
        let mut row_of_doc = vec![u32::MAX; max_doc];
        let mut codes = Vec::new();
        let mut scales = Vec::new();
        let column = reader.fast_fields().bytes("vector")?;
        if let Some(column) = &column {
            // Read the dictionary once in order (ordinal -> quantised vector), then lay the rows
            // out in document order, so that a scan in document order reads memory
            // sequentially (dictionary order is the order of the vectors' bytes: random).
            let num_terms = column.num_terms();
            let mut row_of_ord = vec![u32::MAX; num_terms];
            let mut codes_by_ord = Vec::new();
            let mut scales_by_ord = Vec::new();
            let mut stream = column.dictionary().stream()?;
            while stream.advance() {
                let vector = decode_vector(stream.key());
                if vector.len() != dimension {
                    continue;
                }
                row_of_ord[stream.term_ord() as usize] = scales_by_ord.len() as u32;
                scales_by_ord.push(quantize(&vector, &mut codes_by_ord));
            }
            for (doc, row) in row_of_doc.iter_mut().enumerate() {
                let Some(ord) = column.term_ords(doc as DocId).next() else {
                    continue;
                };
                let Some(&source) = row_of_ord.get(ord as usize).filter(|r| **r != u32::MAX) else {
                    continue;
                };
                let source = source as usize;
                *row = scales.len() as u32;
                codes
                    .extend_from_slice(&codes_by_ord[source * dimension..(source + 1) * dimension]);
                scales.push(scales_by_ord[source]);
            }
        }
        Ok(SegmentVectors {
            dimension,
            row_of_doc,
            codes,
            scales,
            column,
        })
    }

    /// Approximate cosine (int8) of `doc` with a quantised query; `None` without a vector.
    #[inline]
    pub fn approx(&self, doc: DocId, query: &[i8], query_scale: f32) -> Option<f32> {
        let row = *self.row_of_doc.get(doc as usize)?;
        if row == u32::MAX {
            return None;
        }
        let row = row as usize;
        let codes = &self.codes[row * self.dimension..(row + 1) * self.dimension];
        Some(dot_i8(codes, query) as f32 * self.scales[row] * query_scale)
    }

    /// The stored f32 vector of `doc`.
    pub fn exact(&self, doc: DocId) -> Option<Vec<f32>> {
        let column = self.column.as_ref()?;
        let ord = column.term_ords(doc).next()?;
        let mut bytes = Vec::new();
        column.ord_to_bytes(ord, &mut bytes).ok()?;
        Some(decode_vector(&bytes))
    }

    /// Vectors held.
    pub fn rows(&self) -> usize {
        self.scales.len()
    }

    pub fn memory_bytes(&self) -> usize {
        self.codes.len() + self.scales.len() * 4 + self.row_of_doc.len() * 4
    }
}

/// Segment vectors by tantivy segment id. Segments are immutable, so an entry stays valid
/// until the segment leaves the index (merged or emptied); `retain` drops those.
#[derive(Default)]
pub struct VectorCache {
    segments: Mutex<HashMap<SegmentId, Arc<SegmentVectors>>>,
}

impl VectorCache {
    pub fn get(
        &self,
        reader: &SegmentReader,
        dimension: usize,
    ) -> tantivy::Result<Arc<SegmentVectors>> {
        let id = reader.segment_id();
        if let Some(found) = self.lock().get(&id) {
            return Ok(found.clone());
        }
        // Loaded outside the lock: another thread may load the same segment at the same time,
        // which costs work but never correctness.
        let loaded = Arc::new(SegmentVectors::load(reader, dimension)?);
        self.lock().insert(id, loaded.clone());
        Ok(loaded)
    }

    /// Loads every segment of `searcher` and forgets segments no longer in it.
    pub fn refresh(&self, searcher: &tantivy::Searcher, dimension: usize) -> tantivy::Result<()> {
        let live: Vec<SegmentId> = searcher
            .segment_readers()
            .iter()
            .map(|r| r.segment_id())
            .collect();
        self.lock().retain(|id, _| live.contains(id));
        for reader in searcher.segment_readers() {
            self.get(reader, dimension)?;
        }
        Ok(())
    }

    pub fn memory_bytes(&self) -> usize {
        self.lock().values().map(|s| s.memory_bytes()).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SegmentId, Arc<SegmentVectors>>> {
        self.segments.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A candidate of the scan: approximate score, segment ordinal, doc.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub score: f32,
    pub segment_ord: u32,
    pub doc: DocId,
}

impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    // Reversed so that the max-heap keeps the worst candidate on top.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then_with(|| self.segment_ord.cmp(&other.segment_ord))
            .then_with(|| self.doc.cmp(&other.doc))
    }
}

/// Keeps the `capacity` best candidates.
pub struct TopCandidates {
    capacity: usize,
    heap: BinaryHeap<Candidate>,
}

impl TopCandidates {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            heap: BinaryHeap::with_capacity(capacity + 1),
        }
    }

    #[inline]
    pub fn threshold(&self) -> f32 {
        if self.heap.len() < self.capacity {
            f32::NEG_INFINITY
        } else {
            self.heap.peek().map_or(f32::NEG_INFINITY, |c| c.score)
        }
    }

    #[inline]
    pub fn push(&mut self, candidate: Candidate) {
        if candidate.score <= self.threshold() {
            return;
        }
        self.heap.push(candidate);
        if self.heap.len() > self.capacity {
            self.heap.pop();
        }
    }

    pub fn into_vec(self) -> Vec<Candidate> {
        let mut all = self.heap.into_vec();
        all.sort_by(|a, b| b.score.total_cmp(&a.score));
        all
    }
}
