//! What the store fails with, in the store's own words: no HTTP status and no API code here.
//! The one conversion to the service's error codes is `From<StoreError> for crate::error::Error`
//! in src/error.rs.

/// A store failure. `Db` is a server-side fault (its cause is logged, never sent); every other
/// variant is a refusal the caller can explain to a person.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb, the filesystem under it, or a record that does not decode.
    #[error("{0}")]
    Db(String),
    /// The record (a file, collection, profile, speaker, user) does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("username `{0}` is taken")]
    UsernameTaken(String),
    #[error("registration is closed; ask an administrator for an account")]
    RegistrationClosed,
    /// The user may see the file but needs a higher role (the name of the role needed).
    #[error("this needs {0} access to the file")]
    AccessTooLow(&'static str),
    #[error("{0}")]
    NotCancellable(String),
    #[error("{0}")]
    NotRetryable(String),
    #[error("{0}")]
    TranscriptNotReady(&'static str),
    #[error(
        "this speaker has no voice sample (the file was transcribed without speaker detection)"
    )]
    NoVoice,
    /// Retention deleted the file's media; the transcript is all that is left.
    #[error("the media of this file was deleted by retention; its transcript is kept")]
    MediaDeleted,
    #[error("the speaker has no profile")]
    NotAssigned,
    #[error("the speaker has no suggestion")]
    NoSuggestion,
    /// A request the store cannot carry out as asked (e.g. merging a speaker into itself).
    #[error("{0}")]
    Invalid(&'static str),
    /// Another process holds the database (offline backup of a running daemon's file).
    #[error("{0}")]
    DatabaseBusy(String),
    /// The file was written by a newer release.
    #[error("{0}")]
    DatabaseTooNew(String),
    #[error("{0}")]
    BackupExists(String),
    /// A backup would miss tables this release does not know.
    #[error("{0}")]
    BackupIncomplete(String),
    /// An internal rule was broken (a bug, not bad input).
    #[error("{0}")]
    Invariant(&'static str),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;
