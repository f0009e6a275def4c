//! The `[llm]` section: the site's own OpenAI-compatible model server (llama.cpp server, Ollama,
//! vLLM) used for summaries and questions about a transcript. Off by default.

use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// Turns summaries and "ask this transcript" on.
    pub enabled: bool,
    /// Base URL of the OpenAI-compatible API, up to `/v1`: `{base_url}/chat/completions`.
    pub base_url: String,
    /// Model name sent with every request.
    pub model: String,
    /// Optional file holding the API key (first line; mode 0600, refused otherwise), sent as
    /// `Authorization: Bearer …`. Empty sends no key.
    pub key_file: String,
    /// Seconds one request may take, connection included.
    pub timeout_secs: u64,
    /// The model's context window in tokens; prompts are cut to fit it with the answer.
    pub context_tokens: usize,
    /// Most tokens asked for in one answer.
    pub max_output_tokens: usize,
    /// Summarise every file when its transcription completes (as its owner, with the owner's
    /// prompt templates), as a follow-on stage of the job; off: only on request.
    pub summarize_completed: bool,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            base_url: "http://127.0.0.1:8080/v1".to_owned(),
            model: "local".to_owned(),
            key_file: String::new(),
            timeout_secs: 120,
            context_tokens: 8192,
            max_output_tokens: 1024,
            summarize_completed: false,
        }
    }
}

/// Why the key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read llm.key_file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "llm.key_file {path} has mode {mode:04o}; it must be 0600 (chmod 600 {path}) so that only the daemon's user can read the key"
    )]
    Mode { path: String, mode: u32 },
    #[error("llm.key_file {path} is empty")]
    Empty { path: String },
}

impl LlmConfig {
    /// Checks values that parse but make no sense; returns the key and why.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if !self.enabled {
            return Ok(());
        }
        let lower = self.base_url.to_ascii_lowercase();
        if !(lower.starts_with("https://") || lower.starts_with("http://")) {
            return Err(("llm.base_url", "must start with https:// or http://"));
        }
        if self.model.trim().is_empty() {
            return Err(("llm.model", "must not be empty"));
        }
        if self.timeout_secs == 0 {
            return Err(("llm.timeout_secs", "must be greater than 0"));
        }
        if !(256..=1_048_576).contains(&self.context_tokens) {
            return Err(("llm.context_tokens", "must lie in 256..=1048576"));
        }
        if self.max_output_tokens < 16 || self.max_output_tokens * 2 > self.context_tokens {
            return Err((
                "llm.max_output_tokens",
                "must be at least 16 and at most half of llm.context_tokens",
            ));
        }
        Ok(())
    }

    /// The API key, when a key file is set: a regular file of mode 0600, first line trimmed.
    pub fn read_key(&self) -> Result<Option<String>, KeyFileError> {
        if self.key_file.is_empty() {
            return Ok(None);
        }
        read_key_file(Path::new(&self.key_file)).map(Some)
    }
}

fn read_key_file(path: &Path) -> Result<String, KeyFileError> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display().to_string();
    let read_error = |source| KeyFileError::Read {
        path: shown.clone(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_error)?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode != 0o600 {
        return Err(KeyFileError::Mode { path: shown, mode });
    }
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    let key = text.lines().next().unwrap_or("").trim().to_owned();
    if key.is_empty() {
        return Err(KeyFileError::Empty { path: shown });
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_must_be_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ot-llm-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key");
        std::fs::write(&file, "sk-local\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = read_key_file(&file).unwrap_err().to_string();
        assert!(err.contains("0640") && err.contains("0600"), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_key_file(&file).unwrap(), "sk-local");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn an_enabled_llm_needs_sane_settings() {
        assert!(LlmConfig::default().check().is_ok());
        let on = LlmConfig {
            enabled: true,
            ..LlmConfig::default()
        };
        assert!(on.check().is_ok());
        let bad_url = LlmConfig {
            base_url: "ftp://x".to_owned(),
            ..on.clone()
        };
        assert_eq!(bad_url.check().unwrap_err().0, "llm.base_url");
        let too_much = LlmConfig {
            max_output_tokens: 5000,
            ..on
        };
        assert_eq!(too_much.check().unwrap_err().0, "llm.max_output_tokens");
    }
}
