//! The stages that turn one media file into a transcript. Blocking; the daemon runs them on
//! worker threads and the CLI runs them directly.
//!
//! Memory stays bounded for any length: decoding streams 16 kHz samples to a temporary file
//! while Silero VAD scores them; then only the speech chunks (at most 30 s each) are read
//! back, one at a time, and transcribed independently. Diarization then reads the same spool
//! window by window (10 s at a time) and labels words and segments with speakers.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use crate::asr::mel::SAMPLE_RATE;
use crate::asr::transcribe::{
    DecodingOptions, TranscribeOptions, initial_prompt_tokens, transcribe_continuing,
};
use crate::asr::vad::{Region, SileroVad, VadParams, speech_regions};
use crate::asr::whisper::WhisperModel;
use crate::config::Config;
use crate::diarize::{
    Diarization, DiarizeError, DiarizeOptions, Diarizer, SampleSource, SpeakerInfo,
};
use crate::media::decode::{DecodeError, decode_to_mono_16k};
use crate::models::cache::{Depth, ModelCache};
use crate::models::runtime::Runtime;
use crate::transcript::{Segment, Speaker, Transcript, Word};
use symphonia::core::io::MediaSource;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{0}")]
    Media(#[from] DecodeError),
    #[error("model `{name}`: {reason}")]
    Model { name: String, reason: String },
    #[error("{0}")]
    Runtime(#[from] crate::models::runtime::RuntimeError),
    #[error("{0}")]
    Asr(#[from] crate::asr::whisper::AsrError),
    #[error("{0}")]
    Diarize(DiarizeError),
    #[error("temporary audio file: {0}")]
    Scratch(std::io::Error),
    #[error("cancelled")]
    Cancelled,
}

impl PipelineError {
    pub fn code(&self) -> &'static str {
        match self {
            PipelineError::Media(e) => e.code(),
            PipelineError::Model { .. } => "model-missing",
            PipelineError::Runtime(e) => e.code(),
            PipelineError::Asr(e) => e.code(),
            PipelineError::Diarize(e) => e.code(),
            PipelineError::Scratch(_) => "scratch-io",
            PipelineError::Cancelled => "cancelled",
        }
    }
}

/// Progress of a file through the stages, for progress bars and WebSocket events.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stage {
    /// Decoding and voice activity detection, fraction done when the duration is known.
    Decode(f32),
    Transcribe(f32),
    /// Speaker diarization after transcription.
    Diarize(f32),
}

#[derive(Debug, Clone)]
pub struct FileOptions {
    pub model: String,
    pub language: Option<String>,
    pub translate: bool,
    pub quantized: bool,
    /// Skip voice activity detection and transcribe everything with Whisper's sliding window.
    pub no_vad: bool,
    /// 1 decodes greedily; Whisper and faster-whisper default to 5.
    pub beam_size: usize,
    /// Above 1: the throughput mode, this many independent windows per encoder and decoder
    /// call (`asr::batched`); 0 or 1: sequential windows, each conditioned on the last.
    pub batch_windows: usize,
    /// Text the first window is conditioned on (names, spelling, style).
    pub initial_prompt: Option<String>,
    /// Words to favour in every window.
    pub hotwords: Option<String>,
    /// Label speakers (diarization after transcription).
    pub diarize: bool,
    /// Exact number of speakers, when known (1..=20).
    pub num_speakers: Option<usize>,
    pub min_speakers: Option<usize>,
    pub max_speakers: Option<usize>,
}

impl Default for FileOptions {
    fn default() -> Self {
        Self {
            model: "whisper-base".to_owned(),
            language: None,
            translate: false,
            quantized: false,
            no_vad: false,
            beam_size: 5,
            batch_windows: 0,
            initial_prompt: None,
            hotwords: None,
            diarize: true,
            num_speakers: None,
            min_speakers: None,
            max_speakers: None,
        }
    }
}

impl FileOptions {
    pub fn diarize_options(&self) -> DiarizeOptions {
        DiarizeOptions {
            num_speakers: self.num_speakers,
            min_speakers: self.min_speakers,
            max_speakers: self.max_speakers,
            ..DiarizeOptions::default()
        }
    }
}

/// The models one file needs, loaded once and reused across files.
pub struct Engine {
    pub whisper: WhisperModel,
    pub vad: SileroVad,
    /// The diarization models, or why they could not be loaded (reported when a file asks for
    /// speakers, so a cache without them still transcribes with `diarize = false`).
    pub diarizer: Result<Diarizer, String>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("whisper", &self.whisper.name)
            .finish_non_exhaustive()
    }
}

fn checked_model(
    config: &Config,
    name: &str,
) -> Result<(PathBuf, crate::models::manifest::Manifest), PipelineError> {
    let cache = ModelCache::new(&config.models_dir);
    let model = cache.model(name);
    let manifest = model.manifest.map_err(|reason| PipelineError::Model {
        name: name.to_owned(),
        reason,
    })?;
    let problems = cache.verify(name, Depth::Sizes);
    if !problems.is_empty() {
        return Err(PipelineError::Model {
            name: name.to_owned(),
            reason: problems.join("; "),
        });
    }
    Ok((model.dir, manifest))
}

impl Engine {
    pub fn load(config: &Config, asr_model: &str, quantized: bool) -> Result<Self, PipelineError> {
        let runtime = Runtime::get_or_init(&config.runtime_settings())?;
        let (dir, manifest) = checked_model(config, asr_model)?;
        let whisper = WhisperModel::load(&runtime, &dir, &manifest, quantized)?;
        let (vad_dir, vad_manifest) = checked_model(config, "silero-vad")?;
        let vad = SileroVad::load(&runtime, &vad_dir, &vad_manifest)?;
        let diarizer = load_diarizer(config).map_err(|e| e.to_string());
        Ok(Self {
            whisper,
            vad,
            diarizer,
        })
    }

    /// Puts `asr_model` in place of the loaded speech-recognition model when a file asks for
    /// another one; VAD and diarization stay. Returns whether a model was loaded.
    pub fn use_asr_model(
        &mut self,
        config: &Config,
        asr_model: &str,
        quantized: bool,
    ) -> Result<bool, PipelineError> {
        if self.whisper.name == asr_model {
            return Ok(false);
        }
        let runtime = Runtime::get_or_init(&config.runtime_settings())?;
        let (dir, manifest) = checked_model(config, asr_model)?;
        self.whisper = WhisperModel::load(&runtime, &dir, &manifest, quantized)?;
        Ok(true)
    }
}

/// Loads the segmentation and speaker-embedding models from the cache.
pub fn load_diarizer(config: &Config) -> Result<Diarizer, PipelineError> {
    let runtime = Runtime::get_or_init(&config.runtime_settings())?;
    let (segmentation_dir, _) = checked_model(config, "pyannote-segmentation-3.0")?;
    let (embedding_dir, _) = checked_model(config, "campplus-zh-en")?;
    Diarizer::load(&runtime, &segmentation_dir, &embedding_dir).map_err(PipelineError::Diarize)
}

/// Lets symphonia read a stored blob (plain or encrypted) as a seekable source.
pub struct BlobSource {
    reader: crate::blobs::BlobReader,
    len: u64,
}

impl BlobSource {
    pub fn new(reader: crate::blobs::BlobReader) -> Self {
        let len = reader.len();
        Self { reader, len }
    }
}

impl Read for BlobSource {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.reader.read(buf)
    }
}

impl Seek for BlobSource {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.reader.seek(pos)
    }
}

impl MediaSource for BlobSource {
    fn is_seekable(&self) -> bool {
        true
    }

    fn byte_len(&self) -> Option<u64> {
        Some(self.len)
    }
}

/// 16 kHz f32 samples spooled to disk, deleted when dropped.
struct Spool {
    path: PathBuf,
    file: File,
}

impl Spool {
    fn create() -> std::io::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "opentranscribe-{}-{}.f32",
            std::process::id(),
            uuid::Uuid::now_v7()
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(Self { path, file })
    }

    fn read(&mut self, start: usize, end: usize, out: &mut Vec<f32>) -> std::io::Result<()> {
        let mut bytes = vec![0u8; (end - start) * 4];
        self.file.seek(SeekFrom::Start(start as u64 * 4))?;
        self.file.read_exact(&mut bytes)?;
        out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        Ok(())
    }
}

impl SampleSource for Spool {
    fn total_samples(&self) -> usize {
        self.file
            .metadata()
            .map(|m| (m.len() / 4) as usize)
            .unwrap_or(0)
    }

    fn read_into(&mut self, start: usize, end: usize, out: &mut Vec<f32>) -> std::io::Result<()> {
        self.read(start, end, out)
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Where the joined speech's samples lie in the recording: region starts in joined
/// coordinates, for a binary search.
struct SpeechMap {
    regions: Vec<Region>,
    /// `joined[i]`: samples of speech before region i.
    joined: Vec<usize>,
    total: usize,
}

impl SpeechMap {
    fn new(regions: &[Region]) -> Self {
        let mut joined = Vec::with_capacity(regions.len());
        let mut total = 0usize;
        for region in regions {
            joined.push(total);
            total += region.end - region.start;
        }
        Self {
            regions: regions.to_vec(),
            joined,
            total,
        }
    }

    /// A time in the joined speech as a time in the recording; an end that falls on a
    /// boundary stays with the region before it.
    fn to_source(&self, local_secs: f64, is_end: bool) -> f64 {
        let local = (local_secs * SAMPLE_RATE as f64).max(0.0) as usize;
        // The first region whose speech extends past `local` (or reaches it, for an end).
        let index = self.joined.partition_point(|&start| {
            if is_end {
                start < local
            } else {
                start <= local
            }
        });
        let index = index.saturating_sub(1);
        match self.regions.get(index) {
            Some(region) => {
                let offset = local.saturating_sub(self.joined[index]);
                (region.start + offset).min(region.end) as f64 / SAMPLE_RATE as f64
            }
            None => 0.0,
        }
    }
}

/// The speech regions of the scratch file, read as one joined stream.
struct Speech<'a> {
    spool: &'a mut Spool,
    map: SpeechMap,
}

impl<'a> Speech<'a> {
    fn new(spool: &'a mut Spool, regions: &[Region]) -> Self {
        Self {
            spool,
            map: SpeechMap::new(regions),
        }
    }
}

impl crate::asr::transcribe::Samples for Speech<'_> {
    fn len(&self) -> usize {
        self.map.total
    }

    fn read(
        &mut self,
        start: usize,
        end: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), crate::asr::whisper::AsrError> {
        out.clear();
        let first = self
            .map
            .joined
            .partition_point(|&s| s <= start)
            .saturating_sub(1);
        for (i, region) in self.map.regions.iter().enumerate().skip(first) {
            let joined = self.map.joined[i];
            if joined >= end {
                break;
            }
            let from = region.start + start.saturating_sub(joined);
            let to = region.end.min(region.start + (end - joined));
            if from < to {
                self.spool
                    .read(from, to, out)
                    .map_err(|e| crate::asr::whisper::AsrError::Audio(e.to_string()))?;
            }
        }
        Ok(())
    }
}

/// Opens the media again from the start (it is read twice: probe, then decode).
pub type Opener<'a> = dyn FnMut() -> Result<Box<dyn MediaSource>, PipelineError> + 'a;

/// Decodes a file, finds speech, and transcribes it chunk by chunk.
pub fn transcribe_file(
    engine: &mut Engine,
    path: &Path,
    options: &FileOptions,
    progress: &mut dyn FnMut(Stage) -> ControlFlow<()>,
) -> Result<Transcript, PipelineError> {
    process_file(engine, path, options, progress).map(|p| p.transcript)
}

/// As [`transcribe_file`] for any seekable source (a blob from the store, say). `progress`
/// returning `Break` cancels: decoding stops at once, transcription between chunks.
pub fn transcribe_media(
    engine: &mut Engine,
    open: &mut Opener<'_>,
    options: &FileOptions,
    progress: &mut dyn FnMut(Stage) -> ControlFlow<()>,
) -> Result<Transcript, PipelineError> {
    process_media(engine, open, options, progress).map(|p| p.transcript)
}

/// A transcript with what diarization found beyond it.
#[derive(Debug, Clone)]
pub struct Processed {
    pub transcript: Transcript,
    /// Speaker turns and per-speaker centroids (192-d, L2-normalised; for voice profiles).
    /// Empty when diarization was off.
    pub diarization: Diarization,
    /// Peaks for the player's waveform, gathered while decoding.
    pub waveform: crate::media::waveform::Waveform,
}

/// As [`process_media`] for a file on disk.
pub fn process_file(
    engine: &mut Engine,
    path: &Path,
    options: &FileOptions,
    progress: &mut dyn FnMut(Stage) -> ControlFlow<()>,
) -> Result<Processed, PipelineError> {
    let mut opener = file_opener(path);
    process_media(engine, &mut opener, options, progress)
}

fn file_opener(path: &Path) -> impl FnMut() -> Result<Box<dyn MediaSource>, PipelineError> + '_ {
    move || {
        let file = File::open(path).map_err(|e| {
            PipelineError::Media(DecodeError::Io {
                container: "file".to_owned(),
                codec: "unknown".to_owned(),
                source: e,
            })
        })?;
        Ok(Box::new(file) as Box<dyn MediaSource>)
    }
}

/// Decodes to a spool and diarizes it, without transcription (`opentranscribe diarize`).
pub fn diarize_file(
    diarizer: &mut Diarizer,
    path: &Path,
    options: &DiarizeOptions,
    progress: &mut dyn FnMut(Stage) -> ControlFlow<()>,
) -> Result<Diarization, PipelineError> {
    let mut open = file_opener(path);
    diarize_media(diarizer, &mut open, options, progress).map(|(d, _)| d)
}

/// The one decode loop: media to 16 kHz mono f32 in a spool file on disk (memory stays
/// bounded however long the recording), gathering waveform peaks and reporting decode progress
/// against the probed duration; `each` sees every chunk as it passes (the VAD). Returns the
/// spool, the peaks and the number of samples.
fn decode_to_spool(
    open: &mut Opener<'_>,
    progress: &mut dyn FnMut(Stage) -> ControlFlow<()>,
    mut each: impl FnMut(&[f32]) -> Result<(), PipelineError>,
) -> Result<(Spool, crate::media::waveform::PeakAccumulator, usize), PipelineError> {
    let expected_samples = crate::media::probe::probe(open()?)
        .ok()
        .and_then(|info| info.duration_secs)
        .map(|secs| secs * SAMPLE_RATE as f64);
    let spool = Spool::create().map_err(PipelineError::Scratch)?;
    let mut total_samples = 0usize;
    let mut failure: Option<PipelineError> = None;
    let mut peaks = crate::media::waveform::PeakAccumulator::new(SAMPLE_RATE as u32);
    {
        let mut writer = BufWriter::with_capacity(1 << 20, &spool.file);
        decode_to_mono_16k(open()?, SAMPLE_RATE, |chunk| {
            let mut bytes = Vec::with_capacity(chunk.len() * 4);
            for sample in chunk {
                bytes.extend_from_slice(&sample.to_le_bytes());
            }
            if let Err(e) = writer.write_all(&bytes) {
                failure = Some(PipelineError::Scratch(e));
                return ControlFlow::Break(());
            }
            total_samples += chunk.len();
            peaks.push(chunk);
            if let Err(e) = each(chunk) {
                failure = Some(e);
                return ControlFlow::Break(());
            }
            let fraction = expected_samples
                .map(|expected| (total_samples as f64 / expected).min(1.0) as f32)
                .unwrap_or(0.0);
            if progress(Stage::Decode(fraction)).is_break() {
                failure = Some(PipelineError::Cancelled);
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
        writer.flush().map_err(PipelineError::Scratch)?;
    }
    if progress(Stage::Decode(1.0)).is_break() {
        return Err(PipelineError::Cancelled);
    }
    Ok((spool, peaks, total_samples))
}

/// Decodes to a spool (gathering waveform peaks) and diarizes it, without transcription.
pub fn diarize_media(
    diarizer: &mut Diarizer,
    open: &mut Opener<'_>,
    options: &DiarizeOptions,
    progress: &mut dyn FnMut(Stage) -> ControlFlow<()>,
) -> Result<(Diarization, crate::media::waveform::Waveform), PipelineError> {
    options.validate().map_err(PipelineError::Diarize)?;
    let (mut spool, peaks, _) = decode_to_spool(open, progress, |_| Ok(()))?;
    let diarization = diarizer
        .diarize(&mut spool, options, &mut |f| progress(Stage::Diarize(f)))
        .map_err(diarize_error)?;
    Ok((diarization, peaks.finish(crate::media::waveform::MAX_PEAKS)))
}

/// Diarizes again (e.g. with another speaker count) and relabels an existing transcript,
/// without transcribing again. Edited segments keep their text unless a speaker change now
/// falls inside them.
pub fn rediarize_media(
    engine: &mut Engine,
    open: &mut Opener<'_>,
    mut transcript: Transcript,
    options: &FileOptions,
    progress: &mut dyn FnMut(Stage) -> ControlFlow<()>,
) -> Result<Processed, PipelineError> {
    let diarizer = engine
        .diarizer
        .as_mut()
        .map_err(|reason| PipelineError::Model {
            name: "diarization".to_owned(),
            reason: reason.clone(),
        })?;
    let (diarization, waveform) =
        diarize_media(diarizer, open, &options.diarize_options(), progress)?;
    for segment in transcript.segments.iter_mut() {
        segment.speaker = None;
        for word in segment.words.iter_mut() {
            word.speaker = None;
        }
    }
    crate::diarize::assign::label_transcript(&mut transcript, &diarization.turns);
    transcript.speakers = speakers_of(&diarization.speakers);
    Ok(Processed {
        transcript,
        diarization,
        waveform,
    })
}

fn diarize_error(e: DiarizeError) -> PipelineError {
    match e {
        DiarizeError::Cancelled => PipelineError::Cancelled,
        other => PipelineError::Diarize(other),
    }
}

/// Windows per batch for `[jobs] batch_windows`: as configured, or (0) 8 when ONNX Runtime
/// runs on CUDA and 1 (sequential, conditioned windows) on the CPU.
pub fn batch_windows_for(config: &crate::config::Config) -> usize {
    match config.jobs.batch_windows {
        0 => match crate::models::runtime::Runtime::get_or_init(&config.runtime_settings()) {
            Ok(runtime) if runtime.provider == "cuda" => 8,
            _ => 1,
        },
        n => n,
    }
}

/// Decodes, finds speech, transcribes chunk by chunk, then (unless `options.diarize` is off)
/// diarizes and labels every word and segment with its speaker.
pub fn process_media(
    engine: &mut Engine,
    open: &mut Opener<'_>,
    options: &FileOptions,
    progress: &mut dyn FnMut(Stage) -> ControlFlow<()>,
) -> Result<Processed, PipelineError> {
    let diarize_options = options.diarize_options();
    if options.diarize {
        diarize_options.validate().map_err(PipelineError::Diarize)?;
        if let Err(reason) = &engine.diarizer {
            return Err(PipelineError::Model {
                name: "diarization".to_owned(),
                reason: reason.clone(),
            });
        }
    }
    engine.vad.reset();
    let mut probabilities: Vec<f32> = Vec::new();
    let vad = &mut engine.vad;
    let (mut spool, peaks, total_samples) = decode_to_spool(open, progress, |chunk| {
        if !options.no_vad {
            probabilities.extend(vad.process(chunk).map_err(PipelineError::Asr)?);
        }
        Ok(())
    })?;
    if !options.no_vad
        && let Some(p) = engine.vad.finish()?
    {
        probabilities.push(p);
    }
    let duration = total_samples as f64 / SAMPLE_RATE as f64;

    let regions = if options.no_vad {
        vec![Region {
            start: 0,
            end: total_samples,
        }]
    } else {
        speech_regions(&probabilities, total_samples, VadParams::default())
    };
    // As faster-whisper does with its VAD filter: the speech regions are joined (silence left
    // out) and read by Whisper's own sliding 30 s window, each window conditioned on the text
    // before it (a window that needed a high temperature resets that, so a hallucination does
    // not carry on). Without VAD the one region is the whole recording. Windows are read from
    // the scratch file as they are needed.
    let mut speech = Speech::new(&mut spool, &regions);
    let mut prompt = initial_prompt_tokens(&engine.whisper, options.initial_prompt.as_deref());
    let transcribe_options = TranscribeOptions {
        language: options.language.clone(),
        translate: options.translate,
        condition_on_previous_text: true,
    };
    let decoding = DecodingOptions {
        beam_size: options.beam_size.max(1),
        hotwords: options.hotwords.clone(),
        ..DecodingOptions::default()
    };
    let result = if options.batch_windows > 1 {
        // Throughput mode: windows cut where the speech regions join (a region longer than a
        // window at its quietest moment before 30 s), decoded in batches.
        let pieces = if options.no_vad {
            regions.clone()
        } else {
            crate::asr::vad::split_long_regions(
                &regions,
                &probabilities,
                crate::asr::mel::CHUNK_SAMPLES,
                10 * SAMPLE_RATE,
            )
        };
        let lengths: Vec<usize> = pieces.iter().map(|r| r.end - r.start).collect();
        let windows = crate::asr::batched::plan_windows(&lengths, crate::asr::mel::CHUNK_SAMPLES);
        crate::asr::batched::transcribe_windows(
            &mut engine.whisper,
            &mut speech,
            &windows,
            &transcribe_options,
            &decoding,
            &prompt,
            options.batch_windows,
            &mut |fraction| progress(Stage::Transcribe(fraction.min(1.0))),
        )
    } else {
        transcribe_continuing(
            &mut engine.whisper,
            &mut speech,
            &transcribe_options,
            &decoding,
            &mut prompt,
            &mut |fraction| progress(Stage::Transcribe(fraction.min(1.0))),
        )
    }
    .map_err(|e| match e {
        crate::asr::whisper::AsrError::Cancelled => PipelineError::Cancelled,
        other => PipelineError::Asr(other),
    })?;
    let language = result.language.clone();
    let map = speech.map;
    let mut segments: Vec<Segment> = Vec::with_capacity(result.segments.len());
    for segment in result.segments {
        let start = map.to_source(segment.start, false);
        let end = map.to_source(segment.end, true).max(start);
        let words = segment
            .words
            .iter()
            .map(|w| Word {
                start: map.to_source(w.start, false),
                end: map.to_source(w.end, true),
                text: w.text.clone(),
                probability: w.probability,
                speaker: None,
            })
            .collect();
        segments.push(Segment {
            id: segments.len(),
            start,
            end,
            speaker: None,
            text: segment.text,
            words,
            edited: false,
            original_text: None,
        });
    }
    if progress(Stage::Transcribe(1.0)).is_break() {
        return Err(PipelineError::Cancelled);
    }
    let mut transcript = Transcript {
        language,
        duration,
        speakers: Vec::new(),
        segments,
    };
    let mut diarization = Diarization::default();
    if options.diarize
        && let Ok(diarizer) = engine.diarizer.as_mut()
    {
        diarization = diarizer
            .diarize(&mut spool, &diarize_options, &mut |f| {
                progress(Stage::Diarize(f))
            })
            .map_err(diarize_error)?;
        crate::diarize::assign::label_transcript(&mut transcript, &diarization.turns);
        transcript.speakers = speakers_of(&diarization.speakers);
    }
    Ok(Processed {
        transcript,
        diarization,
        waveform: peaks.finish(crate::media::waveform::MAX_PEAKS),
    })
}

fn speakers_of(speakers: &[SpeakerInfo]) -> Vec<Speaker> {
    speakers
        .iter()
        .map(|s| Speaker {
            id: s.id.clone(),
            label: s.id.clone(),
            name: None,
            ..Speaker::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_times_map_back_across_regions() {
        let regions = [
            Region {
                start: 16_000,
                end: 32_000,
            },
            Region {
                start: 80_000,
                end: 96_000,
            },
        ];
        let map = SpeechMap::new(&regions);
        assert!((map.to_source(0.5, false) - 1.5).abs() < 1e-9);
        assert!((map.to_source(1.0, true) - 2.0).abs() < 1e-9);
        assert!((map.to_source(1.0, false) - 5.0).abs() < 1e-9);
        assert!((map.to_source(1.5, false) - 5.5).abs() < 1e-9);
        assert!((map.to_source(9.0, true) - 6.0).abs() < 1e-9);
        assert!((map.to_source(0.0, true) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn joined_speech_reads_across_regions_from_the_scratch_file() {
        use crate::asr::transcribe::Samples;
        let mut spool = Spool::create().unwrap();
        let bytes: Vec<u8> = (0..100u32).flat_map(|i| (i as f32).to_le_bytes()).collect();
        spool.file.write_all(&bytes).unwrap();
        let regions = [
            Region { start: 10, end: 20 },
            Region { start: 50, end: 55 },
            Region {
                start: 90,
                end: 100,
            },
        ];
        let mut speech = Speech::new(&mut spool, &regions);
        assert_eq!(speech.len(), 25);
        let mut out = vec![-1.0];
        speech.read(8, 17, &mut out).unwrap();
        let want: Vec<f32> = [18, 19, 50, 51, 52, 53, 54, 90, 91]
            .iter()
            .map(|&v| v as f32)
            .collect();
        assert_eq!(out, want);
        speech.read(0, 25, &mut out).unwrap();
        assert_eq!(out.len(), 25);
        assert_eq!(out[24], 99.0);
    }
}
