//! Speaker diarization (pure compute): pyannote segmentation over sliding windows, CAM++
//! embeddings per window and local speaker, clustering, reconstruction into speaker turns,
//! word-level speaker assignment, profile matching, RTTM and DER.
//!
//! Memory stays bounded for long files: audio is read window by window from a
//! [`SampleSource`]; what is kept per window is its local speakers' activity (one byte per frame
//! and speaker) and at most three 192-d embeddings; clustering sees at most
//! [`MAX_CLUSTERED`] embeddings and the rest are assigned to the centroids it found.

pub mod assign;
pub mod cluster;
pub mod embedding;
pub mod fbank;
pub mod metrics;
pub mod profiles;
pub mod segmentation;

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::path::Path;

use cluster::ClusterOptions;
use embedding::{Embedder, EmbeddingOutput, cosine};
use metrics::Turn;
use segmentation::{
    Binarisation, Binariser, FRAME_STEP_SAMPLES, LOCAL_SPEAKERS, POWERSET, SAMPLE_RATE, Segmenter,
    WINDOW_SAMPLES,
};

use crate::models::runtime::Runtime;

/// Embeddings clustered directly; beyond this, a uniform subset is clustered and every embedding
/// is then assigned to the nearest centroid (4 h at a 2.5 s step gives about 9 000).
pub const MAX_CLUSTERED: usize = 1500;

/// Fewest fbank rows (10 ms each) an embedding is computed from.
const MIN_EMBEDDING_ROWS: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum DiarizeError {
    #[error("model `{model}`: {reason}")]
    Model { model: String, reason: String },
    #[error("diarization inference failed: {0}")]
    Inference(String),
    #[error("reading audio for diarization: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid speaker count: {0}")]
    InvalidOptions(String),
    #[error("cancelled")]
    Cancelled,
}

impl DiarizeError {
    pub fn code(&self) -> &'static str {
        match self {
            DiarizeError::Model { .. } => "model-load",
            DiarizeError::Inference(_) => "diarize-inference",
            DiarizeError::Io(_) => "scratch-io",
            DiarizeError::InvalidOptions(_) => "invalid-speakers",
            DiarizeError::Cancelled => "cancelled",
        }
    }
}

/// 16 kHz mono samples that can be read by range (a spool file, or memory).
pub trait SampleSource {
    fn total_samples(&self) -> usize;
    /// Appends samples `start..end` (within `total_samples`) to `out`.
    fn read_into(&mut self, start: usize, end: usize, out: &mut Vec<f32>) -> std::io::Result<()>;
}

/// Samples already in memory.
#[derive(Debug, Clone, Copy)]
pub struct SliceSource<'a>(pub &'a [f32]);

impl SampleSource for SliceSource<'_> {
    fn total_samples(&self) -> usize {
        self.0.len()
    }

    fn read_into(&mut self, start: usize, end: usize, out: &mut Vec<f32>) -> std::io::Result<()> {
        out.extend_from_slice(&self.0[start..end]);
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DiarizeOptions {
    pub num_speakers: Option<usize>,
    pub min_speakers: Option<usize>,
    pub max_speakers: Option<usize>,
    /// Seconds between window starts (10 s windows).
    pub step_seconds: f64,
    pub binarisation: Binarisation,
    /// Clustering stops merging at this share of the recording's between-speaker distance scale
    /// (the median cosine distance between two speakers of one window).
    pub threshold: f32,
    /// A local speaker needs this much speech without overlap (seconds) for an embedding that
    /// takes part in clustering.
    pub min_embedding_seconds: f64,
    /// Without a fixed count, a cluster needs this much clean speech summed over its embeddings
    /// (seconds; a second of speech is seen by 10 / step_seconds windows) to be a speaker.
    pub min_cluster_seconds: f64,
}

impl Default for DiarizeOptions {
    fn default() -> Self {
        Self {
            num_speakers: None,
            min_speakers: None,
            max_speakers: None,
            step_seconds: 2.5,
            binarisation: Binarisation::default(),
            threshold: 0.55,
            min_embedding_seconds: 0.5,
            min_cluster_seconds: 8.0,
        }
    }
}

impl DiarizeOptions {
    /// Checks the speaker counts: each in 1..=20 and min <= num <= max.
    pub fn validate(&self) -> Result<(), DiarizeError> {
        let range = |name: &str, v: Option<usize>| match v {
            Some(v) if !(1..=20).contains(&v) => Err(DiarizeError::InvalidOptions(format!(
                "{name} must be between 1 and 20, got {v}"
            ))),
            _ => Ok(()),
        };
        range("num_speakers", self.num_speakers)?;
        range("min_speakers", self.min_speakers)?;
        range("max_speakers", self.max_speakers)?;
        if let (Some(min), Some(max)) = (self.min_speakers, self.max_speakers)
            && min > max
        {
            return Err(DiarizeError::InvalidOptions(format!(
                "min_speakers ({min}) is greater than max_speakers ({max})"
            )));
        }
        if let Some(n) = self.num_speakers
            && (self.min_speakers.is_some_and(|m| n < m)
                || self.max_speakers.is_some_and(|m| n > m))
        {
            return Err(DiarizeError::InvalidOptions(format!(
                "num_speakers ({n}) is outside min_speakers..max_speakers"
            )));
        }
        if !(self.step_seconds > 0.0 && self.step_seconds <= 10.0) {
            return Err(DiarizeError::InvalidOptions(format!(
                "window step must be in (0, 10] seconds, got {}",
                self.step_seconds
            )));
        }
        Ok(())
    }
}

/// One speaker found in a file.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeakerInfo {
    /// `SPEAKER_00`, `SPEAKER_01`, ... in order of first speech.
    pub id: String,
    /// Mean direction of the speaker's embeddings, 192-d, L2-normalised.
    pub centroid: Vec<f32>,
    /// Seconds of speech attributed to the speaker.
    pub speech_seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Diarization {
    /// Turns in time order; turns of different speakers may overlap.
    pub turns: Vec<Turn>,
    pub speakers: Vec<SpeakerInfo>,
}

/// The two diarization models, loaded once and reused across files.
pub struct Diarizer {
    pub segmenter: Segmenter,
    pub embedder: Embedder,
}

impl std::fmt::Debug for Diarizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Diarizer").finish_non_exhaustive()
    }
}

/// What is kept of one window after segmentation and embedding.
struct WindowRecord {
    first_frame: usize,
    frames: usize,
    /// Per frame and local speaker, activity in 1/255 steps.
    activity: Vec<[u8; LOCAL_SPEAKERS]>,
    /// Per local speaker: index into the embedding list.
    embedding: [Option<usize>; LOCAL_SPEAKERS],
}

impl Diarizer {
    pub fn load(
        runtime: &Runtime,
        segmentation_dir: &Path,
        embedding_dir: &Path,
    ) -> Result<Self, DiarizeError> {
        Ok(Self {
            segmenter: Segmenter::load(runtime, segmentation_dir)?,
            embedder: Embedder::load(runtime, embedding_dir, EmbeddingOutput::Raw)?,
        })
    }

    /// Diarizes a whole source. `progress` gets the fraction done and may cancel.
    pub fn diarize(
        &mut self,
        source: &mut dyn SampleSource,
        options: &DiarizeOptions,
        progress: &mut dyn FnMut(f32) -> ControlFlow<()>,
    ) -> Result<Diarization, DiarizeError> {
        options.validate()?;
        let total = source.total_samples();
        if total == 0 {
            return Ok(Diarization::default());
        }
        let step = (options.step_seconds * SAMPLE_RATE as f64) as usize;
        let starts = segmentation::window_starts(total, step);
        let min_embedding_frames = (options.min_embedding_seconds * SAMPLE_RATE as f64
            / FRAME_STEP_SAMPLES as f64) as usize;
        let mut fbank = fbank::Fbank::new();
        let mut windows: Vec<WindowRecord> = Vec::with_capacity(starts.len());
        let mut embeddings: Vec<Vec<f32>> = Vec::new();
        let mut weights: Vec<f32> = Vec::new();
        let mut for_clustering: Vec<bool> = Vec::new();
        let mut owners: Vec<usize> = Vec::new();
        let mut audio: Vec<f32> = Vec::with_capacity(WINDOW_SAMPLES);
        // Two thirds of the time goes to windows, the rest is quick.
        for (index, &start) in starts.iter().enumerate() {
            audio.clear();
            let end = (start + WINDOW_SAMPLES).min(total);
            source.read_into(start, end, &mut audio)?;
            let valid = audio.len();
            audio.resize(WINDOW_SAMPLES, 0.0);
            let log_probs = self
                .segmenter
                .run(&audio)?
                .into_iter()
                .next()
                .unwrap_or_default();
            let marginals = segmentation::powerset_marginals(&log_probs);
            let classes = segmentation::powerset_argmax(&log_probs);
            let frames = marginals.len();
            // Frames past the end of the audio (zero padding) carry no speech.
            let valid_frames = (valid.saturating_sub(segmentation::FRAME0_CENTRE_SAMPLES)
                / FRAME_STEP_SAMPLES
                + 1)
            .min(frames);
            let mut record = WindowRecord {
                first_frame: start / FRAME_STEP_SAMPLES,
                frames: valid_frames,
                activity: marginals[..valid_frames]
                    .iter()
                    .map(|m| m.map(|p| (p.clamp(0.0, 1.0) * 255.0).round() as u8))
                    .collect(),
                embedding: [None; LOCAL_SPEAKERS],
            };
            let mut features: Option<Vec<f32>> = None;
            for speaker in 0..LOCAL_SPEAKERS {
                let clean: Vec<bool> = classes
                    .iter()
                    .enumerate()
                    .map(|(f, &c)| f < valid_frames && POWERSET[c as usize] == [speaker])
                    .collect();
                let count = clean.iter().filter(|c| **c).count();
                // A local speaker with too little speech alone (a backchannel, a short turn, or
                // one who mostly overlaps) still gets an embedding from all its frames, so that
                // its speech is attributed; such embeddings are assigned but not clustered.
                let (mask, clustered) = if count >= min_embedding_frames {
                    (clean, true)
                } else {
                    let active: Vec<bool> = classes
                        .iter()
                        .enumerate()
                        .map(|(f, &c)| f < valid_frames && POWERSET[c as usize].contains(&speaker))
                        .collect();
                    (active, false)
                };
                let window_features =
                    features.get_or_insert_with(|| fbank.compute(&audio[..valid.max(400)]));
                let selected = embedding::select_rows(window_features, &mask);
                if selected.len() / fbank::NUM_BINS < MIN_EMBEDDING_ROWS {
                    continue;
                }
                let vector = self.embedder.embed_features(&selected)?;
                record.embedding[speaker] = Some(embeddings.len());
                embeddings.push(vector);
                weights.push(count as f32 * FRAME_STEP_SAMPLES as f32 / SAMPLE_RATE as f32);
                for_clustering.push(clustered);
                owners.push(index);
            }
            windows.push(record);
            if progress(0.95 * (index + 1) as f32 / starts.len() as f32).is_break() {
                return Err(DiarizeError::Cancelled);
            }
        }

        // Cluster (a bounded subset), then assign every embedding under the constraint that
        // the local speakers of one window are different people.
        let clusterable: Vec<usize> = (0..embeddings.len())
            .filter(|&i| for_clustering[i])
            .collect();
        let cluster_options = ClusterOptions {
            threshold: options.threshold
                * within_window_distance(&clusterable, &embeddings, &owners),
            num_speakers: options.num_speakers,
            min_speakers: options.min_speakers.unwrap_or(1),
            max_speakers: options.max_speakers.unwrap_or(20),
            min_cluster_weight: options.min_cluster_seconds as f32,
        };
        let stride = clusterable.len().div_ceil(MAX_CLUSTERED).max(1);
        let subset: Vec<usize> = clusterable.iter().copied().step_by(stride).collect();
        let subset_embeddings: Vec<Vec<f32>> =
            subset.iter().map(|&i| embeddings[i].clone()).collect();
        let subset_weights: Vec<f32> = subset.iter().map(|&i| weights[i]).collect();
        let mut centroids = cluster::cluster(&subset_embeddings, &subset_weights, &cluster_options);
        if centroids.is_empty() {
            // No local speaker had enough clean speech anywhere: whatever speech there is
            // belongs to one unknown speaker.
            centroids.push(vec![0.0; embedding::EMBEDDING_DIM]);
        }
        let assignments: Vec<[Option<usize>; LOCAL_SPEAKERS]> = windows
            .iter()
            .map(|w| assign_window(w, &embeddings, &centroids))
            .collect();

        // Recompute centroids from the final assignment.
        let k = centroids.len();
        let mut labels = vec![0usize; embeddings.len()];
        for (w, a) in windows.iter().zip(&assignments) {
            for (e, c) in w.embedding.iter().zip(a) {
                if let (Some(e), Some(c)) = (e, c) {
                    labels[*e] = *c;
                }
            }
        }
        let final_centroids = if clusterable.is_empty() {
            centroids.clone()
        } else {
            let members: Vec<Vec<f32>> =
                clusterable.iter().map(|&i| embeddings[i].clone()).collect();
            let member_weights: Vec<f32> = clusterable.iter().map(|&i| weights[i]).collect();
            let member_labels: Vec<usize> = clusterable.iter().map(|&i| labels[i]).collect();
            cluster::centroids(&members, &member_weights, &member_labels, k)
        };

        // Reconstruction: overlap-add each cluster's activity over the global frame grid and
        // the number of local speakers talking, average both over the windows covering a frame,
        // then mark the that-many clusters with the highest activity as talking (so splitting a
        // voice over two clusters, or a local speaker without an embedding, does not turn
        // speech into silence), and binarise as frames become final.
        let mut binarisers: Vec<Binariser> = (0..k)
            .map(|_| Binariser::new(options.binarisation))
            .collect();
        let mut pending: VecDeque<FrameSums> = VecDeque::new();
        let mut base = 0usize;
        let flush = |pending: &mut VecDeque<FrameSums>,
                     base: &mut usize,
                     until: usize,
                     binarisers: &mut Vec<Binariser>| {
            while *base < until {
                let frame = pending.pop_front().unwrap_or_else(|| FrameSums::new(k));
                let values = frame.values();
                for (b, value) in binarisers.iter_mut().zip(values) {
                    b.push(*base, value);
                }
                *base += 1;
            }
        };
        for (w, a) in windows.iter().zip(&assignments) {
            flush(&mut pending, &mut base, w.first_frame, &mut binarisers);
            for f in 0..w.frames {
                let slot = w.first_frame + f - base;
                while pending.len() <= slot {
                    pending.push_back(FrameSums::new(k));
                }
                let frame = &mut pending[slot];
                frame.windows += 1;
                frame.speakers += w.activity[f].iter().filter(|&&x| x >= 128).count() as u16;
                let mut best = vec![0f32; k];
                for (s, c) in a.iter().enumerate() {
                    if let Some(c) = c {
                        best[*c] = best[*c].max(w.activity[f][s] as f32 / 255.0);
                    }
                }
                for (sum, b) in frame.activity.iter_mut().zip(best) {
                    *sum += b;
                }
            }
        }
        let end_frame = base + pending.len();
        flush(&mut pending, &mut base, end_frame, &mut binarisers);
        let duration = total as f64 / SAMPLE_RATE as f64;
        let mut per_cluster: Vec<Vec<(f64, f64)>> = binarisers
            .into_iter()
            .map(|b| {
                b.finish(end_frame)
                    .into_iter()
                    .map(|(s, e)| (s.min(duration), e.min(duration)))
                    .filter(|(s, e)| e > s)
                    .collect()
            })
            .collect();
        // Speakers named in order of first speech; clusters without speech are dropped.
        let mut order: Vec<usize> = (0..k).filter(|&c| !per_cluster[c].is_empty()).collect();
        order.sort_by(|a, b| per_cluster[*a][0].0.total_cmp(&per_cluster[*b][0].0));
        let mut result = Diarization::default();
        for (rank, &c) in order.iter().enumerate() {
            let id = format!("SPEAKER_{rank:02}");
            let turns = std::mem::take(&mut per_cluster[c]);
            result.speakers.push(SpeakerInfo {
                id: id.clone(),
                centroid: final_centroids[c].clone(),
                speech_seconds: turns.iter().map(|(s, e)| e - s).sum(),
            });
            result
                .turns
                .extend(turns.into_iter().map(|(start, end)| Turn {
                    start,
                    end,
                    speaker: id.clone(),
                }));
        }
        result.turns.sort_by(|a, b| a.start.total_cmp(&b.start));
        let _ = progress(1.0);
        Ok(result)
    }
}

/// One global frame during reconstruction: sums over the windows that cover it.
struct FrameSums {
    /// Per cluster, the activity of the local speakers assigned to it.
    activity: Vec<f32>,
    /// Local speakers talking (activity at least one half).
    speakers: u16,
    windows: u16,
}

impl FrameSums {
    fn new(k: usize) -> Self {
        Self {
            activity: vec![0.0; k],
            speakers: 0,
            windows: 0,
        }
    }

    /// Per cluster, 1 or 0: the clusters with the highest mean activity, as many as the mean
    /// number of local speakers talking (rounded).
    fn values(&self) -> Vec<f32> {
        if self.windows == 0 {
            return vec![0.0; self.activity.len()];
        }
        let mean: Vec<f32> = self
            .activity
            .iter()
            .map(|a| a / self.windows as f32)
            .collect();
        let talking = (self.speakers as f32 / self.windows as f32).round() as usize;
        let mut order: Vec<usize> = (0..mean.len()).filter(|&c| mean[c] > 0.0).collect();
        order.sort_by(|a, b| mean[*b].total_cmp(&mean[*a]));
        let mut out = vec![0.0; mean.len()];
        for &c in order.iter().take(talking) {
            out[c] = 1.0;
        }
        out
    }
}

/// The median cosine distance between two local speakers of one window (different people by
/// construction), over the embeddings that are clustered: the scale of between-speaker distances
/// in this recording. Band-limited or noisy audio brings everyone's embeddings closer together,
/// so a fixed threshold that separates voices in clean audio merges them on a phone line.
/// Clamped to [0.3, 1]; 1 when no window holds two speakers.
fn within_window_distance(clusterable: &[usize], embeddings: &[Vec<f32>], owners: &[usize]) -> f32 {
    let mut distances = Vec::new();
    for (a, &i) in clusterable.iter().enumerate() {
        for &j in clusterable[a + 1..]
            .iter()
            .take_while(|&&j| owners[j] == owners[i])
        {
            distances.push(1.0 - cosine(&embeddings[i], &embeddings[j]));
        }
    }
    if distances.is_empty() {
        return 1.0;
    }
    distances.sort_by(f32::total_cmp);
    distances[distances.len() / 2].clamp(0.3, 1.0)
}

/// Local speakers of a window to clusters: the most similar distinct clusters (exhaustive over
/// at most three speakers). A local speaker without an embedding gets no cluster.
fn assign_window(
    window: &WindowRecord,
    embeddings: &[Vec<f32>],
    centroids: &[Vec<f32>],
) -> [Option<usize>; LOCAL_SPEAKERS] {
    let k = centroids.len();
    let speakers: Vec<(usize, &Vec<f32>)> = (0..LOCAL_SPEAKERS)
        .filter_map(|s| window.embedding[s].map(|e| (s, &embeddings[e])))
        .collect();
    let scores: Vec<Vec<f32>> = speakers
        .iter()
        .map(|(_, e)| centroids.iter().map(|c| cosine(e, c)).collect())
        .collect();
    let mut best: (f32, Vec<usize>) = (f32::NEG_INFINITY, Vec::new());
    let mut current = Vec::with_capacity(speakers.len());
    fn search(
        scores: &[Vec<f32>],
        k: usize,
        distinct: bool,
        current: &mut Vec<usize>,
        score: f32,
        best: &mut (f32, Vec<usize>),
    ) {
        let depth = current.len();
        if depth == scores.len() {
            if score > best.0 {
                *best = (score, current.clone());
            }
            return;
        }
        for c in 0..k {
            if distinct && current.contains(&c) {
                continue;
            }
            current.push(c);
            search(scores, k, distinct, current, score + scores[depth][c], best);
            current.pop();
        }
    }
    search(
        &scores,
        k,
        speakers.len() <= k,
        &mut current,
        0.0,
        &mut best,
    );
    let mut out = [None; LOCAL_SPEAKERS];
    for ((s, _), c) in speakers.iter().zip(best.1) {
        out[*s] = Some(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speaker_counts_are_validated() {
        let ok = DiarizeOptions {
            num_speakers: Some(3),
            min_speakers: Some(2),
            max_speakers: Some(4),
            ..DiarizeOptions::default()
        };
        assert!(ok.validate().is_ok());
        for bad in [
            DiarizeOptions {
                num_speakers: Some(0),
                ..DiarizeOptions::default()
            },
            DiarizeOptions {
                max_speakers: Some(21),
                ..DiarizeOptions::default()
            },
            DiarizeOptions {
                min_speakers: Some(5),
                max_speakers: Some(2),
                ..DiarizeOptions::default()
            },
            DiarizeOptions {
                num_speakers: Some(5),
                max_speakers: Some(2),
                ..DiarizeOptions::default()
            },
        ] {
            assert!(matches!(
                bad.validate(),
                Err(DiarizeError::InvalidOptions(_))
            ));
        }
    }

    #[test]
    fn the_distance_scale_comes_from_speakers_sharing_a_window() {
        let e = |a: f32| vec![a.cos(), a.sin()];
        // Windows 0 and 1 each hold two speakers (cosine distances 0.5 and 1 - cos 1.2);
        // window 2 holds one, and embedding 5 is not clustered.
        let embeddings = vec![
            e(0.0),
            e(std::f32::consts::FRAC_PI_3),
            e(0.2),
            e(1.4),
            e(3.0),
            e(0.5),
        ];
        let owners = vec![0, 0, 1, 1, 2, 2];
        let clusterable = vec![0, 1, 2, 3, 4];
        let median = within_window_distance(&clusterable, &embeddings, &owners);
        assert!((median - (1.0 - 1.2f32.cos())).abs() < 1e-4, "{median}");
        // No window with two speakers: the clean-audio scale.
        assert_eq!(
            within_window_distance(&[0, 2, 4], &embeddings, &owners),
            1.0
        );
        // Near-identical voices on a bad line do not push the threshold towards zero.
        let close = vec![e(0.0), e(0.01)];
        assert_eq!(within_window_distance(&[0, 1], &close, &[0, 0]), 0.3);
    }

    #[test]
    fn local_speakers_of_a_window_go_to_distinct_clusters() {
        let centroids = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        // Both local speakers lean towards cluster 0; the better one gets it.
        let embeddings = vec![vec![0.9, 0.1], vec![0.8, 0.6]];
        let window = WindowRecord {
            first_frame: 0,
            frames: 0,
            activity: Vec::new(),
            embedding: [Some(0), None, Some(1)],
        };
        assert_eq!(
            assign_window(&window, &embeddings, &centroids),
            [Some(0), None, Some(1)]
        );
        // More local speakers than clusters: no constraint.
        let one = vec![vec![1.0, 0.0]];
        assert_eq!(
            assign_window(&window, &embeddings, &one),
            [Some(0), None, Some(0)]
        );
    }
}
