//! Long-form transcription: 30 s windows advanced by Whisper's timestamps, segments with
//! start and end times, language detection, no-speech skipping.

use std::ops::ControlFlow;

use super::alignment::{SegmentSpan, assign_following_words, word_timings};
use super::mel::{CHUNK_SAMPLES, SAMPLE_RATE};
use super::whisper::{AsrError, DecodeOptions, Decoded, Encoded, WhisperModel};

#[derive(Debug, Clone, Default)]
pub struct TranscribeOptions {
    /// A language code such as `en`; `None` detects it from the first window.
    pub language: Option<String>,
    pub translate: bool,
    /// Feed each window's text to the next as a prompt (Whisper's default).
    pub condition_on_previous_text: bool,
}

/// How windows are decoded: beam search, Whisper's temperature fallback, prompts.
#[derive(Debug, Clone)]
pub struct DecodingOptions {
    /// Beams at temperature 0; 1 decodes greedily. Whisper's CLI and faster-whisper use 5.
    pub beam_size: usize,
    /// Sequences sampled per window at temperatures above 0 (the best one is kept).
    pub best_of: usize,
    /// Tried in order until a window's result passes the thresholds below.
    pub temperatures: Vec<f32>,
    /// Fall back when the text compresses better than this (see [`compression_ratio`]).
    pub compression_ratio_threshold: Option<f32>,
    /// Fall back when the mean token log-probability is below this...
    pub logprob_threshold: Option<f32>,
    /// ...unless no-speech is this likely: then the window is silence and skipped.
    pub no_speech_threshold: Option<f32>,
    /// Don't prompt the next window with text that needed a temperature above this.
    pub prompt_reset_on_temperature: f32,
    /// Text the first window is conditioned on (vocabulary, spelling, style).
    pub initial_prompt: Option<String>,
    /// Words put in every window's prompt (faster-whisper's hotwords).
    pub hotwords: Option<String>,
    /// Seeds sampling, so a transcription is reproducible.
    pub seed: u64,
}

impl Default for DecodingOptions {
    fn default() -> Self {
        Self {
            beam_size: 5,
            best_of: 5,
            temperatures: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            compression_ratio_threshold: Some(COMPRESSION_RATIO_THRESHOLD),
            logprob_threshold: Some(LOGPROB_THRESHOLD),
            no_speech_threshold: Some(NO_SPEECH_THRESHOLD),
            prompt_reset_on_temperature: 0.5,
            initial_prompt: None,
            hotwords: None,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub probability: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<i64>,
    pub avg_logprob: f32,
    pub no_speech_prob: f32,
    pub words: Vec<Word>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub language: String,
    pub language_probability: f32,
    pub duration: f64,
    pub segments: Vec<Segment>,
}

/// Whisper's thresholds: a window is silence when no-speech is likely and the text unlikely.
const NO_SPEECH_THRESHOLD: f32 = 0.6;
const LOGPROB_THRESHOLD: f32 = -1.0;

/// Whisper's limit on the zlib compression ratio of a window's text.
pub const COMPRESSION_RATIO_THRESHOLD: f32 = 2.4;

/// How well the text compresses (length over its zlib length, as Whisper computes it): high
/// for loops.
pub fn compression_ratio(text: &str) -> f32 {
    use std::io::Write;
    let bytes = text.as_bytes();
    if bytes.is_empty() {
        return 0.0;
    }
    // zlib at its default level, exactly as Whisper computes it, so its 2.4 threshold applies.
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    match encoder.write_all(bytes).and_then(|()| encoder.finish()) {
        Ok(compressed) if !compressed.is_empty() => bytes.len() as f32 / compressed.len() as f32,
        _ => 0.0,
    }
}

/// Transcribes 16 kHz mono samples with the default decoding (beam 5, temperature fallback).
/// `progress` gets the fraction of audio done.
pub fn transcribe(
    model: &mut WhisperModel,
    samples: &[f32],
    options: &TranscribeOptions,
    progress: &mut dyn FnMut(f32),
) -> Result<Transcript, AsrError> {
    transcribe_with(
        model,
        samples,
        options,
        &DecodingOptions::default(),
        progress,
    )
}

/// Prompt text as Whisper tokenises it: with a leading space.
pub(super) fn prompt_tokens(model: &WhisperModel, text: Option<&str>) -> Vec<i64> {
    match text.map(str::trim) {
        Some(text) if !text.is_empty() => model.encode_text(&format!(" {text}")),
        _ => Vec::new(),
    }
}

/// Transcribes with explicit decoding choices.
pub fn transcribe_with(
    model: &mut WhisperModel,
    samples: &[f32],
    options: &TranscribeOptions,
    decoding: &DecodingOptions,
    progress: &mut dyn FnMut(f32),
) -> Result<Transcript, AsrError> {
    // The initial prompt conditions the first decoded window; later ones see earlier text
    // only when conditioning is on.
    let mut prompt = prompt_tokens(model, decoding.initial_prompt.as_deref());
    transcribe_continuing(
        model,
        &mut SliceSamples(samples),
        options,
        decoding,
        &mut prompt,
        &mut |fraction| {
            progress(fraction);
            ControlFlow::Continue(())
        },
    )
}

/// The language known before any window is heard: the one asked for, or English for an
/// English-only model; `None` detects it from the first window.
pub(super) fn initial_language(
    model: &WhisperModel,
    options: &TranscribeOptions,
) -> Option<(String, f32)> {
    match &options.language {
        Some(code) => Some((code.clone(), 1.0)),
        None if !model.params.multilingual => Some(("en".to_owned(), 1.0)),
        None => None,
    }
}

/// The language token a multilingual model is prompted with (`None` for English-only ones).
pub(super) fn language_token_of(model: &WhisperModel, code: &str) -> Result<Option<i64>, AsrError> {
    if !model.params.multilingual {
        return Ok(None);
    }
    model
        .tokenizer
        .language_token(code)
        .map(Some)
        .ok_or_else(|| AsrError::Inference(format!("unknown language `{code}`")))
}

/// Whisper's tokens for an initial prompt (empty for none).
pub fn initial_prompt_tokens(model: &WhisperModel, text: Option<&str>) -> Vec<i64> {
    prompt_tokens(model, text)
}

/// Where the windows' 16 kHz samples come from: memory, or (in the pipeline) the speech of a
/// recording read from a scratch file window by window, so no recording is held in memory.
pub trait Samples {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Replaces `out` with samples `start..end` (`end <= len()`).
    fn read(&mut self, start: usize, end: usize, out: &mut Vec<f32>) -> Result<(), AsrError>;
}

/// Samples already in memory.
pub struct SliceSamples<'a>(pub &'a [f32]);

impl Samples for SliceSamples<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn read(&mut self, start: usize, end: usize, out: &mut Vec<f32>) -> Result<(), AsrError> {
        out.clear();
        out.extend_from_slice(&self.0[start.min(end)..end.min(self.0.len())]);
        Ok(())
    }
}

/// Whisper's long-form transcription over `audio`: 30 s windows, each advanced to the last
/// complete segment, each conditioned on the text before it. `prompt` holds the tokens (text
/// and timestamps) that condition the first window, and on return those that would condition
/// what follows (cleared after a window that needed a high temperature, or when conditioning
/// is off); `decoding.initial_prompt` is not used here. `progress` gets the fraction done after
/// each window and may cancel ([`AsrError::Cancelled`]).
pub fn transcribe_continuing(
    model: &mut WhisperModel,
    audio: &mut dyn Samples,
    options: &TranscribeOptions,
    decoding: &DecodingOptions,
    prompt: &mut Vec<i64>,
    progress: &mut dyn FnMut(f32) -> ControlFlow<()>,
) -> Result<Transcript, AsrError> {
    let total = audio.len();
    let duration = total as f64 / SAMPLE_RATE as f64;
    let mut progress = |seek: usize| {
        if progress((seek as f64 / total.max(1) as f64) as f32).is_break() {
            Err(AsrError::Cancelled)
        } else {
            Ok(())
        }
    };
    let mut window: Vec<f32> = Vec::with_capacity(CHUNK_SAMPLES);
    let mut language = initial_language(model, options);
    let mut segments = Vec::new();
    let hotwords = prompt_tokens(model, decoding.hotwords.as_deref());
    let prompt_limit = model.params.n_text_ctx / 2;
    let mut seek: usize = 0;
    while seek + SAMPLE_RATE / 10 < total {
        let end = (seek + CHUNK_SAMPLES).min(total);
        audio.read(seek, end, &mut window)?;
        let window_secs = window.len() as f64 / SAMPLE_RATE as f64;
        let offset_secs = seek as f64 / SAMPLE_RATE as f64;
        let features = model.mel.compute(&window);
        let encoded = model.encode(&features)?;
        if language.is_none() {
            let detected = model.detect_language(&encoded)?;
            language = detected.first().cloned();
        }
        let (code, _) = language.clone().unwrap_or(("en".to_owned(), 1.0));
        let language_token = language_token_of(model, &code)?;
        let decode_options = DecodeOptions {
            language_token,
            translate: options.translate,
            timestamps: true,
            prompt: prompt.clone(),
            hotwords: hotwords.clone(),
            ..DecodeOptions::default()
        };
        let seed = decoding.seed ^ (seek as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let decoded = decode_with_fallback(model, &encoded, &decode_options, decoding, seed)?;
        let silent = decoding
            .no_speech_threshold
            .is_some_and(|t| decoded.no_speech_prob > t)
            && !decoding
                .logprob_threshold
                .is_some_and(|t| decoded.avg_logprob > t);
        if silent {
            seek = end;
            progress(seek)?;
            continue;
        }
        let (window_segments, mut consumed_secs) =
            split_segments(model, &decoded, window_secs, &code);
        // Text the alignment cannot place in the audio (every segment made of words far too
        // short or improbable to be speech, by Whisper's anomaly score) is a hallucination,
        // typically on the silent tail of a last, partial window: the window is skipped.
        // (Not when translating: English words aligned to speech in another language look
        // anomalous by nature.)
        if !options.translate
            && window_segments.iter().any(|s| !s.words.is_empty())
            && window_segments
                .iter()
                .all(|s| s.words.is_empty() || is_segment_anomaly(&s.words))
        {
            tracing::debug!(
                seek,
                window_secs,
                "window text not placeable in its audio, skipped"
            );
            seek = end;
            progress(seek)?;
            continue;
        }
        // When the window ends inside a segment, the next one starts where its last word
        // ended (faster-whisper with word timestamps), rather than at the last timestamp token:
        // the alignment places it better, so the next window neither repeats nor skips speech.
        if consumed_secs < window_secs
            && let Some(last_word_end) = window_segments
                .iter()
                .rev()
                .find_map(|s| s.words.last().map(|w| w.end))
            && last_word_end > 0.0
        {
            consumed_secs = last_word_end.min(window_secs);
        }
        // Whisper's prompt reset: text that needed a high temperature is not to be trusted.
        let keep_prompt = options.condition_on_previous_text
            && decoded.temperature <= decoding.prompt_reset_on_temperature;
        if !keep_prompt {
            prompt.clear();
        }
        for mut segment in window_segments {
            // Text placed at or beyond the end of the window's audio (in the zero padding of
            // a last, partial window) is not in the recording.
            if segment.start >= window_secs {
                continue;
            }
            segment.start = (segment.start + offset_secs).min(duration);
            segment.end = (segment.end + offset_secs).min(duration);
            for word in &mut segment.words {
                word.start = (word.start + offset_secs).min(duration);
                word.end = (word.end + offset_secs).min(duration);
            }
            if !segment.text.trim().is_empty() {
                if keep_prompt {
                    // Text and its timestamps, as Whisper and faster-whisper prompt.
                    prompt.extend(segment.tokens.iter().filter(|t| {
                        model.tokenizer.is_text(**t) || model.tokenizer.is_timestamp(**t)
                    }));
                }
                segments.push(segment);
            }
        }
        // Only the last half-context of text is ever used as a prompt.
        let excess = prompt.len().saturating_sub(prompt_limit);
        prompt.drain(..excess);
        let advance = ((consumed_secs * SAMPLE_RATE as f64) as usize).max(SAMPLE_RATE);
        seek = (seek + advance).min(total);
        progress(seek)?;
    }
    let (language, language_probability) = language.unwrap_or(("en".to_owned(), 0.0));
    Ok(Transcript {
        language,
        language_probability,
        duration,
        segments,
    })
}

/// Whisper's score for a word unlikely to be speech: improbable, far too short, or too long.
fn word_anomaly_score(word: &Word) -> f64 {
    let duration = word.end - word.start;
    let mut score = 0.0;
    if word.probability < 0.15 {
        score += 1.0;
    }
    if duration < 0.133 {
        score += (0.133 - duration) * 15.0;
    }
    if duration > 2.0 {
        score += duration - 2.0;
    }
    score
}

/// Whisper's test for a hallucinated segment: its first eight words (punctuation aside) score
/// at least 3, or about one each.
pub(super) fn is_segment_anomaly(words: &[Word]) -> bool {
    let words: Vec<&Word> = words
        .iter()
        .filter(|w| !w.text.chars().all(|c| PUNCTUATION.contains(c)))
        .take(8)
        .collect();
    if words.is_empty() {
        return false;
    }
    let score: f64 = words.iter().map(|w| word_anomaly_score(w)).sum();
    score >= 3.0 || score + 0.01 >= words.len() as f64
}

/// Whisper's punctuation set for the anomaly score.
const PUNCTUATION: &str = "\"'“¿([{-\"'.。,，!！?？:：”)]}、";

/// Whisper's checks of one decoding: whether it stands (fluent and likely, or silence) and
/// whether it is repetitive (a loop, or text that compresses too well).
pub(super) fn judge(
    model: &WhisperModel,
    decoded: &Decoded,
    decoding: &DecodingOptions,
) -> (bool, bool) {
    let text = model.tokenizer.decode(&decoded.tokens);
    let repetitive = decoded.repetitive
        || decoding
            .compression_ratio_threshold
            .is_some_and(|t| compression_ratio(&text) > t);
    let unlikely = decoding
        .logprob_threshold
        .is_some_and(|t| decoded.avg_logprob < t);
    tracing::debug!(
        temperature = decoded.temperature,
        tokens = decoded.tokens.len(),
        avg_logprob = decoded.avg_logprob,
        compression_ratio = compression_ratio(&text),
        repetitive = decoded.repetitive,
        "window decoded"
    );
    let silence = unlikely
        && decoding
            .no_speech_threshold
            .is_some_and(|t| decoded.no_speech_prob > t);
    (silence || !(repetitive || unlikely), repetitive)
}

/// Whisper's temperature fallback: decode at each temperature in turn until the result is
/// neither repetitive nor unlikely (or is silence). When every try fails, the likeliest one
/// that isn't repetitive is kept (faster-whisper), reported at the last temperature so that
/// the prompt is reset.
pub(super) fn decode_with_fallback(
    model: &mut WhisperModel,
    encoded: &Encoded,
    base: &DecodeOptions,
    decoding: &DecodingOptions,
    seed: u64,
) -> Result<Decoded, AsrError> {
    let temperatures: &[f32] = if decoding.temperatures.is_empty() {
        &[0.0]
    } else {
        &decoding.temperatures
    };
    let mut failed: Vec<(Decoded, bool)> = Vec::new();
    for (i, &temperature) in temperatures.iter().enumerate() {
        let options = DecodeOptions {
            temperature,
            beam_size: decoding.beam_size,
            best_of: decoding.best_of,
            seed: seed ^ i as u64,
            ..base.clone()
        };
        let decoded = model.decode(encoded, &options)?;
        let (accepted, repetitive) = judge(model, &decoded, decoding);
        if accepted {
            return Ok(decoded);
        }
        failed.push((decoded, repetitive));
    }
    let any_fluent = failed.iter().any(|(_, repetitive)| !repetitive);
    let last_temperature = temperatures.last().copied().unwrap_or(0.0);
    failed
        .into_iter()
        .filter(|(_, repetitive)| !any_fluent || !repetitive)
        .map(|(decoded, _)| decoded)
        .max_by(|a, b| a.avg_logprob.total_cmp(&b.avg_logprob))
        .map(|mut decoded| {
            decoded.temperature = last_temperature;
            decoded
        })
        .ok_or_else(|| AsrError::Inference("no decoding result".to_owned()))
}

/// Cuts a window's tokens into segments at timestamp pairs; returns them (times relative to
/// the window) and how many seconds of the window they account for.
pub(super) fn split_segments(
    model: &WhisperModel,
    decoded: &Decoded,
    window_secs: f64,
    language: &str,
) -> (Vec<Segment>, f64) {
    let (mut segments, consumed) = split_at_timestamps(model, decoded, window_secs);
    attach_words(model, decoded, window_secs, language, &mut segments);
    (segments, consumed)
}

/// Word timings for the window, given to the segments their text tokens came from.
fn attach_words(
    model: &WhisperModel,
    decoded: &Decoded,
    window_secs: f64,
    language: &str,
    segments: &mut [Segment],
) {
    if model.params.alignment_heads.is_empty() || decoded.alignment.is_empty() {
        return;
    }
    let words = word_timings(
        &model.tokenizer,
        &decoded.tokens,
        &decoded.logprobs,
        &decoded.alignment,
        window_secs,
        language,
    );
    let mut spans: Vec<SegmentSpan> = segments
        .iter()
        .map(|s| SegmentSpan {
            start: s.start,
            end: s.end,
            text_tokens: s
                .tokens
                .iter()
                .filter(|t| model.tokenizer.is_text(**t))
                .count(),
        })
        .collect();
    let groups = assign_following_words(words, &mut spans, window_secs);
    for ((segment, words), span) in segments.iter_mut().zip(groups).zip(&spans) {
        segment.start = span.start;
        segment.end = span.end.max(span.start);
        segment.words = words
            .into_iter()
            .map(|w| Word {
                start: w.start,
                end: w.end,
                text: w.text.trim().to_owned(),
                probability: w.probability,
            })
            .filter(|w| !w.text.is_empty())
            .collect();
    }
}

fn split_at_timestamps(
    model: &WhisperModel,
    decoded: &Decoded,
    window_secs: f64,
) -> (Vec<Segment>, f64) {
    let tokenizer = &model.tokenizer;
    let tokens = &decoded.tokens;
    let is_ts: Vec<bool> = tokens.iter().map(|t| tokenizer.is_timestamp(*t)).collect();
    let single_timestamp_ending =
        tokens.len() >= 2 && is_ts[tokens.len() - 1] && !is_ts[tokens.len() - 2];
    let mut cuts: Vec<usize> = (1..tokens.len())
        .filter(|&i| is_ts[i] && is_ts[i - 1])
        .collect();
    let make = |slice: &[i64], logprobs: &[f32], start: f64, end: f64| {
        let text = tokenizer.decode(slice);
        let avg = if logprobs.is_empty() {
            0.0
        } else {
            logprobs.iter().sum::<f32>() / logprobs.len() as f32
        };
        Segment {
            start,
            end: end.max(start),
            text: text.trim().to_owned(),
            tokens: slice.to_vec(),
            avg_logprob: avg,
            no_speech_prob: decoded.no_speech_prob,
            words: Vec::new(),
        }
    };
    let mut segments = Vec::new();
    if cuts.is_empty() {
        let timestamps: Vec<i64> = tokens
            .iter()
            .copied()
            .filter(|t| tokenizer.is_timestamp(*t))
            .collect();
        let mut end = window_secs;
        if let Some(&last) = timestamps.last()
            && last != tokenizer.special.timestamp_begin
        {
            end = tokenizer.timestamp_seconds(last);
        }
        let start = timestamps
            .first()
            .map(|t| tokenizer.timestamp_seconds(*t))
            .unwrap_or(0.0);
        segments.push(make(tokens, &decoded.logprobs, start, end.min(window_secs)));
        return (segments, window_secs);
    }
    if single_timestamp_ending {
        cuts.push(tokens.len());
    }
    let mut last_cut = 0;
    for &cut in &cuts {
        let slice = &tokens[last_cut..cut];
        if let (Some(&first), Some(&last)) = (slice.first(), slice.last()) {
            let start = tokenizer.timestamp_seconds(first);
            let end = tokenizer.timestamp_seconds(last);
            segments.push(make(
                slice,
                &decoded.logprobs[last_cut..cut],
                start,
                end.min(window_secs),
            ));
        }
        last_cut = cut;
    }
    let consumed = if single_timestamp_ending {
        window_secs
    } else {
        tokens
            .get(last_cut.saturating_sub(1))
            .map(|t| tokenizer.timestamp_seconds(*t))
            .unwrap_or(window_secs)
    };
    (segments, consumed)
}
