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

mod attention;
#[cfg(test)]
mod tests;

use std::ops::Range;

use crate::asr::tokenizer::Tokenizer;
use attention::{attention_matrix, dtw_row_starts, select_rows, window_frames};

/// Seconds per encoder frame (Whisper's `TOKENS_PER_SECOND` = 50).
pub const FRAME_SECS: f64 = 0.02;
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

/// Like [`assign_by_tokens`], but as Whisper and faster-whisper finish a window: the words
/// keep their aligned times (monotonic, inside `0..=window_end`) and each segment's bounds
/// follow its words, because the cross-attention alignment is more reliable than the decoded
/// timestamp tokens (a small model at greedy decoding can drift several seconds from the
/// audio). Where a segment's first (last) word is implausibly long, reaching more than 0.5 s
/// beyond the segment's timestamp, that word is shortened towards the timestamp first (the
/// words always stay inside their segment).
/// `segments` are updated in place.
pub fn assign_following_words(
    words: Vec<WordTiming>,
    segments: &mut [SegmentSpan],
    window_end: f64,
) -> Vec<Vec<WordTiming>> {
    let median = median_duration(&words);
    let max_duration = median * 2.0;
    let mut remaining = words.into_iter();
    let mut groups: Vec<Vec<WordTiming>> = Vec::with_capacity(segments.len());
    let mut last_speech = 0.0f64;
    let mut floor = 0.0f64;
    for segment in segments.iter_mut() {
        let mut group = Vec::new();
        let mut covered = 0usize;
        while covered < segment.text_tokens {
            let Some(word) = remaining.next() else { break };
            covered += word.tokens.len().max(1);
            group.push(word);
        }
        if median > 0.0 {
            shorten_after_pause(&mut group, last_speech, median, max_duration);
        }
        make_monotonic(&mut group, floor, window_end.max(floor));
        if let Some(first) = group.first_mut() {
            if segment.start < first.end && segment.start - 0.5 > first.start {
                first.start = (first.end - median).min(segment.start).max(0.0);
            }
            segment.start = first.start;
        }
        if let Some(last) = group.last_mut() {
            if segment.end > last.start && segment.end + 0.5 < last.end {
                last.end = (last.start + median).max(segment.end).min(last.end);
            }
            segment.end = last.end;
            last_speech = segment.end;
            floor = last.end;
        }
        groups.push(group);
    }
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
