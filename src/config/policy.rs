//! The `[audit]` and `[retention]` sections: how long the audit log is kept, and the site-wide
//! retention rule applied to every user's files by the daemon's housekeeping.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// Days audit entries are kept; 0 keeps them for ever.
    pub keep_days: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { keep_days: 365 }
    }
}

/// The site-wide rule; 0 turns a part off. A user's own rule, where stricter, wins.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Days after upload when a file's media is deleted (its transcript stays).
    pub media_days: u64,
    /// Days after upload when the whole file (media, transcript, comments) is deleted.
    pub transcript_days: u64,
}
