//! Error codes of the whole service and the one table that maps them to HTTP status.

use std::fmt;

/// A failure that can reach a user: a stable kebab-case code, a message written for people,
/// and, for server-side failures, the cause that is logged but never sent.
#[derive(Debug)]
pub struct Error {
    pub code: &'static str,
    pub message: String,
    pub internal_cause: Option<String>,
    /// Seconds a client should wait before retrying (login throttling).
    pub retry_after_secs: Option<u64>,
    /// The offset an upload session really has, sent with `upload-offset-mismatch` (and any
    /// other upload refusal) as the `Upload-Offset` header and an `offset` field.
    pub upload_offset: Option<u64>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            internal_cause: None,
            retry_after_secs: None,
            upload_offset: None,
        }
    }

    /// A server-side failure: the cause is kept for the log, the client sees a generic message.
    pub fn internal(code: &'static str, cause: impl fmt::Display) -> Self {
        Self {
            code,
            message: "internal error".to_owned(),
            internal_cause: Some(cause.to_string()),
            retry_after_secs: None,
            upload_offset: None,
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::new("not-found", format!("{what} not found"))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new("bad-request", message)
    }

    /// The message with the internal cause, for a log line or a CLI error (never for clients).
    pub fn message_for_log(&self) -> String {
        match &self.internal_cause {
            Some(cause) => cause.clone(),
            None => self.message.clone(),
        }
    }

    pub fn with_upload_offset(mut self, offset: u64) -> Self {
        self.upload_offset = Some(offset);
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// The HTTP status for this error's code.
    pub fn http_status(&self) -> u16 {
        http_status_for_code(self.code)
    }

    pub fn is_server_error(&self) -> bool {
        self.http_status() >= 500
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.internal_cause {
            Some(cause) => write!(f, "{}: {}", self.code, cause),
            None => write!(f, "{}", self.message),
        }
    }
}

impl std::error::Error for Error {}

/// The one table of codes and their HTTP status. Codes not listed are server errors.
pub const CODE_STATUS: &[(&str, u16)] = &[
    ("bad-request", 400),
    ("invalid-json", 400),
    ("invalid-username", 400),
    ("weak-password", 400),
    ("invalid-multipart", 400),
    ("missing-file", 400),
    ("invalid-range", 416),
    ("unauthorized", 401),
    ("invalid-credentials", 401),
    ("session-expired", 401),
    ("invalid-totp-code", 401),
    ("totp-challenge-invalid", 401),
    ("totp-enrolment-required", 403),
    ("totp-already-enabled", 409),
    ("totp-not-set-up", 409),
    ("totp-not-available", 409),
    ("directory-access-denied", 403),
    ("directory-unavailable", 503),
    ("oidc-failed", 401),
    ("forbidden", 403),
    ("csrf-failed", 403),
    ("account-disabled", 403),
    ("registration-closed", 403),
    ("not-found", 404),
    ("username-taken", 409),
    ("conflict", 409),
    ("not-cancellable", 409),
    ("not-retryable", 409),
    ("transcript-not-ready", 409),
    ("cancelled", 409),
    ("upload-offset-mismatch", 409),
    ("upload-busy", 409),
    ("upload-incomplete", 409),
    ("upload-finished", 409),
    ("file-deleted", 410),
    ("media-deleted", 410),
    ("transcription-failed", 422),
    ("no-speaker-embedding", 409),
    ("not-assigned", 409),
    ("no-suggestion", 409),
    ("invalid-speakers", 400),
    ("invalid-webhook", 400),
    ("search-query", 400),
    ("search-request", 400),
    ("search-semantic-unavailable", 503),
    ("llm-not-configured", 409),
    ("llm-unavailable", 502),
    ("llm-timeout", 504),
    ("llm-bad-output", 502),
    ("invalid-prompt", 400),
    ("invalid-question", 400),
    ("payload-too-large", 413),
    ("request-timeout", 408),
    ("method-not-allowed", 405),
    ("upgrade-required", 426),
    ("unsupported-media", 415),
    ("too-many-attempts", 429),
    ("internal", 500),
    ("store", 500),
    ("blob-io", 500),
    ("blob-corrupt", 500),
    ("blob-key", 500),
    ("blob-not-found", 404),
    ("tls-cert", 500),
    ("tls-key", 500),
    ("tls-io", 500),
    ("not-ready", 503),
    ("disk-full", 507),
    // Operations (CLI, admin socket, start-up): what an operator sees, never a client.
    ("database-busy", 503),
    ("database-too-new", 500),
    ("backup", 500),
    ("backup-exists", 409),
    ("backup-incomplete", 500),
    ("search-index", 500),
    ("watch-io", 500),
    ("notify-secret-file", 500),
    ("llm-key-file", 500),
];

pub fn http_status_for_code(code: &str) -> u16 {
    CODE_STATUS
        .iter()
        .find(|(known, _)| *known == code)
        .map(|(_, status)| *status)
        .unwrap_or(500)
}

/// Store failures as the API shows them: the one place that gives them codes (and so statuses).
impl From<crate::store::StoreError> for Error {
    fn from(error: crate::store::StoreError) -> Self {
        use crate::store::StoreError as S;
        let message = error.to_string();
        match error {
            S::Db(cause) => Error::internal("store", cause),
            S::NotFound(what) => Error::not_found(what),
            S::UsernameTaken(_) => Error::new("username-taken", message),
            S::RegistrationClosed => Error::new("registration-closed", message),
            S::AccessTooLow(_) => Error::new("forbidden", message),
            S::NotCancellable(_) => Error::new("not-cancellable", message),
            S::NotRetryable(_) => Error::new("not-retryable", message),
            S::TranscriptNotReady(_) => Error::new("transcript-not-ready", message),
            S::NoVoice => Error::new("no-speaker-embedding", message),
            S::NotAssigned => Error::new("not-assigned", message),
            S::NoSuggestion => Error::new("no-suggestion", message),
            S::MediaDeleted => Error::new("media-deleted", message),
            S::Invalid(_) => Error::new("bad-request", message),
            S::DatabaseBusy(_) => Error::new("database-busy", message),
            S::DatabaseTooNew(_) => Error::new("database-too-new", message),
            S::BackupExists(_) => Error::new("backup-exists", message),
            S::BackupIncomplete(cause) => Error::internal("backup-incomplete", cause),
            S::Invariant(cause) => Error::internal("internal", cause),
        }
    }
}

/// Blob store errors as the API shows them: a full disk is 507, a missing blob 404 (`media`),
/// the rest internal (logged with their cause).
impl From<crate::blobs::BlobError> for Error {
    fn from(error: crate::blobs::BlobError) -> Self {
        match error.code() {
            "disk-full" => Error::new("disk-full", "the server's disk is full"),
            "blob-not-found" => Error::not_found("media"),
            code => Error::internal(code, error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_kebab_case() {
        let mut seen = std::collections::HashSet::new();
        for (code, status) in CODE_STATUS {
            assert!(seen.insert(*code), "duplicate code {code}");
            assert!(
                code.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '-' || c.is_ascii_digit()),
                "{code} is not kebab-case"
            );
            assert!((400..600).contains(status));
        }
        assert_eq!(http_status_for_code("not-found"), 404);
        assert_eq!(http_status_for_code("something-new"), 500);
    }

    /// Every code the source passes to `Error::new` / `Error::internal` is in the table (so its
    /// status is deliberate) and documented in docs/errors.md, and every code there is real.
    #[test]
    fn every_code_used_is_in_the_table_and_documented() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut used = std::collections::BTreeSet::new();
        let mut stack = vec![root.join("src")];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    for call in ["Error::new(", "Error::internal("] {
                        for (at, _) in text.match_indices(call) {
                            let rest = text[at + call.len()..].trim_start();
                            if let Some(literal) = rest.strip_prefix('"') {
                                let code = literal.split('"').next().unwrap_or("");
                                let kebab = !code.is_empty()
                                    && code.chars().all(|c| {
                                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
                                    });
                                if kebab {
                                    used.insert(code.to_owned());
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(used.len() > 30, "the scan found only {used:?}");
        let table: std::collections::BTreeSet<String> =
            CODE_STATUS.iter().map(|(c, _)| (*c).to_owned()).collect();
        let missing: Vec<&String> = used.difference(&table).collect();
        assert!(
            missing.is_empty(),
            "codes used but not in CODE_STATUS: {missing:?}"
        );
        let docs = std::fs::read_to_string(root.join("docs/errors.md")).unwrap();
        let undocumented: Vec<&String> = table
            .iter()
            .filter(|code| !docs.contains(&format!("| `{code}` |")))
            .collect();
        assert!(
            undocumented.is_empty(),
            "codes missing from docs/errors.md: {undocumented:?}"
        );
    }
}
