//! The `[notify]` section: the site-wide signed webhook fired when a job completes or fails.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The site webhook. Users configure their own through `/api/account/webhook`; these settings
/// also bound every delivery (timeout, attempts, history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// `https://…` or `http://…` URL that receives every job's completion or failure; empty
    /// turns the site webhook off.
    pub webhook_url: String,
    /// File holding the signing secret (one line; mode 0600, refused otherwise).
    pub webhook_secret_file: String,
    /// Seconds one delivery attempt may take, connection included.
    pub webhook_timeout_secs: u64,
    /// Attempts per delivery (the first included) before it is given up.
    pub webhook_max_attempts: u32,
    /// Days delivery records are kept, for `GET /api/account/webhook/deliveries`.
    pub webhook_history_days: u64,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        Self {
            webhook_url: String::new(),
            webhook_secret_file: String::new(),
            webhook_timeout_secs: 10,
            webhook_max_attempts: 6,
            webhook_history_days: 7,
        }
    }
}

/// Why the site webhook's secret cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    #[error("cannot read secret file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "secret file {path} has mode {mode:04o}; it must be 0600 (chmod 600 {path}) so that only the daemon's user can read the secret"
    )]
    Mode { path: String, mode: u32 },
    #[error("secret file {path} is empty")]
    Empty { path: String },
}

impl NotifyConfig {
    /// Checks values that parse but make no sense; returns the key and why.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if !self.webhook_url.is_empty() {
            let lower = self.webhook_url.to_ascii_lowercase();
            if !(lower.starts_with("https://") || lower.starts_with("http://")) {
                return Err(("notify.webhook_url", "must start with https:// or http://"));
            }
            if self.webhook_secret_file.is_empty() {
                return Err((
                    "notify.webhook_secret_file",
                    "a site webhook needs a secret file (mode 0600) to sign with",
                ));
            }
        }
        if self.webhook_timeout_secs == 0 {
            return Err(("notify.webhook_timeout_secs", "must be greater than 0"));
        }
        if !(1..=20).contains(&self.webhook_max_attempts) {
            return Err(("notify.webhook_max_attempts", "must lie in 1..=20"));
        }
        Ok(())
    }

    /// Reads the site webhook's secret: the file must be a regular file of mode 0600, and its
    /// first line (trimmed) is the secret.
    pub fn read_secret(&self) -> Result<String, SecretFileError> {
        read_secret_file(Path::new(&self.webhook_secret_file))
    }
}

pub(crate) fn read_secret_file(path: &Path) -> Result<String, SecretFileError> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display().to_string();
    let read_error = |source| SecretFileError::Read {
        path: shown.clone(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_error)?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode != 0o600 {
        return Err(SecretFileError::Mode { path: shown, mode });
    }
    let text = std::fs::read_to_string(path).map_err(read_error)?;
    let secret = text.lines().next().unwrap_or("").trim().to_owned();
    if secret.is_empty() {
        return Err(SecretFileError::Empty { path: shown });
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_file_must_be_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ot-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("secret");
        std::fs::write(&file, "s3cret\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_secret_file(&file).unwrap_err().to_string();
        assert!(err.contains("0644") && err.contains("0600"), "{err}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_file(&file).unwrap(), "s3cret");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_site_webhook_needs_a_secret_file() {
        let config = NotifyConfig {
            webhook_url: "https://example.test/hook".to_owned(),
            ..NotifyConfig::default()
        };
        assert_eq!(config.check().unwrap_err().0, "notify.webhook_secret_file");
        let config = NotifyConfig {
            webhook_url: "ftp://x".to_owned(),
            ..NotifyConfig::default()
        };
        assert_eq!(config.check().unwrap_err().0, "notify.webhook_url");
    }
}
