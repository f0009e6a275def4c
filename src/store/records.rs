//! Records kept in redb, encoded as JSON values so fields can be added without a migration.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "admin" => Some(Role::Admin),
            "user" => Some(Role::User),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: String,
    pub username: String,
    /// PHC string of an argon2id hash.
    pub password_hash: String,
    pub role: Role,
    #[serde(default)]
    pub disabled: bool,
    pub created_at: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub user_id: String,
    pub created_at: u64,
    pub last_seen_at: u64,
    /// Sent back by the browser in `X-CSRF-Token` on unsafe requests made with the cookie.
    pub csrf_token: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiTokenRecord {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub created_at: u64,
    #[serde(default)]
    pub last_used_at: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadOptions {
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub num_speakers: Option<u32>,
    #[serde(default)]
    pub min_speakers: Option<u32>,
    #[serde(default)]
    pub max_speakers: Option<u32>,
    #[serde(default = "default_true")]
    pub diarize: bool,
    /// Queue order: 1 (high) before 5 (normal) before 9 (low); equal ones run oldest first.
    #[serde(default = "default_priority")]
    pub priority: u8,
}

fn default_priority() -> u8 {
    5
}

impl Default for UploadOptions {
    fn default() -> Self {
        Self {
            language: None,
            num_speakers: None,
            min_speakers: None,
            max_speakers: None,
            diarize: true,
            priority: default_priority(),
        }
    }
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    pub id: String,
    pub owner_id: String,
    pub filename: String,
    pub size: u64,
    pub sha256: String,
    /// MIME type decided by sniffing the content, e.g. `audio/wav`.
    pub media_type: String,
    /// queued | processing | completed | error | cancelled
    pub status: String,
    #[serde(default)]
    pub progress: f32,
    pub created_at: u64,
    #[serde(default)]
    pub updated_at: u64,
    #[serde(default)]
    pub options: UploadOptions,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub duration_secs: Option<f64>,
    #[serde(default)]
    pub container: Option<String>,
    #[serde(default)]
    pub codec: Option<String>,
    /// The owner's labels, lower-cased, sorted, unique.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// The processing job of one file. Lives in `jobs` for the file's lifetime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub file_id: String,
    pub owner_id: String,
    /// queued | running | done | failed | cancelled
    pub state: String,
    pub attempts: u32,
    /// While running: the worker must renew its lease before this time, or the job is retaken.
    pub lease_until: u64,
    /// A queued job does not run before this time (retry backoff).
    pub not_before: u64,
    pub stage: String,
    pub progress: f32,
    pub created_at: u64,
    pub updated_at: u64,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub cancel_requested: bool,
    /// Key of this job in the `queue` table while queued.
    pub queue_key: String,
    /// Lower runs first.
    #[serde(default)]
    pub priority: u8,
    /// Empty: the whole pipeline. `["diarize"]`: diarize again and relabel the existing
    /// transcript (speaker counts may have changed), without transcribing again.
    #[serde(default)]
    pub reprocess: Vec<String>,
    /// Seconds each stage took in the last completed run, in order (`decode`, `transcribe`,
    /// `diarize`, `match`).
    #[serde(default)]
    pub stage_seconds: Vec<(String, f64)>,
}

/// What a user may do with a file: see it, also edit its transcript, or everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    Viewer,
    Editor,
    Owner,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Viewer => "viewer",
            Access::Editor => "editor",
            Access::Owner => "owner",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "viewer" => Some(Access::Viewer),
            "editor" => Some(Access::Editor),
            "owner" => Some(Access::Owner),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Share {
    pub user_id: String,
    /// `viewer` or `editor`.
    pub role: Access,
}

/// A named set of files that its owner can share with other users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionRecord {
    pub id: String,
    pub owner_id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub created_at: u64,
    #[serde(default)]
    pub shares: Vec<Share>,
}

/// A note pinned to a moment of a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommentRecord {
    pub id: String,
    pub file_id: String,
    pub user_id: String,
    /// Seconds into the media.
    pub time: f64,
    pub text: String,
    pub created_at: u64,
}
