//! CAM++ speaker embeddings from our Kaldi fbank, for a local speaker's frames of a window.

use std::path::Path;

use ort::session::Session;
use ort::value::Tensor;

use super::DiarizeError;
use super::fbank::{self, FRAME_LENGTH, FRAME_SHIFT, NUM_BINS};
use super::segmentation::{FRAME_STEP_SAMPLES, FRAME0_CENTRE_SAMPLES};
use crate::models::runtime::Runtime;

pub const EMBEDDING_DIM: usize = 192;

/// Which CAM++ output to use: `embedding` ends in a ReLU, `embedding_raw` is the value before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingOutput {
    Relu,
    Raw,
}

impl EmbeddingOutput {
    fn name(self) -> &'static str {
        match self {
            EmbeddingOutput::Relu => "embedding",
            EmbeddingOutput::Raw => "embedding_raw",
        }
    }
}

pub struct Embedder {
    session: Session,
    output: EmbeddingOutput,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("output", &self.output)
            .finish_non_exhaustive()
    }
}

impl Embedder {
    pub fn load(
        runtime: &Runtime,
        dir: &Path,
        output: EmbeddingOutput,
    ) -> Result<Self, DiarizeError> {
        let session =
            runtime
                .session(&dir.join("model.onnx"))
                .map_err(|e| DiarizeError::Model {
                    model: "campplus-zh-en".to_owned(),
                    reason: e.to_string(),
                })?;
        Ok(Self { session, output })
    }

    /// L2-normalised embedding of fbank rows (already mean-normalised), `rows × 80`.
    pub fn embed_features(&mut self, features: &[f32]) -> Result<Vec<f32>, DiarizeError> {
        let rows = features.len() / NUM_BINS;
        let fail = |e: ort::Error| DiarizeError::Inference(format!("speaker embedding: {e}"));
        let input = Tensor::from_array((
            vec![1i64, rows as i64, NUM_BINS as i64],
            features[..rows * NUM_BINS].to_vec(),
        ))
        .map_err(fail)?;
        let outputs = self
            .session
            .run(ort::inputs!["fbank" => input])
            .map_err(fail)?;
        let (_, data) = outputs[self.output.name()]
            .try_extract_tensor::<f32>()
            .map_err(fail)?;
        if data.len() != EMBEDDING_DIM {
            return Err(DiarizeError::Inference(format!(
                "speaker embedding: {} values, expected {EMBEDDING_DIM}",
                data.len()
            )));
        }
        let mut embedding = data.to_vec();
        normalise(&mut embedding);
        Ok(embedding)
    }

    /// Embedding of whole audio (16 kHz), for tests and profile enrolment from clean speech.
    pub fn embed_samples(&mut self, samples: &[f32]) -> Result<Vec<f32>, DiarizeError> {
        let mut padded;
        let samples = if samples.len() < FRAME_LENGTH {
            padded = samples.to_vec();
            padded.resize(FRAME_LENGTH, 0.0);
            &padded[..]
        } else {
            samples
        };
        let mut features = fbank::Fbank::new().compute(samples);
        fbank::mean_normalise(&mut features);
        self.embed_features(&features)
    }
}

/// Scales to unit length (left as is when all zeros).
pub fn normalise(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}

/// Segmentation frame whose centre is nearest to the centre of fbank frame `row` (same window).
pub fn segmentation_frame_of_fbank_row(row: usize, segmentation_frames: usize) -> usize {
    let centre = row * FRAME_SHIFT + FRAME_LENGTH / 2;
    let frame = (centre as f64 - FRAME0_CENTRE_SAMPLES as f64) / FRAME_STEP_SAMPLES as f64;
    (frame.round().max(0.0) as usize).min(segmentation_frames.saturating_sub(1))
}

/// The fbank rows of a window whose segmentation frame is marked in `mask`, mean-normalised.
pub fn select_rows(window_features: &[f32], mask: &[bool]) -> Vec<f32> {
    let mut out = Vec::new();
    for (row, values) in window_features.chunks_exact(NUM_BINS).enumerate() {
        if mask[segmentation_frame_of_fbank_row(row, mask.len())] {
            out.extend_from_slice(values);
        }
    }
    fbank::mean_normalise(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fbank_rows_map_onto_segmentation_frames_by_time() {
        // 10 s window: 998 fbank rows, 589 segmentation frames; both span the same time.
        assert_eq!(segmentation_frame_of_fbank_row(0, 589), 0);
        let last = segmentation_frame_of_fbank_row(997, 589);
        assert!((586..=588).contains(&last), "{last}");
        // Row at 5 s maps to the frame at 5 s.
        let row = (5 * 16_000 - FRAME_LENGTH / 2) / FRAME_SHIFT;
        let frame = segmentation_frame_of_fbank_row(row, 589);
        let frame_time = (frame * FRAME_STEP_SAMPLES + FRAME0_CENTRE_SAMPLES) as f64 / 16_000.0;
        assert!((frame_time - 5.0).abs() < 0.01, "{frame_time}");
    }

    #[test]
    fn selected_rows_are_the_masked_ones_and_mean_normalised() {
        let rows = 998;
        let features: Vec<f32> = (0..rows * NUM_BINS)
            .map(|i| (i / NUM_BINS) as f32)
            .collect();
        let mut mask = vec![false; 589];
        mask[100..200].iter_mut().for_each(|m| *m = true);
        let selected = select_rows(&features, &mask);
        let n = selected.len() / NUM_BINS;
        assert!((165..=172).contains(&n), "{n}");
        let mean: f32 = selected.chunks_exact(NUM_BINS).map(|r| r[0]).sum::<f32>() / n as f32;
        assert!(mean.abs() < 1e-3);
    }

    #[test]
    fn cosine_of_scaled_vectors_is_one() {
        let a = [1.0f32, 2.0, 3.0];
        let b = [2.0f32, 4.0, 6.0];
        assert!((cosine(&a, &b) - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&a, &[0.0; 3]), 0.0);
        let mut c = b;
        normalise(&mut c);
        assert!((c.iter().map(|x| x * x).sum::<f32>() - 1.0).abs() < 1e-6);
    }
}
