//! Model manifests: what a model directory holds, where it came from, and what the engine needs.

use std::path::Path;

use serde::{Deserialize, Serialize};

pub const MANIFEST_FILE: &str = "manifest.json";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelKind {
    Runtime,
    Asr,
    Vad,
    Segmentation,
    SpeakerEmbedding,
    TextEmbedding,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Runtime => "runtime",
            ModelKind::Asr => "asr",
            ModelKind::Vad => "vad",
            ModelKind::Segmentation => "segmentation",
            ModelKind::SpeakerEmbedding => "speaker-embedding",
            ModelKind::TextEmbedding => "text-embedding",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub name: String,
    pub kind: ModelKind,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub license: String,
    pub files: Vec<ManifestFile>,
    #[serde(default)]
    pub parameters: serde_json::Value,
}

/// The directory name that holds ONNX Runtime in a cache.
pub const RUNTIME_DIR: &str = "onnxruntime";

/// The models `scripts/fetch-models` builds, by cache name.
pub const DEFAULT_MODELS: &[(&str, ModelKind)] = &[
    (RUNTIME_DIR, ModelKind::Runtime),
    ("whisper-base", ModelKind::Asr),
    ("whisper-tiny.en", ModelKind::Asr),
    ("silero-vad", ModelKind::Vad),
    ("pyannote-segmentation-3.0", ModelKind::Segmentation),
    ("campplus-zh-en", ModelKind::SpeakerEmbedding),
    ("minilm-l6-v2", ModelKind::TextEmbedding),
];

/// What the daemon needs before it reports ready.
pub const REQUIRED_MODELS: &[&str] = &[
    RUNTIME_DIR,
    "whisper-base",
    "silero-vad",
    "pyannote-segmentation-3.0",
    "campplus-zh-en",
    "minilm-l6-v2",
];

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// A model or file name is a single plain path component.
pub fn is_safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name != "."
        && name != ".."
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// A file path inside a model directory: relative, made of safe components.
pub fn is_safe_relative_path(path: &str) -> bool {
    !path.is_empty() && path.split('/').all(is_safe_name)
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Self, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| ManifestError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| ManifestError::Invalid {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
        manifest.validate(&path.display().to_string())?;
        Ok(manifest)
    }

    pub fn validate(&self, origin: &str) -> Result<(), ManifestError> {
        let fail = |reason: String| {
            Err(ManifestError::Invalid {
                path: origin.to_owned(),
                reason,
            })
        };
        if self.format_version != FORMAT_VERSION {
            return fail(format!(
                "format_version {} is not supported (expected {FORMAT_VERSION})",
                self.format_version
            ));
        }
        if !is_safe_name(&self.name) {
            return fail(format!("invalid model name `{}`", self.name));
        }
        if self.files.is_empty() {
            return fail("lists no files".to_owned());
        }
        for file in &self.files {
            if !is_safe_relative_path(&file.path) || file.path == MANIFEST_FILE {
                return fail(format!("invalid file path `{}`", file.path));
            }
            if file.sha256.len() != 64 || !file.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                return fail(format!("invalid sha256 for `{}`", file.path));
            }
        }
        Ok(())
    }

    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// A string parameter, e.g. the runtime's `library`.
    pub fn parameter_str(&self, key: &str) -> Option<&str> {
        self.parameters.get(key).and_then(|v| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths() {
        assert!(is_safe_name("whisper-tiny.en"));
        assert!(is_safe_name("pyannote-segmentation-3.0"));
        assert!(!is_safe_name(".."));
        assert!(!is_safe_name(".hidden"));
        assert!(!is_safe_name("a/b"));
        assert!(!is_safe_name(""));
        assert!(is_safe_relative_path("onnx/model.onnx"));
        assert!(!is_safe_relative_path("../model.onnx"));
        assert!(!is_safe_relative_path("/etc/passwd"));
        assert!(!is_safe_relative_path("a//b"));
    }
}
