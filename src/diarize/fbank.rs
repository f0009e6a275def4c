//! Kaldi-compatible log mel filterbank (80 bins, 25 ms frames every 10 ms, Povey window,
//! no dither, edges snipped), the input CAM++ was trained on.

use std::sync::Arc;

use rustfft::num_complex::Complex32;
use rustfft::{Fft, FftPlanner};

pub const NUM_BINS: usize = 80;
pub const FRAME_LENGTH: usize = 400;
pub const FRAME_SHIFT: usize = 160;
const PADDED: usize = 512;
const PREEMPHASIS: f32 = 0.97;
const LOW_FREQ: f32 = 20.0;
const SAMPLE_RATE: f32 = 16_000.0;

/// Reusable filterbank: window, mel weights and FFT plan are computed once.
pub struct Fbank {
    window: Vec<f32>,
    /// Per mel bin: first FFT bin and its weights.
    banks: Vec<(usize, Vec<f32>)>,
    fft: Arc<dyn Fft<f32>>,
    buffer: Vec<Complex32>,
    scratch: Vec<Complex32>,
}

impl std::fmt::Debug for Fbank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fbank").finish_non_exhaustive()
    }
}

impl Default for Fbank {
    fn default() -> Self {
        Self::new()
    }
}

fn mel(freq: f32) -> f32 {
    1127.0 * (1.0 + freq / 700.0).ln()
}

/// Frames Kaldi produces for `samples` with snipped edges.
pub fn num_frames(samples: usize) -> usize {
    if samples < FRAME_LENGTH {
        0
    } else {
        1 + (samples - FRAME_LENGTH) / FRAME_SHIFT
    }
}

impl Fbank {
    pub fn new() -> Self {
        let window = (0..FRAME_LENGTH)
            .map(|n| {
                let hann = 0.5
                    - 0.5
                        * (2.0 * std::f64::consts::PI * n as f64 / (FRAME_LENGTH - 1) as f64).cos();
                hann.powf(0.85) as f32
            })
            .collect();
        let mel_low = mel(LOW_FREQ);
        let mel_high = mel(SAMPLE_RATE / 2.0);
        let delta = (mel_high - mel_low) / (NUM_BINS + 1) as f32;
        let bin_width = SAMPLE_RATE / PADDED as f32;
        let banks = (0..NUM_BINS)
            .map(|b| {
                let left = mel_low + b as f32 * delta;
                let center = left + delta;
                let right = center + delta;
                let mut first = None;
                let mut weights = Vec::new();
                for i in 0..PADDED / 2 {
                    let m = mel(bin_width * i as f32);
                    if m > left && m < right {
                        let w = if m <= center {
                            (m - left) / (center - left)
                        } else {
                            (right - m) / (right - center)
                        };
                        first.get_or_insert(i);
                        weights.push(w);
                    } else if first.is_some() {
                        break;
                    }
                }
                (first.unwrap_or(0), weights)
            })
            .collect();
        let fft = FftPlanner::new().plan_fft_forward(PADDED);
        let scratch = vec![Complex32::default(); fft.get_inplace_scratch_len()];
        Self {
            window,
            banks,
            fft,
            buffer: vec![Complex32::default(); PADDED],
            scratch,
        }
    }

    /// Log mel energies, `num_frames(samples.len())` rows of [`NUM_BINS`], row-major.
    pub fn compute(&mut self, samples: &[f32]) -> Vec<f32> {
        let frames = num_frames(samples.len());
        let mut out = Vec::with_capacity(frames * NUM_BINS);
        let mut frame = [0f32; FRAME_LENGTH];
        let mut power = [0f32; PADDED / 2];
        for f in 0..frames {
            frame.copy_from_slice(&samples[f * FRAME_SHIFT..f * FRAME_SHIFT + FRAME_LENGTH]);
            let mean = frame.iter().sum::<f32>() / FRAME_LENGTH as f32;
            frame.iter_mut().for_each(|x| *x -= mean);
            for i in (1..FRAME_LENGTH).rev() {
                frame[i] -= PREEMPHASIS * frame[i - 1];
            }
            frame[0] -= PREEMPHASIS * frame[0];
            for (i, slot) in self.buffer.iter_mut().enumerate() {
                *slot = if i < FRAME_LENGTH {
                    Complex32::new(frame[i] * self.window[i], 0.0)
                } else {
                    Complex32::default()
                };
            }
            self.fft
                .process_with_scratch(&mut self.buffer, &mut self.scratch);
            for (p, c) in power.iter_mut().zip(&self.buffer) {
                *p = c.norm_sqr();
            }
            for (first, weights) in &self.banks {
                let energy: f32 = weights
                    .iter()
                    .zip(&power[*first..])
                    .map(|(w, p)| w * p)
                    .sum();
                out.push(energy.max(f32::EPSILON).ln());
            }
        }
        out
    }
}

/// Subtracts each bin's mean over the rows (cepstral mean normalisation, no variance norm).
pub fn mean_normalise(features: &mut [f32]) {
    let rows = features.len() / NUM_BINS;
    if rows == 0 {
        return;
    }
    let mut mean = [0f32; NUM_BINS];
    for row in features.chunks_exact(NUM_BINS) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += v;
        }
    }
    mean.iter_mut().for_each(|m| *m /= rows as f32);
    for row in features.chunks_exact_mut(NUM_BINS) {
        for (v, m) in row.iter_mut().zip(&mean) {
            *v -= m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f32, samples: usize, amplitude: f32) -> Vec<f32> {
        (0..samples)
            .map(|i| amplitude * (2.0 * std::f32::consts::PI * freq * i as f32 / SAMPLE_RATE).sin())
            .collect()
    }

    fn bin_centre_hz(b: usize) -> f32 {
        let mel_low = mel(LOW_FREQ);
        let delta = (mel(SAMPLE_RATE / 2.0) - mel_low) / (NUM_BINS + 1) as f32;
        let m = mel_low + (b + 1) as f32 * delta;
        700.0 * ((m / 1127.0).exp() - 1.0)
    }

    #[test]
    fn frame_count_matches_kaldi_snip_edges() {
        assert_eq!(num_frames(399), 0);
        assert_eq!(num_frames(400), 1);
        assert_eq!(num_frames(559), 1);
        assert_eq!(num_frames(560), 2);
        assert_eq!(num_frames(16_000), 98);
        let mut fbank = Fbank::new();
        assert_eq!(fbank.compute(&vec![0.1; 16_000]).len(), 98 * NUM_BINS);
    }

    #[test]
    fn a_tone_peaks_in_the_mel_bin_around_its_frequency() {
        let mut fbank = Fbank::new();
        for freq in [300.0f32, 1000.0, 3000.0, 6000.0] {
            let features = fbank.compute(&tone(freq, 4000, 0.5));
            let row = &features[5 * NUM_BINS..6 * NUM_BINS];
            let (peak, _) = row
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap();
            let centre = bin_centre_hz(peak);
            assert!(
                (centre - freq).abs() / freq < 0.12,
                "{freq} Hz peaked in bin {peak} centred at {centre} Hz"
            );
        }
    }

    #[test]
    fn gain_shifts_every_bin_by_the_same_log_amount_and_cmn_removes_it() {
        let mut fbank = Fbank::new();
        let mut state = 0x2545_f491_u32;
        let signal: Vec<f32> = (0..8000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state % 10_000) as f32 / 10_000.0 - 0.5
            })
            .collect();
        let louder: Vec<f32> = signal.iter().map(|x| x * 4.0).collect();
        let mut a = fbank.compute(&signal);
        let mut b = fbank.compute(&louder);
        let expected = (16.0f32).ln();
        for (x, y) in a.iter().zip(&b) {
            assert!((y - x - expected).abs() < 1e-3, "{x} {y}");
        }
        mean_normalise(&mut a);
        mean_normalise(&mut b);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-3);
        }
        let rows = a.len() / NUM_BINS;
        let column_mean: f32 = a.chunks_exact(NUM_BINS).map(|r| r[7]).sum::<f32>() / rows as f32;
        assert!(column_mean.abs() < 1e-4);
    }

    #[test]
    fn silence_is_floored_not_infinite() {
        let mut fbank = Fbank::new();
        let features = fbank.compute(&[0.0; 800]);
        assert!(
            features
                .iter()
                .all(|v| v.is_finite() && (*v - f32::EPSILON.ln()).abs() < 1e-3)
        );
    }
}
