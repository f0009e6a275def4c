//! Long-form transcription: 30 s windows advanced by Whisper's timestamps, segments with
//! start and end times, language detection, no-speech skipping.

use super::alignment::{SegmentSpan, assign_by_tokens, word_timings};
use super::mel::{CHUNK_SAMPLES, SAMPLE_RATE};
use super::whisper::{AsrError, DecodeOptions, Decoded, WhisperModel};

#[derive(Debug, Clone, Default)]
pub struct TranscribeOptions {
    /// A language code such as `en`; `None` detects it from the first window.
    pub language: Option<String>,
    pub translate: bool,
    /// Feed each window's text to the next as a prompt (Whisper's default).
    pub condition_on_previous_text: bool,
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

/// Transcribes 16 kHz mono samples. `progress` gets the fraction of audio done.
pub fn transcribe(
    model: &mut WhisperModel,
    samples: &[f32],
    options: &TranscribeOptions,
    progress: &mut dyn FnMut(f32),
) -> Result<Transcript, AsrError> {
    let duration = samples.len() as f64 / SAMPLE_RATE as f64;
    let mut language: Option<(String, f32)> = match &options.language {
        Some(code) => Some((code.clone(), 1.0)),
        None if !model.params.multilingual => Some(("en".to_owned(), 1.0)),
        None => None,
    };
    let mut segments = Vec::new();
    let mut prompt: Vec<i64> = Vec::new();
    let mut seek: usize = 0;
    while seek + SAMPLE_RATE / 10 < samples.len() {
        let end = (seek + CHUNK_SAMPLES).min(samples.len());
        let window = &samples[seek..end];
        let window_secs = window.len() as f64 / SAMPLE_RATE as f64;
        let offset_secs = seek as f64 / SAMPLE_RATE as f64;
        let features = model.mel.compute(window);
        let encoded = model.encode(&features)?;
        if language.is_none() {
            let detected = model.detect_language(&encoded)?;
            language = detected.first().cloned();
        }
        let (code, _) = language.clone().unwrap_or(("en".to_owned(), 1.0));
        let language_token = if model.params.multilingual {
            Some(
                model
                    .tokenizer
                    .language_token(&code)
                    .ok_or_else(|| AsrError::Inference(format!("unknown language `{code}`")))?,
            )
        } else {
            None
        };
        let decode_options = DecodeOptions {
            language_token,
            translate: options.translate,
            timestamps: true,
            prompt: if options.condition_on_previous_text {
                prompt.clone()
            } else {
                Vec::new()
            },
            ..DecodeOptions::default()
        };
        let decoded = model.decode_greedy(&encoded, &decode_options)?;
        if decoded.no_speech_prob > NO_SPEECH_THRESHOLD && decoded.avg_logprob < LOGPROB_THRESHOLD {
            seek = end;
            progress((seek as f64 / samples.len() as f64) as f32);
            continue;
        }
        let (window_segments, consumed_secs) = split_segments(model, &decoded, window_secs, &code);
        for mut segment in window_segments {
            segment.start = (segment.start + offset_secs).min(duration);
            segment.end = (segment.end + offset_secs).min(duration);
            for word in &mut segment.words {
                word.start = (word.start + offset_secs).min(duration);
                word.end = (word.end + offset_secs).min(duration);
            }
            if !segment.text.trim().is_empty() {
                prompt.extend(
                    segment
                        .tokens
                        .iter()
                        .filter(|t| model.tokenizer.is_text(**t)),
                );
                segments.push(segment);
            }
        }
        let advance = ((consumed_secs * SAMPLE_RATE as f64) as usize).max(SAMPLE_RATE);
        seek = (seek + advance).min(samples.len());
        progress((seek as f64 / samples.len() as f64) as f32);
    }
    let (language, language_probability) = language.unwrap_or(("en".to_owned(), 0.0));
    Ok(Transcript {
        language,
        language_probability,
        duration,
        segments,
    })
}

/// Cuts a window's tokens into segments at timestamp pairs; returns them (times relative to
/// the window) and how many seconds of the window they account for.
fn split_segments(
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
    let spans: Vec<SegmentSpan> = segments
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
    for (segment, words) in segments.iter_mut().zip(assign_by_tokens(words, &spans)) {
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
