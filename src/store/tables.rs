//! The catalogue of every redb table: names and key/value types in one place.

use redb::TableDefinition;

/// Schema metadata, e.g. `schema_version`.
pub const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// user id → JSON `UserRecord`.
pub const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// lower-cased username → user id.
pub const USERNAMES: TableDefinition<&str, &str> = TableDefinition::new("usernames");
/// SHA-256 (hex) of a session token → JSON `SessionRecord`. Tokens themselves are never stored.
pub const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");
/// SHA-256 (hex) of a personal API token → JSON `ApiTokenRecord`.
pub const API_TOKENS: TableDefinition<&str, &[u8]> = TableDefinition::new("api_tokens");
/// file id → JSON `FileRecord`.
pub const FILES: TableDefinition<&str, &[u8]> = TableDefinition::new("files");
/// `owner_id/file_id` → created-at seconds; lists a user's files without scanning all (v2).
pub const USER_FILES: TableDefinition<&str, u64> = TableDefinition::new("user_files");
/// `owner_id/n/<name key>\0<file id>` and `owner_id/s/<size, 20 digits>/<file id>` → 0: a user's
/// files in name and size order, so the file list pages by name or size without reading every
/// record (v4). Kept in step with `files` by `store::files` (insert, rename, delete).
pub const USER_FILE_ORDER: TableDefinition<&str, u64> = TableDefinition::new("user_file_order");
/// blob SHA-256 → number of files that reference it (v2).
pub const BLOB_REFS: TableDefinition<&str, u64> = TableDefinition::new("blob_refs");

pub const SCHEMA_VERSION_KEY: &str = "schema_version";
/// file id → JSON `JobRecord`: the processing job of each file (v3).
pub const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
/// `priority/created-ms/file-id` → file id, for queued jobs only, in the order they run (v3).
pub const QUEUE: TableDefinition<&str, &str> = TableDefinition::new("queue");
/// file id → JSON transcript of a completed file (v3).
pub const TRANSCRIPTS: TableDefinition<&str, &[u8]> = TableDefinition::new("transcripts");
/// collection id → JSON `CollectionRecord` (its name and who it is shared with).
pub const COLLECTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("collections");
/// `collection_id/file_id` → seconds when the file was added.
pub const COLLECTION_FILES: TableDefinition<&str, u64> = TableDefinition::new("collection_files");
/// `file_id/collection_id` → seconds when the file was added (the reverse of the above).
pub const FILE_COLLECTIONS: TableDefinition<&str, u64> = TableDefinition::new("file_collections");
/// `user_id/collection_id` → role (`owner`, `editor`, `viewer`): the collections a user sees.
pub const USER_COLLECTIONS: TableDefinition<&str, &str> = TableDefinition::new("user_collections");
/// `file_id/comment_id` → JSON `CommentRecord`; ids are UUIDv7, so a file's comments list in order.
pub const COMMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("comments");
/// profile id → JSON `ProfileRecord` (name, centroid of speaker embeddings).
pub const PROFILES: TableDefinition<&str, &[u8]> = TableDefinition::new("profiles");
/// `user_id/profile_id` → created-at seconds: a user's profiles.
pub const USER_PROFILES: TableDefinition<&str, u64> = TableDefinition::new("user_profiles");
/// `profile_id/file_id` → seconds: files with a speaker assigned to the profile.
pub const PROFILE_FILES: TableDefinition<&str, u64> = TableDefinition::new("profile_files");
/// file id → JSON map of speaker id → embedding (192 floats) of a diarized file.
pub const SPEAKER_EMBEDDINGS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("speaker_embeddings");
/// file id → JSON waveform peaks of the file's audio, for the player.
pub const WAVEFORMS: TableDefinition<&str, &[u8]> = TableDefinition::new("waveforms");
/// `<time, 20 digits>/<entry id>` → JSON `AuditRecord`: the append-only audit log, in time order.
pub const AUDIT: TableDefinition<&str, &[u8]> = TableDefinition::new("audit");
/// user id → JSON `RetentionRule`: a user's own retention rule (absent: none).
pub const RETENTION_RULES: TableDefinition<&str, &[u8]> = TableDefinition::new("retention_rules");
/// user id → JSON `WebhookRecord`: the user's signed webhook.
pub const WEBHOOKS: TableDefinition<&str, &[u8]> = TableDefinition::new("webhooks");
/// delivery id (UUIDv7) → JSON `DeliveryRecord`: the notification outbox and its history,
/// written in the transaction that ends the job.
pub const DELIVERIES: TableDefinition<&str, &[u8]> = TableDefinition::new("deliveries");
/// `next-attempt-secs (20 digits)/delivery id` → delivery id, for pending deliveries only.
pub const DELIVERY_DUE: TableDefinition<&str, &str> = TableDefinition::new("delivery_due");
/// `owner_id/delivery id` → created-at seconds: a user's webhook deliveries, in order.
pub const USER_DELIVERIES: TableDefinition<&str, u64> = TableDefinition::new("user_deliveries");
/// upload session id (UUIDv7) → JSON `UploadRecord`: resumable uploads and browser recordings
/// in progress (their bytes are in `DATA_DIR/uploads/<id>.part`).
pub const UPLOADS: TableDefinition<&str, &[u8]> = TableDefinition::new("uploads");
/// file id → JSON `SummaryRecord`: the file's LLM summary and the state of its run.
pub const SUMMARIES: TableDefinition<&str, &[u8]> = TableDefinition::new("summaries");
/// user id → JSON `PromptTemplates`: a user's own summary prompt templates.
pub const LLM_PROMPTS: TableDefinition<&str, &[u8]> = TableDefinition::new("llm_prompts");
