//! The stages that turn one media file into a transcript. Blocking; the daemon runs them on
//! worker threads and the CLI runs them directly.

use std::ops::ControlFlow;
use std::path::Path;

use crate::asr::transcribe::{TranscribeOptions, transcribe};
use crate::asr::whisper::WhisperModel;
use crate::config::Config;
use crate::media::decode::{DecodeError, decode_to_mono_16k};
use crate::models::cache::{Depth, ModelCache};
use crate::models::runtime::Runtime;
use crate::transcript::Transcript;

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
            PipelineError::Cancelled => "cancelled",
        }
    }
}

/// Progress of a file through the stages, for progress bars and WebSocket events.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stage {
    Decode(f32),
    Transcribe(f32),
}

#[derive(Debug, Clone)]
pub struct FileOptions {
    pub model: String,
    pub language: Option<String>,
    pub translate: bool,
    pub quantized: bool,
}

impl Default for FileOptions {
    fn default() -> Self {
        Self {
            model: "whisper-base".to_owned(),
            language: None,
            translate: false,
            quantized: false,
        }
    }
}

/// Loads an ASR model from the cache after checking its files.
pub fn load_asr_model(
    config: &Config,
    name: &str,
    quantized: bool,
) -> Result<WhisperModel, PipelineError> {
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
    let runtime = Runtime::get_or_init(&config.runtime_settings())?;
    Ok(WhisperModel::load(
        &runtime, &model.dir, &manifest, quantized,
    )?)
}

/// Decodes a file to 16 kHz mono and transcribes it.
pub fn transcribe_file(
    model: &mut WhisperModel,
    path: &Path,
    options: &FileOptions,
    progress: &mut dyn FnMut(Stage),
) -> Result<Transcript, PipelineError> {
    let file = std::fs::File::open(path).map_err(|e| {
        PipelineError::Media(DecodeError::Io {
            container: "file".to_owned(),
            codec: "unknown".to_owned(),
            source: e,
        })
    })?;
    let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut samples: Vec<f32> = Vec::new();
    let (info, _report) = decode_to_mono_16k(Box::new(file), 16_000, |chunk| {
        samples.extend_from_slice(chunk);
        ControlFlow::Continue(())
    })?;
    let _ = total_bytes;
    progress(Stage::Decode(1.0));
    tracing::debug!(container = %info.container, codec = %info.codec, "decoded");
    let transcribe_options = TranscribeOptions {
        language: options.language.clone(),
        translate: options.translate,
        condition_on_previous_text: true,
    };
    let transcript = transcribe(model, &samples, &transcribe_options, &mut |fraction| {
        progress(Stage::Transcribe(fraction))
    })?;
    Ok(Transcript::from(transcript))
}
