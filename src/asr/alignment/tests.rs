//! Unit tests of word timing with a fake tokenizer and synthetic attention.

use base64::Engine;

use super::attention::{
    attention_matrix, dtw_row_starts, median_filter_add, normalise_row, standardise_columns,
    window_frames,
};
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
fn segment_bounds_follow_their_words_when_timestamps_drift() {
    // The decoder stamped the segments 0–8 s and 8–25 s, but the speech (by the alignment)
    // is at 4.8–8.9 s and 9–29.5 s: the bounds move to the words rather than the words being
    // clamped into the stamps; only the end of the window's audio (28.8 s) clamps words.
    let words = vec![
        word(" Had", 4.8, 5.1, &[0], 0.9),
        word(" he", 5.1, 8.9, &[0], 0.9),
        word(" And", 9.0, 9.3, &[0], 0.9),
        word(" them.", 28.3, 29.5, &[0], 0.9),
    ];
    let mut spans = [
        SegmentSpan {
            start: 0.0,
            end: 8.0,
            text_tokens: 2,
        },
        SegmentSpan {
            start: 8.0,
            end: 25.0,
            text_tokens: 2,
        },
    ];
    let groups = assign_following_words(words, &mut spans, 28.8);
    assert_eq!((groups[0].len(), groups[1].len()), (2, 2));
    // (Whisper's "first word after a pause" hack may move the first word within its span.)
    assert!(
        spans[0].start == groups[0][0].start && spans[0].start > 4.0,
        "{spans:?}"
    );
    // " he" reaches 0.9 s past the segment's 8 s end: shortened towards it, not beyond.
    assert!(
        groups[0][1].end < 8.9 && groups[0][1].end >= 8.0,
        "{groups:?}"
    );
    assert!((spans[0].end - groups[0][1].end).abs() < 1e-9);
    assert!((spans[1].start - 9.0).abs() < 1e-9, "{spans:?}");
    assert!((spans[1].end - 28.8).abs() < 1e-9, "{spans:?}");
    for (group, span) in groups.iter().zip(&spans) {
        assert!(
            group
                .iter()
                .all(|w| w.start >= span.start && w.end <= span.end)
        );
    }
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
