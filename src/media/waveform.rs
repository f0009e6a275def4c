//! Waveform peaks for the player: the loudest absolute sample of each short bin, computed
//! while the audio streams by (bounded memory), then reduced to at most a few thousand peaks.

use serde::{Deserialize, Serialize};

/// Bins of 50 ms at 16 kHz while streaming.
const SAMPLES_PER_BIN: usize = 800;
/// Peaks kept for the player: enough for a wide screen, small as JSON for any length.
pub const MAX_PEAKS: usize = 4000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Waveform {
    /// 0..1, the loudest absolute sample in each span.
    pub peaks: Vec<f32>,
    pub seconds_per_peak: f64,
}

#[derive(Debug)]
pub struct PeakAccumulator {
    sample_rate: u32,
    bins: Vec<f32>,
    current: f32,
    in_bin: usize,
}

impl PeakAccumulator {
    pub fn new(sample_rate: u32) -> Self {
        Self {
            sample_rate,
            bins: Vec::new(),
            current: 0.0,
            in_bin: 0,
        }
    }

    pub fn push(&mut self, samples: &[f32]) {
        for &sample in samples {
            let level = sample.abs();
            if level > self.current && level.is_finite() {
                self.current = level;
            }
            self.in_bin += 1;
            if self.in_bin == SAMPLES_PER_BIN {
                self.bins.push(self.current.min(1.0));
                self.current = 0.0;
                self.in_bin = 0;
            }
        }
    }

    pub fn finish(mut self, max_peaks: usize) -> Waveform {
        if self.in_bin > 0 {
            self.bins.push(self.current.min(1.0));
        }
        let bin_secs = SAMPLES_PER_BIN as f64 / f64::from(self.sample_rate);
        let group = self.bins.len().div_ceil(max_peaks.max(1)).max(1);
        let peaks = self
            .bins
            .chunks(group)
            .map(|c| c.iter().copied().fold(0.0, f32::max))
            .collect();
        Waveform {
            peaks,
            seconds_per_peak: bin_secs * group as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peaks_follow_loudness_and_stay_bounded() {
        let mut acc = PeakAccumulator::new(16_000);
        // 1 s of silence, 1 s at 0.5, 1 s at full scale (with a spike beyond it).
        acc.push(&vec![0.0; 16_000]);
        acc.push(&vec![-0.5; 16_000]);
        let mut loud = vec![0.9; 16_000];
        loud[100] = 3.0;
        acc.push(&loud);
        let wave = acc.finish(MAX_PEAKS);
        assert_eq!(wave.peaks.len(), 60);
        assert!((wave.seconds_per_peak - 0.05).abs() < 1e-9);
        assert_eq!(wave.peaks[0], 0.0);
        assert_eq!(wave.peaks[25], 0.5);
        assert_eq!(wave.peaks[40], 1.0, "clamped to 1");
        assert!((wave.peaks[45] - 0.9).abs() < 1e-6);

        // Four hours reduce to at most MAX_PEAKS.
        let mut acc = PeakAccumulator::new(16_000);
        let chunk = vec![0.25; 16_000 * 60];
        for _ in 0..240 {
            acc.push(&chunk);
        }
        let wave = acc.finish(MAX_PEAKS);
        assert!(wave.peaks.len() <= MAX_PEAKS && wave.peaks.len() > MAX_PEAKS / 2);
        let covered = wave.peaks.len() as f64 * wave.seconds_per_peak;
        assert!(
            (covered - 4.0 * 3600.0).abs() < wave.seconds_per_peak,
            "{covered}"
        );
    }
}
