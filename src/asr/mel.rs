//! Whisper's log-mel features: periodic Hann window, n_fft 400, hop 160, power spectrum, the
//! model's mel filters, log10 clamped at 1e-10, floored at max − 8, scaled (x + 4) / 4, laid
//! out [n_mels, 3000] with faster-whisper's padding convention (content frames, then zeros).

use std::sync::Arc;

use rustfft::num_complex::Complex32;
use rustfft::{Fft, FftPlanner};

pub const SAMPLE_RATE: usize = 16_000;
pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
pub const N_FRAMES: usize = 3000;
pub const CHUNK_SAMPLES: usize = SAMPLE_RATE * 30;
const N_BINS: usize = N_FFT / 2 + 1;

#[derive(Debug, thiserror::Error)]
pub enum MelError {
    #[error("mel filters have {got} values, expected n_mels × {N_BINS} = {expected}")]
    FilterShape { got: usize, expected: usize },
}

/// Precomputed window, filters and FFT plan; reusable across chunks and threads.
#[derive(Clone)]
pub struct LogMel {
    n_mels: usize,
    /// [n_mels, 201], row-major.
    filters: Arc<Vec<f32>>,
    window: Arc<Vec<f32>>,
    fft: Arc<dyn Fft<f32>>,
}

impl std::fmt::Debug for LogMel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogMel")
            .field("n_mels", &self.n_mels)
            .finish()
    }
}

impl LogMel {
    pub fn new(n_mels: usize, filters: Vec<f32>) -> Result<Self, MelError> {
        if filters.len() != n_mels * N_BINS {
            return Err(MelError::FilterShape {
                got: filters.len(),
                expected: n_mels * N_BINS,
            });
        }
        let window = (0..N_FFT)
            .map(|i| {
                let phase = 2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64;
                (0.5 - 0.5 * phase.cos()) as f32
            })
            .collect();
        let fft = FftPlanner::<f32>::new().plan_fft_forward(N_FFT);
        Ok(Self {
            n_mels,
            filters: Arc::new(filters),
            window: Arc::new(window),
            fft,
        })
    }

    /// Reads `mel_filters.bin`: little-endian f32, [n_mels, 201].
    pub fn from_bytes(n_mels: usize, bytes: &[u8]) -> Result<Self, MelError> {
        let filters = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Self::new(n_mels, filters)
    }

    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Features of up to 30 s of 16 kHz audio: [n_mels × 3000], row-major. Longer input is cut.
    pub fn compute(&self, audio: &[f32]) -> Vec<f32> {
        let audio = &audio[..audio.len().min(CHUNK_SAMPLES)];
        // faster-whisper appends one hop of zeros, then pads by reflection like torch.stft.
        let mut padded = Vec::with_capacity(audio.len() + HOP + N_FFT);
        let mut signal = Vec::with_capacity(audio.len() + HOP);
        signal.extend_from_slice(audio);
        signal.extend(std::iter::repeat_n(0.0f32, HOP));
        let half = N_FFT / 2;
        for i in (1..=half).rev() {
            padded.push(signal.get(i).copied().unwrap_or(0.0));
        }
        padded.extend_from_slice(&signal);
        let last = signal.len().saturating_sub(1);
        for i in 1..=half {
            padded.push(signal.get(last.saturating_sub(i)).copied().unwrap_or(0.0));
        }
        let n_stft = 1 + (padded.len() - N_FFT) / HOP;
        // The last STFT frame is dropped (as Whisper does), then faster-whisper keeps one less.
        let content = n_stft.saturating_sub(2).min(N_FRAMES);

        let mut logmel = vec![0.0f32; self.n_mels * content];
        let mut buffer = vec![Complex32::new(0.0, 0.0); N_FFT];
        let mut scratch = vec![Complex32::new(0.0, 0.0); self.fft.get_inplace_scratch_len()];
        let mut power = vec![0.0f32; N_BINS];
        let mut max_value = f32::NEG_INFINITY;
        for frame in 0..content {
            let start = frame * HOP;
            for (i, slot) in buffer.iter_mut().enumerate() {
                *slot = Complex32::new(padded[start + i] * self.window[i], 0.0);
            }
            self.fft.process_with_scratch(&mut buffer, &mut scratch);
            for (bin, p) in power.iter_mut().enumerate() {
                *p = buffer[bin].norm_sqr();
            }
            for mel in 0..self.n_mels {
                let row = &self.filters[mel * N_BINS..(mel + 1) * N_BINS];
                let energy: f32 = row.iter().zip(&power).map(|(w, p)| w * p).sum();
                let value = energy.max(1e-10).log10();
                max_value = max_value.max(value);
                logmel[mel * content + frame] = value;
            }
        }
        let floor = max_value - 8.0;
        let mut out = vec![0.0f32; self.n_mels * N_FRAMES];
        for mel in 0..self.n_mels {
            for frame in 0..content {
                let value = logmel[mel * content + frame].max(floor);
                out[mel * N_FRAMES + frame] = (value + 4.0) / 4.0;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn triangle_filters(n_mels: usize) -> Vec<f32> {
        let mut filters = vec![0.0f32; n_mels * N_BINS];
        for mel in 0..n_mels {
            let center = 1 + mel * (N_BINS - 2) / n_mels;
            filters[mel * N_BINS + center] = 1.0;
        }
        filters
    }

    #[test]
    fn shape_padding_and_scaling() {
        let mel = LogMel::new(80, triangle_filters(80)).unwrap();
        let tone: Vec<f32> = (0..SAMPLE_RATE)
            .map(|i| (i as f32 * 1000.0 * std::f32::consts::TAU / SAMPLE_RATE as f32).sin())
            .collect();
        let features = mel.compute(&tone);
        assert_eq!(features.len(), 80 * N_FRAMES);
        // One second is 100 frames; everything after is zero padding.
        assert!(features[N_FRAMES - 1] == 0.0 && features[150] == 0.0);
        let max = features.iter().cloned().fold(f32::MIN, f32::max);
        let min_content = (0..80)
            .flat_map(|m| (0..99).map(move |f| m * N_FRAMES + f))
            .map(|i| features[i])
            .fold(f32::MAX, f32::min);
        // The floor is exactly 8 (log10 units) below the max, i.e. 2.0 after scaling.
        assert!(
            (max - min_content - 2.0).abs() < 1e-4,
            "{max} {min_content}"
        );
        assert!(LogMel::new(80, vec![0.0; 10]).is_err());
    }
}
