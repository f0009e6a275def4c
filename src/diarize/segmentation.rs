//! pyannote segmentation-3.0: 10 s windows in, per-frame powerset classes out; decoding the
//! powerset into per-speaker activity, and hysteresis binarisation with minimum durations.

use std::path::Path;

use ort::session::Session;
use ort::value::Tensor;

use super::DiarizeError;
use crate::models::runtime::Runtime;

pub const SAMPLE_RATE: usize = 16_000;
pub const WINDOW_SAMPLES: usize = 160_000;
/// Samples between two output frames (the conv chain's total stride).
pub const FRAME_STEP_SAMPLES: usize = 270;
/// Centre of frame 0 relative to the window start, in samples (half the receptive field).
pub const FRAME0_CENTRE_SAMPLES: usize = 495;
/// Local speakers per window.
pub const LOCAL_SPEAKERS: usize = 3;
pub const NUM_CLASSES: usize = 7;
/// Speakers active in each powerset class.
pub const POWERSET: [&[usize]; NUM_CLASSES] = [&[], &[0], &[1], &[2], &[0, 1], &[0, 2], &[1, 2]];

/// Centre of a global frame (frames of every window sit on one grid, windows start on it).
pub fn frame_centre_secs(frame: usize) -> f64 {
    (frame * FRAME_STEP_SAMPLES + FRAME0_CENTRE_SAMPLES) as f64 / SAMPLE_RATE as f64
}

pub const FRAME_STEP_SECS: f64 = FRAME_STEP_SAMPLES as f64 / SAMPLE_RATE as f64;

/// Window start samples covering `total` samples with the given step: starts sit on the frame
/// grid, and a last window ends at (or just past) the end so the tail is seen in full.
pub fn window_starts(total: usize, step_samples: usize) -> Vec<usize> {
    let step = (step_samples / FRAME_STEP_SAMPLES).max(1) * FRAME_STEP_SAMPLES;
    let mut starts = vec![0];
    if total <= WINDOW_SAMPLES {
        return starts;
    }
    let last = (total - WINDOW_SAMPLES).div_ceil(FRAME_STEP_SAMPLES) * FRAME_STEP_SAMPLES;
    let mut start = step;
    while start < last {
        starts.push(start);
        start += step;
    }
    starts.push(last);
    starts
}

/// Per frame, the probability that each local speaker talks: the sum of the probabilities of
/// the classes that contain it. `log_probs` is frames × 7 log-softmax output.
pub fn powerset_marginals(log_probs: &[f32]) -> Vec<[f32; LOCAL_SPEAKERS]> {
    log_probs
        .chunks_exact(NUM_CLASSES)
        .map(|row| {
            let mut out = [0f32; LOCAL_SPEAKERS];
            for (class, speakers) in POWERSET.iter().enumerate() {
                let p = row[class].exp();
                for &s in *speakers {
                    out[s] += p;
                }
            }
            out
        })
        .collect()
}

/// Per frame, the most likely class (index into [`POWERSET`]).
pub fn powerset_argmax(log_probs: &[f32]) -> Vec<u8> {
    log_probs
        .chunks_exact(NUM_CLASSES)
        .map(|row| {
            row.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, _)| i as u8)
                .unwrap_or(0)
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Binarisation {
    /// A speaker turn starts when activity rises to `onset`...
    pub onset: f32,
    /// ...and ends when it falls below `offset`.
    pub offset: f32,
    /// Turns shorter than this are dropped (seconds).
    pub min_duration_on: f64,
    /// Gaps shorter than this inside one speaker's speech are filled (seconds).
    pub min_duration_off: f64,
}

impl Default for Binarisation {
    fn default() -> Self {
        Self {
            onset: 0.5,
            offset: 0.4,
            min_duration_on: 0.2,
            // Measured on the synthetic corpus: 0.1 s left pauses between a speaker's sentences
            // as missed speech (conv2a DER 7.3 %); 0.5 s fills them (3.7 %).
            min_duration_off: 0.5,
        }
    }
}

/// Streaming hysteresis over one speaker's frame activity, emitting (start, end) in seconds.
#[derive(Debug, Clone)]
pub struct Binariser {
    params: Binarisation,
    active_since: Option<usize>,
    /// A finished turn held back until we know the next one does not start within min_off.
    pending: Option<(f64, f64)>,
    pub turns: Vec<(f64, f64)>,
}

impl Binariser {
    pub fn new(params: Binarisation) -> Self {
        Self {
            params,
            active_since: None,
            pending: None,
            turns: Vec::new(),
        }
    }

    fn frame_start(frame: usize) -> f64 {
        (frame_centre_secs(frame) - FRAME_STEP_SECS / 2.0).max(0.0)
    }

    fn close(&mut self, start: f64, end: f64) {
        match self.pending.as_mut() {
            Some(pending) if start - pending.1 < self.params.min_duration_off => pending.1 = end,
            _ => {
                if let Some(done) = self.pending.replace((start, end)) {
                    self.emit(done);
                }
            }
        }
    }

    fn emit(&mut self, turn: (f64, f64)) {
        if turn.1 - turn.0 >= self.params.min_duration_on {
            self.turns.push(turn);
        }
    }

    pub fn push(&mut self, frame: usize, activity: f32) {
        match self.active_since {
            None if activity >= self.params.onset => self.active_since = Some(frame),
            Some(start) if activity < self.params.offset => {
                self.active_since = None;
                self.close(Self::frame_start(start), Self::frame_start(frame));
            }
            _ => {}
        }
    }

    /// Ends an open turn at `end_frame` and flushes; returns the turns.
    pub fn finish(mut self, end_frame: usize) -> Vec<(f64, f64)> {
        if let Some(start) = self.active_since.take() {
            self.close(Self::frame_start(start), Self::frame_start(end_frame));
        }
        if let Some(done) = self.pending.take() {
            self.emit(done);
        }
        self.turns
    }
}

/// The segmentation model; windows are scored in small batches.
pub struct Segmenter {
    session: Session,
}

impl std::fmt::Debug for Segmenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segmenter").finish_non_exhaustive()
    }
}

impl Segmenter {
    pub fn load(runtime: &Runtime, dir: &Path) -> Result<Self, DiarizeError> {
        let session =
            runtime
                .session(&dir.join("model.onnx"))
                .map_err(|e| DiarizeError::Model {
                    model: "pyannote-segmentation-3.0".to_owned(),
                    reason: e.to_string(),
                })?;
        Ok(Self { session })
    }

    /// Log-probabilities, `frames × 7` per window, for windows of exactly [`WINDOW_SAMPLES`].
    pub fn run(&mut self, windows: &[f32]) -> Result<Vec<Vec<f32>>, DiarizeError> {
        let batch = windows.len() / WINDOW_SAMPLES;
        let fail = |e: ort::Error| DiarizeError::Inference(format!("segmentation: {e}"));
        let input = Tensor::from_array((
            vec![batch as i64, 1, WINDOW_SAMPLES as i64],
            windows[..batch * WINDOW_SAMPLES].to_vec(),
        ))
        .map_err(fail)?;
        let outputs = self
            .session
            .run(ort::inputs!["waveform" => input])
            .map_err(fail)?;
        let (shape, data) = outputs[0].try_extract_tensor::<f32>().map_err(fail)?;
        if shape.len() != 3 || shape[0] as usize != batch || shape[2] as usize != NUM_CLASSES {
            return Err(DiarizeError::Inference(format!(
                "segmentation: unexpected output shape {shape:?}"
            )));
        }
        let per_window = shape[1] as usize * NUM_CLASSES;
        Ok(data.chunks_exact(per_window).map(<[f32]>::to_vec).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marginals_sum_the_classes_holding_each_speaker() {
        let probs = [0.1f32, 0.2, 0.05, 0.05, 0.4, 0.1, 0.1];
        let log: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
        let m = powerset_marginals(&log);
        assert_eq!(m.len(), 1);
        assert!((m[0][0] - (0.2 + 0.4 + 0.1)).abs() < 1e-5);
        assert!((m[0][1] - (0.05 + 0.4 + 0.1)).abs() < 1e-5);
        assert!((m[0][2] - (0.05 + 0.1 + 0.1)).abs() < 1e-5);
        assert_eq!(powerset_argmax(&log), vec![4]);
    }

    #[test]
    fn windows_cover_the_file_on_the_frame_grid() {
        assert_eq!(window_starts(1000, 40_000), vec![0]);
        let total = 37 * 16_000 + 123;
        let starts = window_starts(total, 40_000);
        assert!(starts.iter().all(|s| s % FRAME_STEP_SAMPLES == 0));
        assert!(starts.windows(2).all(|w| w[1] > w[0]));
        let last = *starts.last().unwrap();
        assert!(
            last + WINDOW_SAMPLES >= total && last + WINDOW_SAMPLES < total + FRAME_STEP_SAMPLES
        );
        assert!(starts.windows(2).all(|w| w[1] - w[0] <= 40_000));
    }

    #[test]
    fn hysteresis_and_minimum_durations() {
        let params = Binarisation {
            onset: 0.6,
            offset: 0.3,
            min_duration_on: 0.1,
            min_duration_off: 0.1,
        };
        let mut b = Binariser::new(params);
        // 0..10 off, 10..40 on (dips to 0.4 in the middle stay on), 40..42 off (34 ms gap, filled),
        // 42..60 on, off until 100, blip 100..102 (too short), off to 120.
        let mut activity = vec![0.0f32; 120];
        activity[10..40].iter_mut().for_each(|a| *a = 0.9);
        activity[20..25].iter_mut().for_each(|a| *a = 0.4);
        activity[42..60].iter_mut().for_each(|a| *a = 0.9);
        activity[100..102].iter_mut().for_each(|a| *a = 0.9);
        for (frame, a) in activity.iter().enumerate() {
            b.push(frame, *a);
        }
        let turns = b.finish(120);
        assert_eq!(turns.len(), 1, "{turns:?}");
        let (start, end) = turns[0];
        assert!((start - Binariser::frame_start(10)).abs() < 1e-9);
        assert!((end - Binariser::frame_start(60)).abs() < 1e-9);
    }
}
