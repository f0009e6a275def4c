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
    /// The TOTP second factor: pending (set up, not confirmed) or enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totp: Option<TotpRecord>,
    /// Set for an account that signs in through a directory (LDAP, OIDC); its password hash
    /// is then unusable and the directory decides its role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<DirectoryLink>,
}

impl UserRecord {
    /// True when a TOTP code is needed after the password.
    pub fn totp_enabled(&self) -> bool {
        self.totp.as_ref().is_some_and(|t| t.enabled)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TotpRecord {
    /// The shared secret, base32.
    pub secret: String,
    /// False between setup and confirmation.
    pub enabled: bool,
    /// The last step whose code was accepted; codes of this step or earlier are refused.
    #[serde(default)]
    pub last_step: Option<u64>,
    /// argon2id PHC hashes of the unused recovery codes.
    #[serde(default)]
    pub recovery_hashes: Vec<String>,
    pub created_at: u64,
}

/// The directory an account came from, and its identity there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectoryLink {
    /// `ldap` or `oidc`.
    pub kind: String,
    /// The entry's DN (LDAP) or `issuer#sub` (OIDC).
    pub subject: String,
    /// The account was disabled because the directory's groups no longer allow it (lifted
    /// again when they do; an administrator's own disable is kept).
    #[serde(default)]
    pub disabled_by_directory: bool,
}

/// How far a session got through sign-in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionStage {
    /// Signed in.
    #[default]
    Full,
    /// The password was right; the TOTP code is still due. Never a credential: only the
    /// second sign-in step redeems it, within `SECOND_FACTOR_SECS`.
    SecondFactor,
    /// Signed in, but TOTP is required and not set up: only enrolment routes are open.
    Enrol,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub user_id: String,
    pub created_at: u64,
    pub last_seen_at: u64,
    /// Sent back by the browser in `X-CSRF-Token` on unsafe requests made with the cookie.
    pub csrf_token: String,
    #[serde(default, skip_serializing_if = "is_full")]
    pub stage: SessionStage,
}

fn is_full(stage: &SessionStage) -> bool {
    *stage == SessionStage::Full
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
    /// The speech-recognition model asked for; `None` runs the configured `jobs.model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Translate the speech into English instead of transcribing it (Whisper's `translate` task).
    #[serde(default)]
    pub translate: bool,
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
            model: None,
            translate: false,
        }
    }
}

fn default_true() -> bool {
    true
}

/// Where a file is, as users see it. Stored and sent as the lower-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    Queued,
    Processing,
    Completed,
    Error,
    Cancelled,
}

impl FileStatus {
    pub const ALL: [FileStatus; 5] = [
        FileStatus::Queued,
        FileStatus::Processing,
        FileStatus::Completed,
        FileStatus::Error,
        FileStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FileStatus::Queued => "queued",
            FileStatus::Processing => "processing",
            FileStatus::Completed => "completed",
            FileStatus::Error => "error",
            FileStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// No job runs or waits for the file.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            FileStatus::Completed | FileStatus::Error | FileStatus::Cancelled
        )
    }
}

impl std::fmt::Display for FileStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a file's job is. Stored as the lower-case name. Each state has exactly one file
/// status ([`JobState::file_status`]): the two change together, through [`JobRecord::set_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Done,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// The file's status while its job is in this state.
    pub fn file_status(self) -> FileStatus {
        match self {
            JobState::Queued => FileStatus::Queued,
            JobState::Running => FileStatus::Processing,
            JobState::Done => FileStatus::Completed,
            JobState::Failed => FileStatus::Error,
            JobState::Cancelled => FileStatus::Cancelled,
        }
    }

    /// The job has ended (its record stays as history).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Done | JobState::Failed | JobState::Cancelled
        )
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
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
    pub status: FileStatus,
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
    /// When retention deleted the media (the record and transcript stay; media routes answer
    /// 410 `media-deleted`). The blob reference was dropped then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_deleted_at: Option<u64>,
}

/// The processing job of one file. Lives in `jobs` for the file's lifetime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub file_id: String,
    pub owner_id: String,
    pub state: JobState,
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

impl JobRecord {
    /// Moves the job to `state` and its file to the matching status, together.
    pub fn set_state(&mut self, file: &mut FileRecord, state: JobState) {
        self.state = state;
        file.status = state.file_status();
    }
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
    /// Files in this collection are kept whatever the retention rules say.
    #[serde(default)]
    pub retention_exempt: bool,
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

#[cfg(test)]
mod state_tests {
    use super::*;

    /// The enums are stored and sent as the strings the records always held: no migration.
    #[test]
    fn states_serialise_to_the_old_strings_and_read_them_back() {
        for state in JobState::ALL {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(serde_json::from_str::<JobState>(&json).unwrap(), state);
        }
        for status in FileStatus::ALL {
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
            assert_eq!(FileStatus::parse(status.as_str()), Some(status));
        }
        let names: Vec<&str> = FileStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            ["queued", "processing", "completed", "error", "cancelled"]
        );
        let jobs: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(jobs, ["queued", "running", "done", "failed", "cancelled"]);
        // Every job state has its one file status.
        assert_eq!(JobState::Running.file_status(), FileStatus::Processing);
        assert_eq!(JobState::Done.file_status(), FileStatus::Completed);
        assert_eq!(JobState::Failed.file_status(), FileStatus::Error);
        assert!(serde_json::from_str::<JobState>("\"processing\"").is_err());
    }
}
