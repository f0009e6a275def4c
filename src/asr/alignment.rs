//! Word timestamps from Whisper's cross-attention, as openai-whisper's `timing.py` does:
//! the alignment heads' attention over the text tokens is normalised, median-filtered and
//! averaged, dynamic time warping finds the monotonic token→frame path, tokens are grouped
//! into words, punctuation is attached to its word, and a few heuristics keep the times sane.
//!
//! # The attention rows
//!
//! `alignment[r][h][f]` is the cross-attention weight of alignment head `h` over audio frame
//! `f` (20 ms each, 1500 per 30 s window) for one decoder step `r`. Like Whisper, the row used
//! for a token is the row of the query whose logits *predicted* that token, and one more row —
//! the one that predicted whatever followed the last text token (a timestamp or end-of-text) —
//! closes the last word. Two layouts are accepted, told apart by length:
//!
//! * `alignment.len() > tokens.len()` (preferred): `alignment[i]` predicted `tokens[i]`;
//!   `alignment[tokens.len()]` predicted end-of-text. The decoder produces this by also
//!   keeping the row of the prompt's last token, ahead of the sampled tokens' rows. Extra rows
//!   after that are ignored, so the caller may pass a prefix of `tokens` with all rows.
//! * `alignment.len() <= tokens.len()`: `alignment[i]` was computed when `tokens[i]` was fed,
//!   i.e. it predicted `tokens[i + 1]`. The row that predicted `tokens[0]` is then missing; that
//!   costs nothing when `tokens[0]` is a timestamp (always so with timestamps on), and otherwise
//!   the first token borrows the second token's row.
//!
//! Rows may hold probabilities (softmax over all 1500 frames, as `scripts/convert_whisper.py`
//! exports them) or raw scores: probabilities are renormalised over the window's frames and raw
//! scores get a softmax over them, which is the same thing Whisper computes. Frames past
//! `window_secs` are padding and never read. Missing or ragged rows shorten the result (trailing
//! tokens without rows get no words); nothing here panics on malformed input.

use std::ops::Range;

use crate::asr::tokenizer::Tokenizer;

/// Seconds per encoder frame (Whisper's `TOKENS_PER_SECOND` = 50).
pub const FRAME_SECS: f64 = 0.02;
/// Whisper's median filter width along frames.
const MEDIAN_WIDTH: usize = 7;
/// Punctuation joined to the following word (Whisper's `prepend_punctuations`).
pub const PREPEND_PUNCTUATION: &str = "\"'“¿([{-";
/// Punctuation joined to the preceding word (Whisper's `append_punctuations`).
pub const APPEND_PUNCTUATION: &str = "\"'.。,，!！?？:：”)]}、";
const SENTENCE_END_MARKS: &str = ".。!！?？";
/// Python's `string.punctuation`, matched as Whisper does (`word.strip() in punctuation`).
const ASCII_PUNCTUATION: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";
/// Languages written without spaces between words: split on character boundaries instead.
const NO_SPACE_LANGUAGES: [&str; 6] = ["zh", "ja", "th", "lo", "my", "yue"];
/// Whisper caps the median word duration used by its heuristics at 0.7 s.
const MAX_MEDIAN_DURATION: f64 = 0.7;

/// One word with its time span, relative to the window start (or, after
/// [`assign_to_segments`], clamped into its segment).
#[derive(Debug, Clone, PartialEq)]
pub struct WordTiming {
    /// The word's text as decoded, with its leading space kept as Whisper does.
    pub text: String,
    pub start: f64,
    pub end: f64,
    /// Mean of the word's token probabilities (0 when no log-probabilities were given).
    pub probability: f32,
    pub tokens: Vec<i64>,
}

/// Time span of one segment and how many text tokens it holds, for [`assign_by_tokens`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SegmentSpan {
    pub start: f64,
    pub end: f64,
    pub text_tokens: usize,
}

/// Whether words of `language` (a code such as `en`) are delimited by spaces.
pub fn splits_on_spaces(language: &str) -> bool {
    !NO_SPACE_LANGUAGES.contains(&language)
}

/// Word timings for one window's text tokens, times relative to the window start.
///
/// `tokens` are the sampled tokens (timestamps included; only text tokens get words),
/// `logprobs[i]` the log-probability of `tokens[i]`, `alignment` the attention rows (see the
/// module documentation for their layout) and `window_secs` the length of real audio in the
/// window. Punctuation is already merged ([`merge_punctuation`]) and long words next to a
/// sentence end are shortened. Returns nothing when there is no text or no usable attention.
pub fn word_timings(
    tokenizer: &Tokenizer,
    tokens: &[i64],
    logprobs: &[f32],
    alignment: &[Vec<Vec<f32>>],
    window_secs: f64,
    language: &str,
) -> Vec<WordTiming> {
    let text_positions: Vec<usize> = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| tokenizer.is_text(**t))
        .map(|(i, _)| i)
        .collect();
    let rows = select_rows(tokens.len(), alignment, &text_positions);
    // One row per kept text token plus the closing row.
    let kept = rows.len().saturating_sub(1);
    let Some(positions) = text_positions.get(..kept) else {
        return Vec::new();
    };
    if positions.is_empty() {
        return Vec::new();
    }
    let Some(matrix) = attention_matrix(&rows, window_frames(window_secs)) else {
        return Vec::new();
    };
    let starts = dtw_row_starts(&matrix);
    let ids: Vec<i64> = positions
        .iter()
        .filter_map(|&p| tokens.get(p).copied())
        .collect();
    let probabilities: Vec<Option<f32>> = positions
        .iter()
        .map(|&p| logprobs.get(p).map(|lp| lp.exp()))
        .collect();
    let mut words: Vec<WordTiming> = split_words(tokenizer, &ids, splits_on_spaces(language))
        .into_iter()
        .filter_map(|(text, range)| {
            let start = *starts.get(range.start)?;
            let end = *starts.get(range.end)?;
            let probability = mean_probability(probabilities.get(range.clone())?);
            Some(WordTiming {
                text,
                start: start as f64 * FRAME_SECS,
                end: end as f64 * FRAME_SECS,
                probability,
                tokens: ids.get(range)?.to_vec(),
            })
        })
        .collect();
    truncate_at_sentence_ends(&mut words);
    merge_punctuation(&mut words);
    words
}

/// Attaches punctuation to its word with Whisper's rules: a space-led word made only of
/// [`PREPEND_PUNCTUATION`] joins the next word, and a word made only of
/// [`APPEND_PUNCTUATION`] joins the previous one unless that ends with a space. The merged word
/// keeps the main word's times; its probability is the mean over all its tokens. Times are made
/// monotonic and non-overlapping afterwards.
pub fn merge_punctuation(words: &mut Vec<WordTiming>) {
    // Prepended punctuation, scanning backwards so runs like ` "(` collapse into one word.
    let mut following = words.len();
    for i in (0..words.len()).rev() {
        if following < words.len() && following != i {
            let trimmed = words.get(i).map(|w| w.text.trim()).unwrap_or("x");
            let starts_with_space = words.get(i).is_some_and(|w| w.text.starts_with(' '));
            if starts_with_space
                && PREPEND_PUNCTUATION.contains(trimmed)
                && let Some(slot) = words.get_mut(i)
            {
                let previous = std::mem::replace(slot, empty_word());
                if let Some(next) = words.get_mut(following) {
                    join_front(previous, next);
                }
                continue;
            }
        }
        following = i;
    }
    words.retain(|w| !w.tokens.is_empty() || !w.text.is_empty());

    // Appended punctuation, scanning forwards.
    let mut merged: Vec<WordTiming> = Vec::with_capacity(words.len());
    for word in words.drain(..) {
        match merged.last_mut() {
            Some(previous)
                if !previous.text.ends_with(' ') && APPEND_PUNCTUATION.contains(&*word.text) =>
            {
                join_back(previous, word);
            }
            _ => merged.push(word),
        }
    }
    *words = merged;
    make_monotonic(words, f64::NEG_INFINITY, f64::INFINITY);
}

/// Puts each word into the segment (`(start, end)`, window-relative like the words) that
/// contains its midpoint, or else the nearest one, then applies Whisper's segment heuristics
/// and clamps the words into their segment, monotonic and non-overlapping. The result has one
/// list per segment. The "first word after a pause" check takes the speech before the first
/// segment to end at 0 (the window start). Words of tokens the caller discards (such as an
/// unfinished last segment) should be left out of the input, or use [`assign_by_tokens`],
/// which drops them.
pub fn assign_to_segments(words: Vec<WordTiming>, segments: &[(f64, f64)]) -> Vec<Vec<WordTiming>> {
    let mut groups: Vec<Vec<WordTiming>> = vec![Vec::new(); segments.len()];
    let median = median_duration(&words);
    for word in words {
        let mid = (word.start + word.end) / 2.0;
        let mut best: Option<(usize, f64)> = None;
        for (index, &(start, end)) in segments.iter().enumerate() {
            let (lo, hi) = ordered(start, end);
            let distance = if mid < lo {
                lo - mid
            } else if mid > hi {
                mid - hi
            } else {
                0.0
            };
            // A NaN distance counts as infinitely far; ties keep the earlier segment.
            let distance = if distance.is_nan() {
                f64::INFINITY
            } else {
                distance
            };
            if best.is_none_or(|(_, d)| distance < d) {
                best = Some((index, distance));
            }
        }
        if let Some(group) = best.and_then(|(index, _)| groups.get_mut(index)) {
            group.push(word);
        }
    }
    finish_segments(&mut groups, segments, median);
    groups
}

/// Like [`assign_to_segments`], but by token counts as Whisper does: words are taken in order,
/// each segment takes words until it has covered `text_tokens` text tokens, and words left after
/// the last segment are dropped.
pub fn assign_by_tokens(words: Vec<WordTiming>, segments: &[SegmentSpan]) -> Vec<Vec<WordTiming>> {
    let median = median_duration(&words);
    let mut remaining = words.into_iter().peekable();
    let mut groups: Vec<Vec<WordTiming>> = Vec::with_capacity(segments.len());
    for segment in segments {
        let mut group = Vec::new();
        let mut covered = 0usize;
        while covered < segment.text_tokens {
            let Some(word) = remaining.next() else { break };
            covered += word.tokens.len().max(1);
            group.push(word);
        }
        groups.push(group);
    }
    let bounds: Vec<(f64, f64)> = segments.iter().map(|s| (s.start, s.end)).collect();
    finish_segments(&mut groups, &bounds, median);
    groups
}

/// Whisper's per-segment fixes, then clamping: a first word after a long pause is shortened to
/// at most twice the median word duration, and every word is kept inside its segment.
fn finish_segments(groups: &mut [Vec<WordTiming>], segments: &[(f64, f64)], median: f64) {
    let max_duration = median * 2.0;
    let mut last_speech = 0.0f64;
    for (group, &(start, end)) in groups.iter_mut().zip(segments) {
        let (lo, hi) = ordered(start, end);
        if median > 0.0 {
            shorten_after_pause(group, last_speech, median, max_duration);
        }
        make_monotonic(group, lo, hi);
        if !group.is_empty() {
            last_speech = hi;
        }
    }
}

/// Whisper's "first and second word after a pause" hack, on one segment's words.
fn shorten_after_pause(words: &mut [WordTiming], last_speech: f64, median: f64, max_duration: f64) {
    let (first_end, first_start) = match words.first() {
        Some(w) => (w.end, w.start),
        None => return,
    };
    let second = words.get(1).map(|w| (w.start, w.end));
    let too_long = first_end - first_start > max_duration
        || second.is_some_and(|(_, end)| end - first_start > max_duration * 2.0);
    if first_end - last_speech <= median * 4.0 || !too_long {
        return;
    }
    if let Some((second_start, second_end)) = second
        && second_end - second_start > max_duration
    {
        let boundary = (second_end / 2.0).max(second_end - max_duration);
        if let Some(w) = words.get_mut(1) {
            w.start = boundary;
        }
        if let Some(w) = words.first_mut() {
            w.end = boundary;
        }
    }
    if let Some(w) = words.first_mut() {
        w.start = (w.end - max_duration).max(0.0);
    }
}

/// Whisper's "truncate long words at sentence boundaries" hack: a sentence-ending mark, or the
/// word right after one, lasts at most twice the median word duration (itself capped at 0.7 s).
fn truncate_at_sentence_ends(words: &mut [WordTiming]) {
    let median = median_duration(words);
    if median <= 0.0 {
        return;
    }
    let max_duration = median * 2.0;
    let mut previous_is_end = words.first().is_some_and(|w| is_sentence_end(&w.text));
    for word in words.iter_mut().skip(1) {
        let is_end = is_sentence_end(&word.text);
        if word.end - word.start > max_duration {
            if is_end {
                word.end = word.start + max_duration;
            } else if previous_is_end {
                word.start = word.end - max_duration;
            }
        }
        previous_is_end = is_end;
    }
}

fn is_sentence_end(text: &str) -> bool {
    !text.is_empty() && SENTENCE_END_MARKS.contains(text)
}

/// Median of the non-zero word durations, capped at 0.7 s; 0 when there are none.
fn median_duration(words: &[WordTiming]) -> f64 {
    let mut durations: Vec<f64> = words
        .iter()
        .map(|w| w.end - w.start)
        .filter(|d| d.is_finite() && *d != 0.0)
        .collect();
    if durations.is_empty() {
        return 0.0;
    }
    durations.sort_by(f64::total_cmp);
    let mid = durations.len() / 2;
    let median = if durations.len().is_multiple_of(2) {
        match (durations.get(mid.wrapping_sub(1)), durations.get(mid)) {
            (Some(a), Some(b)) => (a + b) / 2.0,
            _ => 0.0,
        }
    } else {
        durations.get(mid).copied().unwrap_or(0.0)
    };
    median.min(MAX_MEDIAN_DURATION)
}

/// Keeps times inside `[lo, hi]`, each word starting no earlier than the previous one ends.
fn make_monotonic(words: &mut [WordTiming], lo: f64, hi: f64) {
    let mut floor = lo;
    for word in words {
        let start = if word.start.is_finite() {
            word.start
        } else {
            floor
        };
        let end = if word.end.is_finite() {
            word.end
        } else {
            start
        };
        word.start = start.max(floor).min(hi);
        word.end = end.max(word.start).min(hi);
        floor = word.end;
    }
}

fn ordered(a: f64, b: f64) -> (f64, f64) {
    if a <= b { (a, b) } else { (b, a) }
}

fn empty_word() -> WordTiming {
    WordTiming {
        text: String::new(),
        start: 0.0,
        end: 0.0,
        probability: 0.0,
        tokens: Vec::new(),
    }
}

/// `front` (prepended punctuation) joins the start of `word`; `word` keeps its times.
fn join_front(front: WordTiming, word: &mut WordTiming) {
    word.probability = pooled_probability(&front, word);
    word.text = front.text + &word.text;
    let mut tokens = front.tokens;
    tokens.append(&mut word.tokens);
    word.tokens = tokens;
}

/// `back` (appended punctuation) joins the end of `word`; `word` keeps its times.
fn join_back(word: &mut WordTiming, back: WordTiming) {
    word.probability = pooled_probability(word, &back);
    word.text.push_str(&back.text);
    word.tokens.extend(back.tokens);
}

/// Mean token probability of two words together, weighting each by its token count.
fn pooled_probability(a: &WordTiming, b: &WordTiming) -> f32 {
    let (na, nb) = (a.tokens.len() as f32, b.tokens.len() as f32);
    if na + nb == 0.0 {
        return a.probability;
    }
    (a.probability * na + b.probability * nb) / (na + nb)
}

fn mean_probability(probabilities: &[Option<f32>]) -> f32 {
    let known: Vec<f32> = probabilities
        .iter()
        .flatten()
        .copied()
        .filter(|p| p.is_finite())
        .collect();
    if known.is_empty() {
        0.0
    } else {
        known.iter().sum::<f32>() / known.len() as f32
    }
}

/// Number of encoder frames that hold real audio for a window of `window_secs`.
fn window_frames(window_secs: f64) -> usize {
    if !window_secs.is_finite() || window_secs <= 0.0 {
        return 0;
    }
    // Saturating float→int conversion; the row length caps it anyway.
    (window_secs / FRAME_SECS).round() as usize
}

/// The attention rows for the text tokens at `positions` plus the closing row, for the longest
/// prefix of text tokens that has all of them. Empty when not even one token has its rows.
fn select_rows<'a>(
    n_tokens: usize,
    alignment: &'a [Vec<Vec<f32>>],
    positions: &[usize],
) -> Vec<&'a [Vec<f32>]> {
    let predicted_by_index = alignment.len() > n_tokens;
    let predicting = |i: usize| -> Option<&'a [Vec<f32>]> {
        let row = if predicted_by_index {
            alignment.get(i)
        } else {
            i.checked_sub(1).and_then(|j| alignment.get(j))
        };
        row.map(Vec::as_slice)
    };
    let mut rows = Vec::with_capacity(positions.len() + 1);
    for (k, &position) in positions.iter().enumerate() {
        let row = predicting(position).or_else(|| {
            // Only the very first token may borrow its neighbour's row.
            if k == 0 {
                predicting(position + 1)
            } else {
                None
            }
        });
        match row {
            Some(row) => rows.push(row),
            None => break,
        }
    }
    // Close the last kept token with the row that predicted the token after it.
    while let Some(&last) = positions.get(rows.len().wrapping_sub(1)) {
        if let Some(closing) = predicting(last + 1) {
            rows.push(closing);
            return rows;
        }
        rows.pop();
    }
    Vec::new()
}

/// Row-major `rows × cols` matrix of token-to-frame alignment scores.
#[derive(Debug, Clone, PartialEq)]
struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

/// Whisper's alignment matrix: per head, each row renormalised over the window's frames,
/// standardised over tokens per frame, median-filtered along frames; then the heads' mean.
fn attention_matrix(rows: &[&[Vec<f32>]], max_frames: usize) -> Option<Matrix> {
    let heads = rows.iter().map(|r| r.len()).min()?;
    let frames = rows
        .iter()
        .flat_map(|r| r.iter().take(heads).map(Vec::len))
        .min()?
        .min(max_frames);
    let n = rows.len();
    if heads == 0 || frames == 0 || n == 0 {
        return None;
    }
    let mut acc = vec![0.0f32; n * frames];
    let mut head_matrix = vec![0.0f32; n * frames];
    let mut sums = vec![0.0f64; frames];
    let mut squares = vec![0.0f64; frames];
    for head in 0..heads {
        for (dst, row) in head_matrix.chunks_exact_mut(frames).zip(rows) {
            let full = row.get(head).map(Vec::as_slice).unwrap_or(&[]);
            normalise_row(full, dst);
        }
        standardise_columns(&mut head_matrix, frames, &mut sums, &mut squares);
        for (src, dst) in head_matrix
            .chunks_exact(frames)
            .zip(acc.chunks_exact_mut(frames))
        {
            median_filter_add(src, dst);
        }
    }
    let scale = 1.0 / heads as f32;
    for v in &mut acc {
        *v *= scale;
    }
    Some(Matrix {
        rows: n,
        cols: frames,
        data: acc,
    })
}

/// Writes the attention over the first `dst.len()` frames of `full` as a distribution over
/// those frames: probabilities (non-negative, summing to about 1 over the whole row) are
/// renormalised, anything else is treated as scores and softmaxed. Non-finite values weigh 0.
fn normalise_row(full: &[f32], dst: &mut [f32]) {
    let window = full.get(..dst.len()).unwrap_or(&[]);
    if window.len() != dst.len() {
        dst.fill(0.0);
        return;
    }
    let is_probability = full.iter().all(|v| v.is_finite() && *v >= 0.0) && {
        let total: f64 = full.iter().map(|v| f64::from(*v)).sum();
        (0.9..=1.1).contains(&total)
    };
    if is_probability {
        for (d, v) in dst.iter_mut().zip(window) {
            *d = *v;
        }
    } else {
        let max = window
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(f32::NEG_INFINITY, f32::max);
        for (d, v) in dst.iter_mut().zip(window) {
            *d = if v.is_finite() { (v - max).exp() } else { 0.0 };
        }
    }
    let total: f64 = dst.iter().map(|v| f64::from(*v)).sum();
    if total > 0.0 && total.is_finite() {
        let scale = (1.0 / total) as f32;
        for d in dst.iter_mut() {
            *d *= scale;
        }
    } else {
        dst.fill(1.0 / dst.len() as f32);
    }
}

/// `(x - mean) / std` over the token axis for every frame (population std; a constant column
/// becomes 0).
fn standardise_columns(matrix: &mut [f32], frames: usize, sums: &mut [f64], squares: &mut [f64]) {
    sums.fill(0.0);
    squares.fill(0.0);
    let mut n = 0usize;
    for row in matrix.chunks_exact(frames) {
        n += 1;
        for ((s, q), v) in sums.iter_mut().zip(squares.iter_mut()).zip(row) {
            let v = f64::from(*v);
            *s += v;
            *q += v * v;
        }
    }
    if n == 0 {
        return;
    }
    let n = n as f64;
    for (s, q) in sums.iter_mut().zip(squares.iter_mut()) {
        let mean = *s / n;
        let variance = (*q / n - mean * mean).max(0.0);
        let std = variance.sqrt();
        *s = mean;
        *q = if std > 1e-12 { 1.0 / std } else { 0.0 };
    }
    for row in matrix.chunks_exact_mut(frames) {
        for ((v, mean), inverse_std) in row.iter_mut().zip(sums.iter()).zip(squares.iter()) {
            *v = ((f64::from(*v) - mean) * inverse_std) as f32;
        }
    }
}

/// Adds the width-7 median of `src` (reflect-padded at the edges, as `F.pad(mode="reflect")`)
/// to `dst`. Rows too short to pad are added unfiltered, as Whisper does.
fn median_filter_add(src: &[f32], dst: &mut [f32]) {
    let len = src.len();
    let half = MEDIAN_WIDTH / 2;
    if len <= half {
        for (d, s) in dst.iter_mut().zip(src) {
            *d += *s;
        }
        return;
    }
    let last = len - 1;
    let mut window = [0.0f32; MEDIAN_WIDTH];
    for (j, d) in dst.iter_mut().enumerate().take(len) {
        for (k, slot) in window.iter_mut().enumerate() {
            // Position j + k - half, reflected into 0..len without repeating the edge.
            let offset = j + k;
            let index = if offset < half {
                half - offset
            } else if offset - half > last {
                2 * last + half - offset
            } else {
                offset - half
            };
            *slot = src.get(index).copied().unwrap_or(0.0);
        }
        window.sort_unstable_by(f32::total_cmp);
        *d += window[half];
    }
}

/// Dynamic time warping on `-matrix` (Whisper's `dtw_cpu` and `backtrace`), returning the
/// first frame of every row on the monotonic path from (0, 0) to (rows-1, cols-1).
fn dtw_row_starts(matrix: &Matrix) -> Vec<usize> {
    let (n, m) = (matrix.rows, matrix.cols);
    let mut starts = vec![0usize; n];
    if n == 0 || m == 0 || matrix.data.len() != n * m {
        return starts;
    }
    let width = m + 1;
    let mut cost = vec![f64::INFINITY; (n + 1) * width];
    // 0: diagonal, 1: up (next token, same frame), 2: left (same token, next frame).
    let mut trace = vec![2u8; (n + 1) * width];
    cost[0] = 0.0;
    for i in 1..=n {
        let row = &matrix.data[(i - 1) * m..i * m];
        let (above, here) = cost.split_at_mut(i * width);
        let above = &above[(i - 1) * width..];
        let here = &mut here[..width];
        let trace_row = &mut trace[i * width..(i + 1) * width];
        for j in 1..=m {
            let c0 = above[j - 1];
            let c1 = above[j];
            let c2 = here[j - 1];
            let (c, t) = if c0 < c1 && c0 < c2 {
                (c0, 0)
            } else if c1 < c0 && c1 < c2 {
                (c1, 1)
            } else {
                (c2, 2)
            };
            let x = row[j - 1];
            let x = if x.is_finite() { f64::from(x) } else { 0.0 };
            here[j] = c - x;
            trace_row[j] = t;
        }
    }
    // Backtrace: row 0 of the table always moves left, column 0 always up.
    let (mut i, mut j) = (n, m);
    while i > 0 || j > 0 {
        if i > 0
            && let Some(s) = starts.get_mut(i - 1)
        {
            *s = j.saturating_sub(1);
        }
        let step = if i == 0 {
            2
        } else if j == 0 {
            1
        } else {
            trace[i * width + j]
        };
        match step {
            0 => {
                i -= 1;
                j -= 1;
            }
            1 => i -= 1,
            _ => j -= 1,
        }
    }
    starts
}

/// Groups text tokens into words: first into runs that decode to whole UTF-8 characters
/// (Whisper's `split_tokens_on_unicode`), then, for languages with spaces, into words that
/// start at a space or a punctuation mark (`split_tokens_on_spaces`). Returns each word's text
/// and its range of token indices.
fn split_words(tokenizer: &Tokenizer, ids: &[i64], on_spaces: bool) -> Vec<(String, Range<usize>)> {
    let mut pieces: Vec<(String, Range<usize>)> = Vec::new();
    let mut bytes: Vec<u8> = Vec::new();
    let mut piece_start = 0;
    for (k, &id) in ids.iter().enumerate() {
        bytes.extend_from_slice(tokenizer.token_bytes(id));
        if !ends_mid_character(&bytes) {
            pieces.push((
                String::from_utf8_lossy(&bytes).into_owned(),
                piece_start..k + 1,
            ));
            bytes.clear();
            piece_start = k + 1;
        }
    }
    if piece_start < ids.len() {
        pieces.push((
            String::from_utf8_lossy(&bytes).into_owned(),
            piece_start..ids.len(),
        ));
    }
    if !on_spaces {
        return pieces;
    }
    let mut words: Vec<(String, Range<usize>)> = Vec::new();
    for (text, range) in pieces {
        let starts_word = text.starts_with(' ') || ASCII_PUNCTUATION.contains(text.trim());
        match words.last_mut() {
            Some((word, word_range)) if !starts_word => {
                word.push_str(&text);
                word_range.end = range.end;
            }
            _ => words.push((text, range)),
        }
    }
    words
}

/// Whether `bytes` end inside a UTF-8 character that more bytes could complete.
fn ends_mid_character(mut bytes: &[u8]) -> bool {
    loop {
        match std::str::from_utf8(bytes) {
            Ok(_) => return false,
            Err(e) => match e.error_len() {
                None => return true,
                Some(bad) => {
                    bytes = bytes.get(e.valid_up_to() + bad..).unwrap_or(&[]);
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;
    use crate::asr::tokenizer::SpecialTokens;

    /// Vocabulary of the fake tokenizer; ids are positions. eot is right after it.
    const VOCAB: &[&[u8]] = &[
        b" Hello",       // 0
        b",",            // 1
        b" world",       // 2
        b".",            // 3
        b" (",           // 4
        b" wor",         // 5
        b"ld",           // 6
        b" caf",         // 7
        b"\xc3",         // 8: first byte of "é"
        b"\xa9",         // 9: second byte of "é"
        "你".as_bytes(), // 10
        "好".as_bytes(), // 11
        b"!",            // 12
        b" Hi",          // 13
    ];
    const EOT: i64 = VOCAB.len() as i64;
    const TS: i64 = EOT + 10;

    fn tokenizer() -> Tokenizer {
        let mut text = String::new();
        for (id, bytes) in VOCAB.iter().enumerate() {
            let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
            text.push_str(&format!("{encoded} {id}\n"));
        }
        let special = SpecialTokens {
            sot: EOT + 1,
            eot: EOT,
            transcribe: EOT + 2,
            translate: EOT + 3,
            sot_prev: EOT + 4,
            no_speech: EOT + 5,
            no_timestamps: EOT + 6,
            timestamp_begin: TS,
            languages: vec![("en".into(), EOT + 7)],
        };
        Tokenizer::from_tokens_txt(&text, special).unwrap()
    }

    fn ts(seconds: f64) -> i64 {
        TS + (seconds / 0.02).round() as i64
    }

    /// Small deterministic noise in [0, 1).
    fn noise(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 40) as f32 / (1u64 << 24) as f32
    }

    /// One attention row per span (softmaxed over all `total` frames): most weight on the span's
    /// frames, some noise elsewhere, and `padding_spike` weight on a frame past `window_frames`.
    fn rows_for_spans(
        spans: &[Range<usize>],
        heads: usize,
        total: usize,
        padding_spike: Option<usize>,
        seed: u64,
    ) -> Vec<Vec<Vec<f32>>> {
        let mut seed = seed;
        spans
            .iter()
            .map(|span| {
                (0..heads)
                    .map(|_| {
                        let mut row: Vec<f32> = (0..total)
                            .map(|f| {
                                let base = if span.contains(&f) { 10.0 } else { 0.0 };
                                base + noise(&mut seed)
                            })
                            .collect();
                        if let Some(frame) = padding_spike {
                            row[frame] = 10_000.0;
                        }
                        let sum: f32 = row.iter().sum();
                        row.iter().map(|v| v / sum).collect()
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn dtw_recovers_a_known_diagonal_path() {
        // Five tokens plus the closing row, over 100 frames of a 2 s window.
        let spans = [0..12, 12..30, 30..41, 41..70, 70..85, 85..100];
        let rows = rows_for_spans(&spans, 3, 1500, None, 7);
        let refs: Vec<&[Vec<f32>]> = rows.iter().map(Vec::as_slice).collect();
        let matrix = attention_matrix(&refs, window_frames(2.0)).unwrap();
        assert_eq!((matrix.rows, matrix.cols), (6, 100));
        let starts = dtw_row_starts(&matrix);
        for (start, span) in starts.iter().zip(&spans) {
            assert!(
                start.abs_diff(span.start) <= 1,
                "starts {starts:?} vs spans {spans:?}"
            );
        }
    }

    #[test]
    fn frames_past_the_window_are_never_used() {
        // A huge spike at frame 1200 (padding of a 2 s window) must not move anything: rows
        // are renormalised over the window's 100 frames. It is in every row, and " world"'s
        // row has a second one at 1300.
        let tok = tokenizer();
        let tokens = [ts(0.0), 0, 2, 3, ts(2.0)];
        let logprobs = [0.0, -0.1, -0.2, -0.3, 0.0];
        // Rows that predicted tokens[0..=4] and eot.
        let spans = [0..1, 0..20, 20..45, 45..60, 60..100, 99..100];
        let mut spiked = rows_for_spans(&spans, 2, 1500, Some(1200), 3);
        for head in &mut spiked[2] {
            head[1300] = 0.9;
        }
        let clean = rows_for_spans(&spans, 2, 1500, None, 3);
        let with_spike = word_timings(&tok, &tokens, &logprobs, &spiked, 2.0, "en");
        let plain = word_timings(&tok, &tokens, &logprobs, &clean, 2.0, "en");
        assert_eq!(plain.len(), 2, "{plain:?}");
        assert_eq!(with_spike.len(), 2, "{with_spike:?}");
        for (a, b) in with_spike.iter().zip(&plain) {
            assert!(
                (a.start - b.start).abs() <= 0.02 + 1e-9,
                "{with_spike:?} vs {plain:?}"
            );
            assert!(
                (a.end - b.end).abs() <= 0.02 + 1e-9,
                "{with_spike:?} vs {plain:?}"
            );
        }
        assert!((plain[1].start - 0.40).abs() <= 0.02 + 1e-9, "{plain:?}");
        assert!((plain[1].end - 0.90).abs() <= 0.02 + 1e-9, "{plain:?}");
        // The spike alone, read as audio, would drag the last word past the window.
        let whole = word_timings(&tok, &tokens, &logprobs, &spiked, 30.0, "en");
        assert!(whole.iter().any(|w| w.end > 2.0), "{whole:?}");
        assert!(with_spike.iter().all(|w| w.end <= 2.0));
        // Padding filled with NaN is never read either.
        let mut nan_rows = clean.clone();
        for row in &mut nan_rows {
            for head in row {
                for v in &mut head[100..] {
                    *v = f32::NAN;
                }
            }
        }
        let with_nan = word_timings(&tok, &tokens, &logprobs, &nan_rows, 2.0, "en");
        assert_eq!(with_nan.len(), 2);
        assert!(with_nan.iter().all(|w| w.end <= 2.0 && w.start.is_finite()));
    }

    #[test]
    fn matrix_steps_match_whisper() {
        // Standardised over tokens per frame (population std); a constant frame becomes 0.
        let mut m = vec![1.0, 2.0, 5.0, 3.0, 6.0, 5.0];
        standardise_columns(&mut m, 3, &mut [0.0; 3], &mut [0.0; 3]);
        assert_eq!(m, [-1.0, -1.0, 0.0, 1.0, 1.0, 0.0]);
        // Width-7 median with reflect padding, as torch's `F.pad(mode="reflect")`.
        let src = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let mut dst = [0.0f32; 8];
        median_filter_add(&src, &mut dst);
        assert_eq!(dst, [3.0, 3.0, 3.0, 4.0, 5.0, 6.0, 6.0, 6.0]);
        let mut dst = [1.0f32; 6];
        median_filter_add(&[0.0, 0.0, 9.0, 0.0, 0.0, 0.0], &mut dst);
        assert_eq!(dst, [1.0; 6]);
        let mut dst = [0.0f32; 3];
        median_filter_add(&[1.0, 9.0, 2.0], &mut dst);
        assert_eq!(dst, [1.0, 9.0, 2.0]);
        // Probabilities over the whole row are renormalised over the window; scores softmaxed.
        let mut dst = [0.0f32; 2];
        normalise_row(&[0.1, 0.3, 0.6], &mut dst);
        assert!((dst[0] - 0.25).abs() < 1e-6 && (dst[1] - 0.75).abs() < 1e-6);
        normalise_row(&[0.0, 3.0f32.ln(), 7.0], &mut dst);
        assert!((dst[0] - 0.25).abs() < 1e-6 && (dst[1] - 0.75).abs() < 1e-6);
        // Tokens attending alike leave nothing after standardisation.
        let row = vec![vec![0.1f32, 0.2, 0.3, 0.4]];
        let same = attention_matrix(&[row.as_slice(), row.as_slice()], 4).unwrap();
        assert_eq!(same.data, [0.0; 8]);
    }

    #[test]
    fn words_get_their_tokens_times_and_punctuation() {
        let tok = tokenizer();
        // " Hello, world." with timestamps around it, in a 2 s window.
        let tokens = [ts(0.0), 0, 1, 2, 3, ts(1.8)];
        let logprobs = [
            0.0,
            (0.9f32).ln(),
            (0.5f32).ln(),
            (0.8f32).ln(),
            (0.7f32).ln(),
            0.0,
        ];
        // Rows that predicted tokens[0..6] and eot; text tokens at 1..=4, closing row 5.
        let spans = [0..1, 10..30, 30..40, 40..70, 70..80, 80..100, 99..100];
        let rows = rows_for_spans(&spans, 2, 1500, None, 11);
        let words = word_timings(&tok, &tokens, &logprobs, &rows, 2.0, "en");
        let texts: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(texts, [" Hello,", " world."]);
        assert_eq!(words[0].tokens, [0, 1]);
        assert_eq!(words[1].tokens, [2, 3]);
        // " Hello" starts where the path starts (frame 0) and ends where "," begins; the merged
        // word keeps " Hello"'s times, as Whisper does.
        assert!((words[0].start - 0.0).abs() < 1e-9);
        assert!((words[0].end - 0.60).abs() <= 0.02 + 1e-9, "{words:?}");
        assert!((words[1].start - 0.80).abs() <= 0.02 + 1e-9, "{words:?}");
        assert!((words[1].end - 1.40).abs() <= 0.02 + 1e-9, "{words:?}");
        assert!((words[0].probability - 0.7).abs() < 1e-5);
        assert!((words[1].probability - 0.75).abs() < 1e-5);

        // The decoder's current layout (rows computed when each token was fed) gives the same.
        let fed: Vec<Vec<Vec<f32>>> = rows[1..].to_vec();
        assert_eq!(fed.len(), tokens.len());
        assert_eq!(
            word_timings(&tok, &tokens, &logprobs, &fed, 2.0, "en"),
            words
        );

        // Raw scores instead of probabilities give the same words too.
        let scores: Vec<Vec<Vec<f32>>> = rows
            .iter()
            .map(|r| {
                r.iter()
                    .map(|h| h.iter().map(|p| p.ln() + 3.0).collect())
                    .collect()
            })
            .collect();
        let from_scores = word_timings(&tok, &tokens, &logprobs, &scores, 2.0, "en");
        assert_eq!(from_scores.len(), 2);
        for (a, b) in from_scores.iter().zip(&words) {
            assert!((a.start - b.start).abs() <= 0.02 + 1e-9, "{from_scores:?}");
            assert!((a.end - b.end).abs() <= 0.02 + 1e-9, "{from_scores:?}");
        }
    }

    #[test]
    fn subword_and_multibyte_tokens_stay_in_one_word() {
        let tok = tokenizer();
        // " wor" "ld" " caf" "\xc3" "\xa9" → " world", " café"
        let ids = [5, 6, 7, 8, 9];
        let words = split_words(&tok, &ids, true);
        assert_eq!(
            words,
            [(" world".to_owned(), 0..2), (" café".to_owned(), 2..5)]
        );
        // Without spaces (Chinese) every whole character is its own word.
        let words = split_words(&tok, &[10, 11, 12], false);
        let texts: Vec<&str> = words.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(texts, ["你", "好", "!"]);
        assert!(!splits_on_spaces("zh") && splits_on_spaces("en"));
        // A lone trailing byte does not swallow anything or panic.
        assert_eq!(split_words(&tok, &[8], true).len(), 1);
    }

    fn word(text: &str, start: f64, end: f64, tokens: &[i64], probability: f32) -> WordTiming {
        WordTiming {
            text: text.to_owned(),
            start,
            end,
            probability,
            tokens: tokens.to_vec(),
        }
    }

    #[test]
    fn punctuation_joins_its_neighbour() {
        let mut words = vec![
            word(" (", 0.0, 0.1, &[4], 0.2),
            word(" Hi", 0.1, 0.5, &[13], 0.6),
            word("!", 0.5, 0.6, &[12], 1.0),
            word(" world", 0.6, 1.0, &[2], 0.5),
            word(".", 1.0, 1.1, &[3], 0.9),
        ];
        merge_punctuation(&mut words);
        let texts: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(texts, [" ( Hi!", " world."]);
        assert_eq!(words[0].tokens, [4, 13, 12]);
        assert!((words[0].start - 0.1).abs() < 1e-9 && (words[0].end - 0.5).abs() < 1e-9);
        assert!((words[0].probability - 0.6).abs() < 1e-6);
        assert!((words[1].probability - 0.7).abs() < 1e-6);
        // A word ending in a space takes no punctuation.
        let mut words = vec![
            word(" a ", 0.0, 0.1, &[1], 1.0),
            word(".", 0.1, 0.2, &[3], 1.0),
        ];
        merge_punctuation(&mut words);
        assert_eq!(words.len(), 2);
    }

    #[test]
    fn long_sentence_end_marks_are_truncated() {
        let mut words = vec![
            word(" a", 0.0, 0.3, &[0], 1.0),
            word(" b", 0.3, 0.6, &[0], 1.0),
            word(".", 0.6, 3.0, &[3], 1.0),
            word(" c", 3.0, 6.0, &[0], 1.0),
            word(" d", 6.0, 6.3, &[0], 1.0),
        ];
        truncate_at_sentence_ends(&mut words);
        // Median of 0.3, 0.3, 2.4, 3.0, 0.3 is 0.3 → at most 0.6 s.
        assert!((words[2].end - 1.2).abs() < 1e-9, "{words:?}");
        assert!((words[3].start - 5.4).abs() < 1e-9, "{words:?}");
        assert!((words[4].start - 6.0).abs() < 1e-9);
    }

    #[test]
    fn segments_get_their_words_clamped_and_monotonic() {
        let words = vec![
            word(" one", 0.0, 1.2, &[0], 1.0),
            word(" two", 1.1, 1.5, &[0], 1.0),
            word(" three", 2.9, 3.6, &[0], 1.0),
            word(" four", 3.6, 9.0, &[0], 1.0),
        ];
        let segments = [(1.0, 2.0), (3.0, 5.0)];
        let groups = assign_to_segments(words.clone(), &segments);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].len(), 2);
        assert_eq!(groups[1].len(), 2);
        for (group, &(lo, hi)) in groups.iter().zip(&segments) {
            let mut floor = lo;
            for w in group {
                assert!(
                    w.start >= floor && w.end >= w.start && w.end <= hi,
                    "{groups:?}"
                );
                floor = w.end;
            }
        }
        assert!((groups[1][1].end - 5.0).abs() < 1e-9);

        // A first word after a long pause is cut to twice the median word duration (0.3 s)
        // instead of reaching back to the previous segment.
        let paused = vec![
            word(" a", 0.0, 0.3, &[0], 1.0),
            word(" b", 0.3, 0.6, &[0], 1.0),
            word(" c", 0.6, 0.9, &[0], 1.0),
            word(" d", 0.9, 8.0, &[0], 1.0),
            word(" e", 8.0, 8.3, &[0], 1.0),
        ];
        let groups = assign_to_segments(paused, &[(0.0, 1.0), (5.0, 10.0)]);
        assert_eq!(groups[1].len(), 2);
        assert!((groups[1][0].start - 7.4).abs() < 1e-9, "{groups:?}");

        // By tokens: the first segment has 1 text token, the second 2; " four" is left over.
        let spans = [
            SegmentSpan {
                start: 0.0,
                end: 1.2,
                text_tokens: 1,
            },
            SegmentSpan {
                start: 1.2,
                end: 4.0,
                text_tokens: 2,
            },
        ];
        let groups = assign_by_tokens(words, &spans);
        let texts: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| g.iter().map(|w| w.text.as_str()).collect())
            .collect();
        assert_eq!(texts, [vec![" one"], vec![" two", " three"]]);
        assert!(groups[1].iter().all(|w| w.start >= 1.2 && w.end <= 4.0));
    }

    #[test]
    fn empty_and_malformed_input_gives_nothing_without_panicking() {
        let tok = tokenizer();
        assert!(word_timings(&tok, &[], &[], &[], 30.0, "en").is_empty());
        // Only timestamps.
        let rows = rows_for_spans(&[0..5, 5..10, 10..20], 2, 1500, None, 1);
        assert!(word_timings(&tok, &[ts(0.0), ts(1.0)], &[0.0; 2], &rows, 30.0, "en").is_empty());
        // Models without alignment heads store empty rows.
        let empty_heads = vec![Vec::new(); 4];
        assert!(word_timings(&tok, &[0, 1, 2], &[0.0; 3], &empty_heads, 30.0, "en").is_empty());
        // Zero, negative and NaN windows.
        for secs in [0.0, -1.0, f64::NAN] {
            assert!(word_timings(&tok, &[0, 2], &[0.0; 2], &rows, secs, "en").is_empty());
        }
        // Ragged heads, short rows, missing logprobs, too few rows: no panic, sane output.
        let mut ragged = rows_for_spans(&[0..5, 5..10, 10..15, 15..20], 3, 1500, None, 2);
        ragged[1].pop();
        ragged[2][0].truncate(17);
        let words = word_timings(&tok, &[0, 2, 3], &[], &ragged, 30.0, "en");
        assert!(
            words
                .iter()
                .all(|w| w.end <= 17.0 * FRAME_SECS && w.probability == 0.0)
        );
        // Two rows for five tokens (fed layout): only the first two tokens can be placed.
        let words = word_timings(&tok, &[0, 2, 3, 13, 2], &[0.0; 5], &ragged[..2], 30.0, "en");
        let texts: Vec<&str> = words.iter().map(|w| w.text.as_str()).collect();
        assert_eq!(texts, [" Hello", " world"]);
        assert!(assign_to_segments(Vec::new(), &[]).is_empty());
        assert!(assign_to_segments(vec![word(" x", 0.0, 1.0, &[0], 1.0)], &[]).is_empty());
        let nan_segment = assign_to_segments(
            vec![word(" x", 0.0, 1.0, &[0], 1.0)],
            &[(f64::NAN, f64::NAN)],
        );
        assert_eq!(nan_segment.len(), 1);
    }

    #[test]
    fn long_windows_are_fast_enough() {
        // 224 tokens × 1500 frames, 6 heads, must not take long even in debug builds.
        let n = 224;
        let spans: Vec<Range<usize>> = (0..=n).map(|k| k * 6..k * 6 + 6).collect();
        let rows = rows_for_spans(&spans, 6, 1500, None, 5);
        let refs: Vec<&[Vec<f32>]> = rows.iter().map(Vec::as_slice).collect();
        let started = std::time::Instant::now();
        let matrix = attention_matrix(&refs, 1500).unwrap();
        let starts = dtw_row_starts(&matrix);
        assert!(started.elapsed().as_secs_f64() < 10.0);
        assert!(starts.windows(2).all(|w| w[0] <= w[1]));
        for (k, s) in starts.iter().enumerate() {
            assert!(s.abs_diff(k * 6) <= 1, "token {k} at {s}");
        }
    }
}
