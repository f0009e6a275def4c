//! Silero VAD: speech probability per 32 ms window, hysteresis into speech regions, and regions
//! merged into chunks of at most 30 s so long files are transcribed in independent batches.

use std::path::Path;

use ort::session::Session;
use ort::value::Tensor;

use super::whisper::AsrError;
use crate::models::manifest::Manifest;
use crate::models::runtime::Runtime;

pub const WINDOW: usize = 512;
const CONTEXT: usize = 64;
const STATE_LEN: usize = 2 * 128;

pub struct SileroVad {
    session: Session,
    state: Vec<f32>,
    context: Vec<f32>,
    pending: Vec<f32>,
}

impl std::fmt::Debug for SileroVad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SileroVad").finish_non_exhaustive()
    }
}

impl SileroVad {
    pub fn load(runtime: &Runtime, dir: &Path, _manifest: &Manifest) -> Result<Self, AsrError> {
        let session = runtime
            .session_with_threads(&dir.join("model.onnx"), 1)
            .map_err(|e| AsrError::Model {
                model: "silero-vad".to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            session,
            state: vec![0.0; STATE_LEN],
            context: vec![0.0; CONTEXT],
            pending: Vec::with_capacity(WINDOW),
        })
    }

    /// Forgets the recurrent state, for a new file.
    pub fn reset(&mut self) {
        self.state.iter_mut().for_each(|v| *v = 0.0);
        self.context.iter_mut().for_each(|v| *v = 0.0);
        self.pending.clear();
    }

    /// Feeds 16 kHz samples; returns the probabilities of every window completed.
    pub fn process(&mut self, samples: &[f32]) -> Result<Vec<f32>, AsrError> {
        let mut probabilities = Vec::with_capacity((self.pending.len() + samples.len()) / WINDOW);
        let mut rest = samples;
        while !rest.is_empty() {
            let take = (WINDOW - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == WINDOW {
                let window = std::mem::take(&mut self.pending);
                probabilities.push(self.run_window(&window)?);
                self.pending = window;
                self.pending.clear();
            }
        }
        Ok(probabilities)
    }

    /// Pads and scores a last partial window, if any.
    pub fn finish(&mut self) -> Result<Option<f32>, AsrError> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        let mut window = std::mem::take(&mut self.pending);
        window.resize(WINDOW, 0.0);
        self.run_window(&window).map(Some)
    }

    fn run_window(&mut self, window: &[f32]) -> Result<f32, AsrError> {
        let mut input = Vec::with_capacity(CONTEXT + WINDOW);
        input.extend_from_slice(&self.context);
        input.extend_from_slice(window);
        let fail = |e: ort::Error| AsrError::Inference(format!("silero vad: {e}"));
        let outputs = self
            .session
            .run(ort::inputs![
                "input" => Tensor::from_array((vec![1i64, (CONTEXT + WINDOW) as i64], input)).map_err(fail)?,
                "state" => Tensor::from_array((vec![2i64, 1, 128], self.state.clone())).map_err(fail)?,
                "sr" => Tensor::from_array(((), vec![16_000i64])).map_err(fail)?,
            ])
            .map_err(fail)?;
        let (_, probability) = outputs["output"]
            .try_extract_tensor::<f32>()
            .map_err(fail)?;
        let (_, state) = outputs["stateN"]
            .try_extract_tensor::<f32>()
            .map_err(fail)?;
        if state.len() == STATE_LEN {
            self.state.copy_from_slice(state);
        }
        self.context.copy_from_slice(&window[WINDOW - CONTEXT..]);
        Ok(probability.first().copied().unwrap_or(0.0))
    }
}

/// faster-whisper's defaults for Whisper: generous padding, long silences only split.
#[derive(Debug, Clone, Copy)]
pub struct VadParams {
    pub threshold: f32,
    pub min_speech_ms: usize,
    pub min_silence_ms: usize,
    pub speech_pad_ms: usize,
}

impl Default for VadParams {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            min_speech_ms: 250,
            min_silence_ms: 2000,
            speech_pad_ms: 400,
        }
    }
}

/// A stretch of speech, in samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub start: usize,
    pub end: usize,
}

/// Turns window probabilities into speech regions with hysteresis (enter at `threshold`, leave
/// below `threshold − 0.15`), dropping short blips and bridging short pauses, then padding.
pub fn speech_regions(
    probabilities: &[f32],
    total_samples: usize,
    params: VadParams,
) -> Vec<Region> {
    let samples_per_ms = 16;
    let min_speech = params.min_speech_ms * samples_per_ms;
    let min_silence = params.min_silence_ms * samples_per_ms;
    let pad = params.speech_pad_ms * samples_per_ms;
    let exit_threshold = (params.threshold - 0.15).max(0.01);
    let mut regions: Vec<Region> = Vec::new();
    let mut start: Option<usize> = None;
    let mut silence_since: Option<usize> = None;
    for (index, &p) in probabilities.iter().enumerate() {
        let position = index * WINDOW;
        if p >= params.threshold {
            silence_since = None;
            if start.is_none() {
                start = Some(position);
            }
        } else if p < exit_threshold
            && let Some(s) = start
        {
            let since = *silence_since.get_or_insert(position);
            if position + WINDOW - since >= min_silence {
                if since - s >= min_speech {
                    regions.push(Region {
                        start: s,
                        end: since,
                    });
                }
                start = None;
                silence_since = None;
            }
        }
    }
    if let Some(s) = start {
        let end = silence_since.unwrap_or(total_samples).min(total_samples);
        if end.saturating_sub(s) >= min_speech {
            regions.push(Region { start: s, end });
        }
    }
    // Pad, without overlapping neighbours.
    let mut padded: Vec<Region> = Vec::with_capacity(regions.len());
    for region in regions {
        let start = region.start.saturating_sub(pad);
        let end = (region.end + pad).min(total_samples);
        match padded.last_mut() {
            Some(previous) if start <= previous.end => previous.end = previous.end.max(end),
            _ => padded.push(Region { start, end }),
        }
    }
    padded
}

/// Cuts regions longer than `max_samples` at their quietest window (lowest speech probability)
/// in the last `search_samples` before the limit, so a chunk ends in a pause rather than in the
/// middle of a word, and Whisper need not decode a cut-off remainder again.
pub fn split_long_regions(
    regions: &[Region],
    probabilities: &[f32],
    max_samples: usize,
    search_samples: usize,
) -> Vec<Region> {
    let mut out = Vec::with_capacity(regions.len());
    for region in regions {
        let mut start = region.start;
        while region.end - start > max_samples {
            let limit = start + max_samples;
            let from = limit.saturating_sub(search_samples).max(start + WINDOW);
            let first_window = from.div_ceil(WINDOW);
            let last_window = limit / WINDOW;
            let cut = (first_window..last_window)
                .filter_map(|w| probabilities.get(w).map(|p| (w, *p)))
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(w, _)| w * WINDOW + WINDOW / 2)
                .filter(|c| *c > start && *c <= limit)
                .unwrap_or(limit);
            out.push(Region { start, end: cut });
            start = cut;
        }
        out.push(Region {
            start,
            end: region.end,
        });
    }
    out
}

/// Speech regions grouped so that each group's total length is at most `max_samples`; a region
/// longer than that is cut into pieces.
pub fn chunk_regions(regions: &[Region], max_samples: usize) -> Vec<Vec<Region>> {
    let mut chunks: Vec<Vec<Region>> = Vec::new();
    let mut current: Vec<Region> = Vec::new();
    let mut current_len = 0;
    for region in regions {
        let mut start = region.start;
        while start < region.end {
            let room = max_samples - current_len;
            let end = region.end.min(start + room);
            current.push(Region { start, end });
            current_len += end - start;
            start = end;
            if current_len >= max_samples {
                chunks.push(std::mem::take(&mut current));
                current_len = 0;
            }
        }
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_min_durations_and_padding() {
        // 1 s silence, 2 s speech, 0.5 s pause (bridged), 1 s speech, 3 s silence, 0.1 s blip.
        let windows = |secs: f32| (secs * 16000.0 / WINDOW as f32).round() as usize;
        let mut p = Vec::new();
        p.extend(std::iter::repeat_n(0.05, windows(1.0)));
        p.extend(std::iter::repeat_n(0.9, windows(2.0)));
        p.extend(std::iter::repeat_n(0.1, windows(0.5)));
        p.extend(std::iter::repeat_n(0.9, windows(1.0)));
        p.extend(std::iter::repeat_n(0.05, windows(3.0)));
        p.extend(std::iter::repeat_n(0.9, windows(0.1)));
        p.extend(std::iter::repeat_n(0.05, windows(3.0)));
        let total = p.len() * WINDOW;
        let regions = speech_regions(&p, total, VadParams::default());
        assert_eq!(regions.len(), 1, "{regions:?}");
        let secs = |s: usize| s as f64 / 16000.0;
        assert!((secs(regions[0].start) - 0.6).abs() < 0.05, "{regions:?}");
        assert!((secs(regions[0].end) - 4.9).abs() < 0.05, "{regions:?}");
    }

    #[test]
    fn long_regions_are_cut_in_their_quietest_window() {
        // 70 s of speech with dips at 25 s and 52 s.
        let windows = 70 * 16_000 / WINDOW;
        let mut p = vec![0.9f32; windows];
        let dip = |secs: usize| secs * 16_000 / WINDOW;
        p[dip(25)] = 0.2;
        p[dip(52)] = 0.1;
        let regions = [Region {
            start: 0,
            end: windows * WINDOW,
        }];
        let pieces = split_long_regions(&regions, &p, 30 * 16_000, 8 * 16_000);
        assert_eq!(pieces.len(), 3, "{pieces:?}");
        let secs = |s: usize| s as f64 / 16_000.0;
        assert!((secs(pieces[0].end) - 25.0).abs() < 0.1, "{pieces:?}");
        assert!((secs(pieces[1].end) - 52.0).abs() < 0.1, "{pieces:?}");
        assert_eq!(pieces[2].end, windows * WINDOW);
        for piece in &pieces {
            assert!(piece.end - piece.start <= 30 * 16_000);
        }
        // Contiguous, nothing lost.
        assert_eq!(pieces[0].start, 0);
        assert_eq!(pieces[1].start, pieces[0].end);
        assert_eq!(pieces[2].start, pieces[1].end);
    }

    #[test]
    fn chunks_never_exceed_the_limit() {
        let regions = vec![
            Region { start: 0, end: 100 },
            Region {
                start: 200,
                end: 450,
            },
            Region {
                start: 500,
                end: 520,
            },
        ];
        let chunks = chunk_regions(&regions, 128);
        for chunk in &chunks {
            let len: usize = chunk.iter().map(|r| r.end - r.start).sum();
            assert!(len <= 128);
        }
        let total: usize = chunks.iter().flatten().map(|r| r.end - r.start).sum();
        assert_eq!(total, 100 + 250 + 20);
    }
}
