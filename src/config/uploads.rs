//! The `[uploads]` section: resumable upload sessions (`/api/uploads`) and browser recordings.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadsConfig {
    /// Hours an unfinished upload session is kept after its last chunk; then housekeeping
    /// removes it and its partial data (a finished one is forgotten after the same time).
    pub session_expiry_hours: u64,
    /// Seconds without a chunk after which a browser recording (kind `recording`) is
    /// completed by the daemon with what it received (the tab was closed).
    pub recording_idle_secs: u64,
}

impl Default for UploadsConfig {
    fn default() -> Self {
        Self {
            session_expiry_hours: 24,
            recording_idle_secs: 120,
        }
    }
}

impl UploadsConfig {
    /// Checks values that parse but make no sense; returns the key and why.
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.session_expiry_hours == 0 {
            return Err(("uploads.session_expiry_hours", "must be greater than 0"));
        }
        if self.recording_idle_secs < 10 {
            return Err(("uploads.recording_idle_secs", "must be at least 10"));
        }
        Ok(())
    }
}
