//! Throughput mode: independent windows of up to 30 s, cut where the speech regions join (as
//! faster-whisper's batched pipeline cuts at its VAD segments), several at a time through one
//! encoder call and one greedy decode of a row per window. No window is conditioned on the
//! text before it, so windows need not wait for each other; a window whose batched result
//! fails Whisper's checks (a loop, text that compresses too well, unlikely text) is decoded
//! again on its own with the temperature fallback. Sequential conditioned decoding
//! ([`super::transcribe::transcribe_continuing`]) stays the default: it is what a CPU does
//! best, and what conditions each window on the last.

use std::collections::VecDeque;
use std::ops::ControlFlow;

use super::mel::{CHUNK_SAMPLES, SAMPLE_RATE};
use super::transcribe::{
    DecodingOptions, Samples, Segment, TranscribeOptions, Transcript, decode_with_fallback,
    initial_language, is_segment_anomaly, judge, language_token_of, prompt_tokens, split_segments,
};
use super::whisper::{AsrError, DecodeOptions, WhisperModel};

/// Windows `[start, end)` (in samples of the joined speech) of at most `max` samples each:
/// consecutive regions are gathered while they fit, a region longer than `max` is cut into
/// pieces of `max`, and no window is empty.
pub fn plan_windows(region_lengths: &[usize], max: usize) -> Vec<(usize, usize)> {
    let max = max.max(1);
    let mut windows = Vec::new();
    let (mut start, mut at) = (0usize, 0usize);
    for &length in region_lengths {
        let mut left = length;
        while left > 0 {
            if at - start == max {
                windows.push((start, at));
                start = at;
            }
            // A region that does not fit what is left of the window starts a new one, unless
            // it is longer than any window (then it fills this one up).
            if at > start && at - start + left > max && left <= max {
                windows.push((start, at));
                start = at;
            }
            let take = left.min(max - (at - start));
            at += take;
            left -= take;
        }
    }
    if at > start {
        windows.push((start, at));
    }
    windows
}

/// Transcribes `windows` of `audio`, `batch` at a time (see the module). `prompt` (an initial
/// prompt's tokens, or empty) is given to every window.
#[allow(clippy::too_many_arguments)]
pub fn transcribe_windows(
    model: &mut WhisperModel,
    audio: &mut dyn Samples,
    windows: &[(usize, usize)],
    options: &TranscribeOptions,
    decoding: &DecodingOptions,
    prompt: &[i64],
    batch: usize,
    progress: &mut dyn FnMut(f32) -> ControlFlow<()>,
) -> Result<Transcript, AsrError> {
    let total = audio.len();
    let duration = total as f64 / SAMPLE_RATE as f64;
    let mut progress = |done: usize| {
        if progress((done as f64 / total.max(1) as f64) as f32).is_break() {
            Err(AsrError::Cancelled)
        } else {
            Ok(())
        }
    };
    let mut samples = Vec::with_capacity(CHUNK_SAMPLES);
    let mut language = initial_language(model, options);
    let hotwords = prompt_tokens(model, decoding.hotwords.as_deref());
    let mut segments: Vec<Segment> = Vec::new();
    // Windows still to decode: the plan, then the rest of any window whose text stopped short
    // of its audio (as the sequential mode seeks on from the last word).
    let mut queue: VecDeque<(usize, usize)> = windows
        .iter()
        .map(|&(start, end)| (start.min(total), end.min(total).min(start + CHUNK_SAMPLES)))
        .filter(|(start, end)| end > start)
        .collect();
    while !queue.is_empty() {
        let group: Vec<(usize, usize)> =
            (0..batch.max(1)).map_while(|_| queue.pop_front()).collect();
        let mut features = Vec::with_capacity(group.len());
        for &(start, end) in &group {
            audio.read(start, end, &mut samples)?;
            features.push(model.mel.compute(&samples));
        }
        let refs: Vec<&[f32]> = features.iter().map(Vec::as_slice).collect();
        let encoded = model.encode_windows(&refs)?;
        if language.is_none() {
            // The first window decides, as in the sequential mode.
            let first = model.encode(&features[0])?;
            language = model.detect_language(&first)?.first().cloned();
        }
        let (code, _) = language.clone().unwrap_or(("en".to_owned(), 1.0));
        let language_token = language_token_of(model, &code)?;
        let decode_options = DecodeOptions {
            language_token,
            translate: options.translate,
            timestamps: true,
            prompt: prompt.to_vec(),
            hotwords: hotwords.clone(),
            ..DecodeOptions::default()
        };
        let batched = model.decode_windows(&encoded, &decode_options)?;
        drop(encoded);
        for ((decoded, &(start, end)), window_features) in
            batched.into_iter().zip(&group).zip(&features)
        {
            let (accepted, _) = judge(model, &decoded, decoding);
            let decoded = if accepted {
                decoded
            } else {
                let alone = model.encode(window_features)?;
                let seed = decoding.seed ^ (start as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                decode_with_fallback(model, &alone, &decode_options, decoding, seed)?
            };
            let silent = decoding
                .no_speech_threshold
                .is_some_and(|t| decoded.no_speech_prob > t)
                && !decoding
                    .logprob_threshold
                    .is_some_and(|t| decoded.avg_logprob > t);
            if silent {
                continue;
            }
            let window_secs = (end - start) as f64 / SAMPLE_RATE as f64;
            let offset_secs = start as f64 / SAMPLE_RATE as f64;
            let (window_segments, consumed_secs) =
                split_segments(model, &decoded, window_secs, &code);
            // (Not when translating: English words aligned to speech in another language look
            // anomalous by nature.)
            if !options.translate
                && window_segments.iter().any(|s| !s.words.is_empty())
                && window_segments
                    .iter()
                    .all(|s| s.words.is_empty() || is_segment_anomaly(&s.words))
            {
                continue;
            }
            // Text that stops before the window's audio does (its last segment left open):
            // the rest, from the last word on, is decoded again in a later batch.
            let mut consumed = consumed_secs;
            if consumed < window_secs
                && let Some(last_word_end) = window_segments
                    .iter()
                    .rev()
                    .find_map(|s| s.words.last().map(|w| w.end))
                && last_word_end > 0.0
            {
                consumed = last_word_end.min(window_secs);
            }
            if consumed >= 1.0 && window_secs - consumed > 1.0 {
                let resume = start + (consumed * SAMPLE_RATE as f64) as usize;
                if resume < end {
                    queue.push_back((resume, end));
                }
            }
            segments.extend(place(
                window_segments,
                consumed.max(1.0).min(window_secs),
                offset_secs,
                duration,
            ));
        }
        let left: usize = queue.iter().map(|(s, e)| e - s).sum();
        progress(total.saturating_sub(left))?;
    }
    segments.sort_by(|a, b| a.start.total_cmp(&b.start));
    let (language, language_probability) = language.unwrap_or(("en".to_owned(), 0.0));
    Ok(Transcript {
        language,
        language_probability,
        duration,
        segments,
    })
}

/// A window's segments moved to the recording's time; text placed in the zero padding past
/// the window's audio, and empty text, are dropped.
fn place(
    window_segments: Vec<Segment>,
    window_secs: f64,
    offset_secs: f64,
    duration: f64,
) -> impl Iterator<Item = Segment> {
    window_segments
        .into_iter()
        .filter(move |s| s.start < window_secs && !s.text.trim().is_empty())
        .map(move |mut segment| {
            segment.start = (segment.start + offset_secs).min(duration);
            segment.end = (segment.end.min(window_secs) + offset_secs).min(duration);
            for word in &mut segment.words {
                word.start = (word.start + offset_secs).min(duration);
                word.end = (word.end + offset_secs).min(duration);
            }
            segment
        })
}

#[cfg(test)]
mod tests {
    use super::plan_windows;

    #[test]
    fn windows_gather_regions_and_cut_long_ones() {
        // Regions that fit together share a window; one that does not fit starts the next.
        assert_eq!(plan_windows(&[10, 10, 5], 30), vec![(0, 25)]);
        assert_eq!(plan_windows(&[20, 20, 5], 30), vec![(0, 20), (20, 45)]);
        // A region longer than a window is cut into full windows.
        assert_eq!(
            plan_windows(&[70, 5], 30),
            vec![(0, 30), (30, 60), (60, 75)]
        );
        assert_eq!(plan_windows(&[], 30), Vec::<(usize, usize)>::new());
        assert_eq!(plan_windows(&[0, 0], 30), Vec::<(usize, usize)>::new());
        // Every window is at most `max` and they tile the speech without gaps.
        let regions = [7, 31, 2, 29, 30, 1, 60, 3];
        let windows = plan_windows(&regions, 30);
        let total: usize = regions.iter().sum();
        assert_eq!(windows.first().unwrap().0, 0);
        assert_eq!(windows.last().unwrap().1, total);
        for pair in windows.windows(2) {
            assert_eq!(pair[0].1, pair[1].0);
        }
        assert!(windows.iter().all(|(s, e)| e > s && e - s <= 30));
    }
}
