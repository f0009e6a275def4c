//! The OpenAPI 3.1 document served at `GET /api/openapi.json`. Its `paths` are generated from
//! `routes_table::route_table()`, so every served route is in it; `operation_details` beside it
//! gives each route its summary, query parameters, request body schema and success responses.
//! The document is public: it describes the API's shape, never data.

use std::sync::OnceLock;

use axum::Router;
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::extract::{CSRF_HEADER, SESSION_COOKIE};
use super::routes_table::{Access, route_table};
use crate::app::AppState;

mod more;

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/openapi.json", get(serve_document))
}

/// What one route documents beyond what the route table knows.
pub struct Details {
    pub summary: &'static str,
    /// Query parameters: `(name, required, schema)`.
    pub query: Vec<(&'static str, bool, Value)>,
    /// `(content type, schema)` of the request body.
    pub body: Option<(&'static str, Value)>,
    /// Success statuses with a description and, where it is pinned down, a JSON schema.
    pub success: Vec<(u16, &'static str, Option<Value>)>,
}

impl Details {
    fn new(summary: &'static str, status: u16, description: &'static str) -> Self {
        Self {
            summary,
            query: Vec::new(),
            body: None,
            success: vec![(status, description, None)],
        }
    }

    fn json(mut self, schema: Value) -> Self {
        self.body = Some(("application/json", schema));
        self
    }

    fn multipart(mut self, schema: Value) -> Self {
        self.body = Some(("multipart/form-data", schema));
        self
    }

    fn returns(mut self, schema: Value) -> Self {
        if let Some(first) = self.success.first_mut() {
            first.2 = Some(schema);
        }
        self
    }

    fn also(mut self, status: u16, description: &'static str) -> Self {
        self.success.push((status, description, None));
        self
    }

    fn query(mut self, name: &'static str, required: bool, schema: Value) -> Self {
        self.query.push((name, required, schema));
        self
    }
}

/// A JSON object schema with exactly these properties (the handlers deny unknown fields).
fn object(required: &[&str], properties: Value) -> Value {
    json!({
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": false,
    })
}

fn string() -> Value {
    json!({"type": "string"})
}

/// Non-blank text of at most `max` characters without control characters (tab and newline
/// allowed where `multiline`), as `services::collections::check_text` and the name checks want it.
fn text(max: usize, multiline: bool) -> Value {
    let allowed = if multiline {
        r"[^\u0000-\u0008\u000b-\u001f\u007f-\u009f]"
    } else {
        r"[^\u0000-\u001f\u007f-\u009f]"
    };
    json!({
        "type": "string",
        "minLength": 1,
        "maxLength": max,
        "pattern": format!(r"^{allowed}*[^\s\u0000-\u001f\u007f-\u009f]{allowed}*$"),
    })
}

fn name() -> Value {
    text(200, false)
}

fn username() -> Value {
    json!({"type": "string", "pattern": "^[A-Za-z0-9._@-]{1,64}$"})
}

fn password() -> Value {
    json!({"type": "string", "minLength": 8, "maxLength": 1024})
}

fn language() -> Value {
    json!({"type": "string", "pattern": "^(auto|[A-Za-z]{0,8})$"})
}

fn speakers_count() -> Value {
    json!({"type": "integer", "minimum": 1, "maximum": 20})
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The documentation of each route in the table; `None` for a route nobody documented yet
/// (a test refuses that).
pub fn operation_details(method: &Method, path: &str) -> Option<Details> {
    let credentials = || {
        object(
            &["username", "password"],
            json!({"username": username(), "password": password()}),
        )
    };
    let export_format =
        || json!({"type": "string", "enum": ["srt", "vtt", "txt", "json", "csv", "md", "docx"]});
    let details = match (method.as_str(), path) {
        ("GET", "/api/openapi.json") => Details::new("This document", 200, "OpenAPI 3.1 JSON"),
        ("GET", "/api/health") => {
            Details::new("Liveness", 200, "The daemon is up").returns(object(
                &["status"],
                json!({"status": {"type": "string", "enum": ["ok"]}}),
            ))
        }
        ("GET", "/api/ready") => Details::new("Readiness", 200, "Every check passed")
            .also(503, "A check failed; the body names each check"),
        ("GET", "/metrics") => Details::new("Prometheus metrics", 200, "Text exposition format"),
        ("GET", "/api/admin/status") => Details::new("Daemon status report", 200, "The report"),
        ("GET", "/api/auth/setup-needed") => {
            Details::new("Whether no user exists yet", 200, "`setup_needed`").returns(object(
                &["setup_needed"],
                json!({"setup_needed": {"type": "boolean"}}),
            ))
        }
        ("POST", "/api/auth/register") => {
            Details::new("Register (the first user becomes admin)", 201, "The new user")
                .json(credentials())
                .returns(reference("User"))
        }
        ("POST", "/api/auth/login") => {
            Details::new(
                "Sign in: a session token and cookie",
                200,
                "The session (`Login`); for an account with TOTP on, a `TotpChallenge` instead (no session yet: send it with the code to `POST /api/auth/login/totp`)",
            )
                .json(object(
                    &["username", "password"],
                    json!({"username": string(), "password": string()}),
                ))
                .returns(reference("Login"))
        }
        ("POST", "/api/auth/logout") => Details::new("End this session", 204, "Signed out"),
        ("POST", "/api/auth/logout-all") => {
            Details::new("End every session of this user", 204, "Signed out everywhere")
        }
        ("GET", "/api/auth/me") => Details::new("The signed-in user", 200, "The user"),
        ("POST", "/api/auth/password") => {
            Details::new("Change the own password", 204, "Changed").json(object(
                &["current_password", "new_password"],
                json!({"current_password": string(), "new_password": password()}),
            ))
        }
        ("GET", "/api/auth/tokens") => Details::new("The own API tokens", 200, "Tokens"),
        ("POST", "/api/auth/tokens") => {
            Details::new("Create an API token (shown once)", 201, "The token")
                .json(object(&["name"], json!({"name": text(100, false)})))
        }
        ("DELETE", "/api/auth/tokens/{id}") => Details::new("Revoke an API token", 204, "Revoked"),
        ("POST", "/api/auth/login/totp") => Details::new(
            "Second sign-in step: the challenge and a TOTP or recovery code",
            200,
            "The session",
        )
        .json(object(
            &["challenge"],
            json!({
                "challenge": string(),
                "code": {"type": "string", "pattern": "^[0-9 ]{6,7}$"},
                "recovery_code": string(),
            }),
        ))
        .returns(reference("Login")),
        ("POST", "/api/account/totp/setup") => Details::new(
            "Start TOTP enrolment: a new secret and its otpauth:// URI",
            200,
            "`secret`, `otpauth_uri`, `qr_svg` (the URI as a QR code, SVG), `algorithm`, `digits`, `period`",
        ),
        ("POST", "/api/account/totp/confirm") => Details::new(
            "Confirm TOTP enrolment with a code: TOTP is on, recovery codes shown once",
            200,
            "`enabled`, `recovery_codes` (10, single-use)",
        )
        .json(object(&["code"], json!({"code": string()}))),
        ("DELETE", "/api/account/totp") => {
            Details::new("Remove the own second factor", 204, "Removed").json(object(
                &[],
                json!({"password": string(), "code": string()}),
            ))
        }
        ("DELETE", "/api/admin/users/{id}/totp") => Details::new(
            "Remove a user's second factor (ends their sessions)",
            204,
            "Removed",
        ),
        ("GET", "/api/auth/providers") => Details::new(
            "The sign-ins this site offers besides passwords",
            200,
            "`oidc` (`{display_name}` or null), `ldap` (boolean)",
        ),
        ("GET", "/api/auth/oidc/start") => Details::new(
            "Start an OIDC sign-in (browser)",
            303,
            "To the provider, with a short-lived flow cookie",
        ),
        ("GET", "/api/auth/oidc/callback") => Details::new(
            "Finish an OIDC sign-in (the provider's redirect)",
            303,
            "To the web UI, with the session cookie",
        )
        .query("code", false, string())
        .query("state", false, string()),
        ("GET", "/api/admin/users") => Details::new("Every user", 200, "Users"),
        ("POST", "/api/admin/users") => Details::new("Create a user", 201, "The new user")
            .json(object(
                &["username", "password"],
                json!({
                    "username": username(),
                    "password": password(),
                    "role": {"type": "string", "enum": ["user", "admin"]},
                }),
            ))
            .returns(reference("User")),
        ("PATCH", "/api/admin/users/{id}") => {
            Details::new("Change a user's role or disable them", 200, "The user")
                .json(object(
                    &[],
                    json!({
                        "role": {"type": "string", "enum": ["user", "admin"]},
                        "disabled": {"type": "boolean"},
                    }),
                ))
                .returns(reference("User"))
        }
        ("POST", "/api/admin/users/{id}/password") => {
            Details::new("Set a user's password", 204, "Changed")
                .json(object(&["password"], json!({"password": password()})))
        }
        ("GET", "/api/files") => Details::new("The caller's files, paged", 200, "A page")
            .query("page", false, json!({"type": "integer", "minimum": 1}))
            .query("per_page", false, json!({"type": "integer", "minimum": 1}))
            .query(
                "status",
                false,
                json!({"type": "string", "enum": super::files::file_statuses()}),
            )
            .query(
                "sort",
                false,
                json!({"type": "string", "enum": ["created", "-created", "name", "-name", "size", "-size"]}),
            )
            .query("tag", false, string())
            .query(
                "scope",
                false,
                json!({"type": "string", "enum": ["own", "shared", "all"]}),
            )
            .query("collection", false, string()),
        ("POST", "/api/files") => Details::new("Upload audio or video", 201, "The new file, queued")
            .multipart(json!({
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "language": language(),
                    "num_speakers": speakers_count(),
                    "min_speakers": speakers_count(),
                    "max_speakers": speakers_count(),
                    "diarize": {"type": "boolean"},
                    "priority": {"type": "string", "enum": ["high", "normal", "low"]},
                    "model": string(),
                    "task": {"type": "string", "enum": ["transcribe", "translate"]},
                },
                "additionalProperties": false,
            }))
            .returns(reference("File")),
        ("GET", "/api/files/{id}") => {
            Details::new("One file", 200, "The file").returns(reference("File"))
        }
        ("PATCH", "/api/files/{id}") => Details::new("Rename a file", 200, "The file")
            .json(object(
                &["filename"],
                json!({"filename": {"type": "string", "pattern": "\\S"}}),
            ))
            .returns(reference("File")),
        ("DELETE", "/api/files/{id}") => {
            Details::new("Delete a file and its transcript", 204, "Deleted")
        }
        ("GET", "/api/files/{id}/media") => {
            Details::new("The original media (HTTP Range)", 200, "The whole file")
                .also(206, "The requested range")
        }
        ("GET", "/api/files/{id}/transcript") => Details::new("The transcript", 200, "Transcript"),
        ("GET", "/api/files/{id}/export") => {
            Details::new("The transcript as subtitles or text", 200, "The export")
                .query("format", true, export_format())
                .query("speakers", false, json!({"type": "boolean"}))
        }
        ("POST", "/api/files/{id}/cancel") => Details::new("Cancel the file's job", 200, "Cancelled"),
        ("POST", "/api/files/{id}/retry") => Details::new("Retry a failed job", 200, "Queued again"),
        ("POST", "/api/files/{id}/reprocess") => {
            Details::new("Run stages again with new options", 200, "Queued again").json(object(
                &[],
                json!({
                    "stages": {"type": "array", "items": {"type": "string", "enum": ["diarize"]}},
                    "language": language(),
                    "num_speakers": speakers_count(),
                    "min_speakers": speakers_count(),
                    "max_speakers": speakers_count(),
                    "diarize": {"type": "boolean"},
                }),
            ))
        }
        ("GET", "/api/admin/jobs") => Details::new("Every job", 200, "Jobs and counts"),
        ("POST", "/api/admin/jobs/{id}/cancel") => Details::new("Cancel any job", 200, "Cancelled"),
        ("POST", "/api/admin/jobs/{id}/retry") => Details::new("Retry any job", 200, "Queued again"),
        ("GET", "/api/ws") => Details::new(
            "WebSocket of the caller's file events",
            101,
            "Switching protocols",
        ),
        ("POST", "/v1/audio/transcriptions" | "/v1/audio/translations") => {
            Details::new(
                if path.ends_with("translations") {
                    "OpenAI-compatible translation into English"
                } else {
                    "OpenAI-compatible transcription"
                },
                200,
                "The transcript",
            ).multipart(json!({
                "type": "object",
                "required": ["file", "model"],
                "properties": {
                    "file": {"type": "string", "format": "binary"},
                    "model": string(),
                    "language": string(),
                    "response_format": {
                        "type": "string",
                        "enum": ["json", "text", "srt", "vtt", "verbose_json"],
                    },
                    "timestamp_granularities[]": {"type": "string", "enum": ["word", "segment"]},
                    "prompt": string(),
                    "temperature": {"type": "number"},
                    "stream": {"type": "boolean"},
                },
                "additionalProperties": false,
            }))
        }
        ("GET", "/v1/models") => Details::new("OpenAI-compatible model list", 200, "Models"),
        ("PATCH", "/api/files/{id}/segments/{segment}") => {
            Details::new("Correct a segment's text or speaker", 200, "The segment").json(json!({
                "type": "object",
                "properties": {
                    "text": text(10_000, true),
                    "speaker": {"type": ["string", "null"]},
                },
                "minProperties": 1,
                "additionalProperties": false,
            }))
        }
        ("PATCH", "/api/files/{id}/speakers/{speaker}") => {
            Details::new("Name a speaker", 200, "The speaker")
                .json(object(&[], json!({"name": {"anyOf": [name(), {"type": "null"}]}})))
        }
        ("PATCH", "/api/files/{id}/segments/{segment}/words/{word}") => {
            Details::new("Move one word to another speaker", 200, "The transcript")
                .json(object(&["speaker"], json!({"speaker": string()})))
        }
        ("PUT", "/api/files/{id}/tags") => Details::new("Set a file's tags", 200, "The file")
            .json(object(
                &["tags"],
                json!({"tags": {"type": "array", "maxItems": 50, "items": text(64, true)}}),
            ))
            .returns(reference("File")),
        ("GET", "/api/tags") => Details::new("Every tag of the caller", 200, "Tags"),
        ("GET", "/api/files/{id}/analytics") => {
            Details::new("Talk time and words per speaker", 200, "Analytics")
        }
        ("GET", "/api/files/{id}/waveform") => Details::new("Waveform peaks", 200, "Peaks"),
        ("GET", "/api/files/{id}/comments") => Details::new("Comments on a file", 200, "Comments"),
        ("POST", "/api/files/{id}/comments") => {
            Details::new("Comment at a time", 201, "The comment").json(object(
                &["time", "text"],
                json!({"time": {"type": "number", "minimum": 0}, "text": text(10_000, true)}),
            ))
        }
        ("DELETE", "/api/files/{id}/comments/{comment}") => {
            Details::new("Delete a comment", 204, "Deleted")
        }
        ("GET", "/api/collections") => Details::new("The caller's collections", 200, "Collections"),
        ("POST", "/api/collections") => {
            Details::new("Create a collection", 201, "The collection").json(object(
                &["name"],
                json!({"name": name(), "description": {"type": "string", "maxLength": 10_000}}),
            ))
        }
        ("GET", "/api/collections/{cid}") => {
            Details::new("A collection with its files", 200, "The collection")
        }
        ("PATCH", "/api/collections/{cid}") => {
            Details::new("Rename or describe a collection, or exempt it from retention", 200, "The collection").json(object(
                &[],
                json!({"name": name(), "description": {"type": "string", "maxLength": 10_000}, "retention_exempt": {"type": "boolean"}}),
            ))
        }
        ("DELETE", "/api/collections/{cid}") => Details::new("Delete a collection", 204, "Deleted"),
        ("PUT", "/api/collections/{cid}/files/{id}") => {
            Details::new("Add a file to a collection", 204, "Added")
        }
        ("DELETE", "/api/collections/{cid}/files/{id}") => {
            Details::new("Remove a file from a collection", 204, "Removed")
        }
        ("PUT", "/api/collections/{cid}/shares") => {
            Details::new("Share a collection with a user", 200, "The share").json(object(
                &["username", "role"],
                json!({
                    "username": username(),
                    "role": {"type": "string", "enum": ["viewer", "editor"]},
                }),
            ))
        }
        ("DELETE", "/api/collections/{cid}/shares/{user}") => {
            Details::new("Stop sharing with a user", 204, "Unshared")
        }
        ("GET", "/api/exports/zip") => {
            Details::new("Several exports in one ZIP", 200, "The ZIP archive")
                .query("ids", true, json!({"type": "string", "description": "comma-separated file ids"}))
                .query("format", true, export_format())
                .query("speakers", false, json!({"type": "boolean"}))
        }
        ("GET", "/api/files/{id}/speakers") => Details::new("A file's speakers", 200, "Speakers"),
        ("POST", "/api/files/{id}/speakers/merge") => {
            Details::new("Merge one speaker into another", 200, "Speakers").json(object(
                &["from", "into"],
                json!({"from": string(), "into": string()}),
            ))
        }
        ("POST", "/api/files/{id}/speakers/{speaker}/profile") => {
            Details::new("Create a voice profile from a speaker", 201, "Speakers")
                .json(object(&["name"], json!({"name": name()})))
        }
        ("PUT", "/api/files/{id}/speakers/{speaker}/profile") => {
            Details::new("Assign a voice profile to a speaker", 200, "Speakers")
                .json(object(&["profile_id"], json!({"profile_id": string()})))
        }
        ("DELETE", "/api/files/{id}/speakers/{speaker}/profile") => {
            Details::new("Detach a speaker's voice profile", 200, "Speakers")
        }
        ("POST", "/api/files/{id}/speakers/{speaker}/suggestion") => {
            Details::new("Accept or reject a profile suggestion", 200, "Speakers")
                .json(object(&["accept"], json!({"accept": {"type": "boolean"}})))
        }
        ("GET", "/api/profiles") => Details::new("The caller's voice profiles", 200, "Profiles"),
        ("PATCH", "/api/profiles/{pid}") => Details::new("Rename a voice profile", 200, "Profile")
            .json(object(&["name"], json!({"name": name()}))),
        ("DELETE", "/api/profiles/{pid}") => Details::new("Delete a voice profile", 204, "Deleted"),
        ("GET", "/api/search") => {
            let plain = string;
            Details::new("Search the transcripts the caller may see", 200, "Hits")
                .query("q", false, json!({"type": "string", "maxLength": 1000}))
                .query(
                    "mode",
                    false,
                    json!({"type": "string", "enum": ["keyword", "semantic", "hybrid"]}),
                )
                .query("speaker", false, plain())
                .query("tag", false, plain())
                .query("collection", false, plain())
                .query("language", false, plain())
                .query("media_type", false, plain())
                .query("date_from", false, json!({"type": "integer", "minimum": 0}))
                .query("date_to", false, json!({"type": "integer", "minimum": 0}))
                .query("min_duration", false, json!({"type": "number"}))
                .query("max_duration", false, json!({"type": "number"}))
                .query("file_id", false, plain())
                .query("page", false, json!({"type": "integer", "minimum": 1}))
                .query("per_page", false, json!({"type": "integer", "minimum": 1}))
        }
        ("GET", "/api/admin/audit") => {
            audit_filters(Details::new("The audit log, newest first", 200, "A page of entries"))
                .query("page", false, json!({"type": "integer", "minimum": 1}))
                .query("per_page", false, json!({"type": "integer", "minimum": 1, "maximum": 500}))
        }
        ("GET", "/api/admin/audit.csv") => audit_filters(Details::new(
            "The audit log as CSV (bounded; X-Audit-Truncated when older entries were left out)",
            200,
            "text/csv",
        )),
        ("GET", "/api/account/retention") => {
            Details::new("The caller's retention rule, the site's and the one that applies", 200, "Rules")
        }
        ("PUT", "/api/account/retention") => {
            let days = || json!({"anyOf": [{"type": "integer", "minimum": 1, "maximum": 36_500}, {"type": "null"}]});
            Details::new("Set the own retention rule (both null: none)", 200, "Rules").json(object(
                &[],
                json!({"media_days": days(), "transcript_days": days()}),
            ))
        }
        ("GET", "/api/retention/preview") => {
            Details::new("What retention will delete of the caller's files, and when", 200, "Planned deletions")
        }
        ("GET", "/api/account/webhook") => {
            Details::new("The own webhook (never its secret); `url` is null when none is set", 200, "The webhook")
        }
        ("PUT", "/api/account/webhook") => Details::new(
            "Set the own webhook; a new one without `secret` gets a generated secret, returned once",
            200,
            "The webhook",
        )
        .json(object(
            &["url"],
            json!({
                "url": {"type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\\s]+", "maxLength": 2048},
                "secret": {"type": "string", "pattern": "^[!-~]{16,256}$"},
            }),
        )),
        ("DELETE", "/api/account/webhook") => Details::new(
            "Remove the own webhook; its pending deliveries are cancelled",
            204,
            "Removed",
        ),
        ("GET", "/api/account/webhook/deliveries") => Details::new(
            "The own webhook's recent deliveries and their attempts, newest first",
            200,
            "Deliveries",
        ),
        _ => return more::operation_details(method, path),
    };
    Some(details)
}

/// The filters shared by the audit list and its CSV export.
fn audit_filters(details: Details) -> Details {
    details
        .query("user", false, string())
        .query(
            "action",
            false,
            json!({"type": "string", "description": "action prefix, e.g. `auth.`"}),
        )
        .query("since", false, json!({"type": "integer", "minimum": 0}))
        .query("until", false, json!({"type": "integer", "minimum": 0}))
}

/// The catch-all `/api/{*rest}` (a JSON 404) has no OpenAPI path template.
pub fn is_documented_route(path: &str) -> bool {
    !path.contains("{*")
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (method, path, access) in route_table() {
        if !is_documented_route(path) {
            continue;
        }
        let operation = operation(&method, path, access);
        let entry = paths
            .entry(path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(methods) = entry {
            methods.insert(method.as_str().to_ascii_lowercase(), operation);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "OpenTranscribe appliance",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Errors are `{\"code\", \"message\"}` with a 4xx or 5xx status (the OpenAI-compatible routes use OpenAI's `{\"error\": {…}}`). Authenticate with `Authorization: Bearer <API or session token>`, or with the session cookie plus the `X-CSRF-Token` header on unsafe methods.",
        },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token (`POST /api/auth/tokens`) or the session token from `POST /api/auth/login`.",
                },
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": SESSION_COOKIE,
                    "description": "The HttpOnly session cookie set by `POST /api/auth/login`.",
                },
                "csrf": {
                    "type": "apiKey",
                    "in": "header",
                    "name": CSRF_HEADER,
                    "description": "The `csrf_token` from login, required with the cookie on POST, PUT, PATCH and DELETE; a foreign `Origin` is refused too.",
                },
            },
            "schemas": schemas(),
        },
    })
}

fn schemas() -> Value {
    let user = object(
        &["id", "username", "role", "disabled", "created_at"],
        json!({
            "id": string(),
            "username": string(),
            "role": {"type": "string", "enum": ["user", "admin"]},
            "disabled": {"type": "boolean"},
            "created_at": {"type": "integer", "minimum": 0},
            "totp_enabled": {"type": "boolean"},
            "source": {"type": "string", "enum": ["local", "ldap", "oidc"]},
        }),
    );
    json!({
        "Error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "pattern": "^[a-z0-9]+(-[a-z0-9]+)*$"},
                "message": string(),
                "error_id": string(),
            },
        },
        "OpenAiError": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["message", "type", "code"],
                "properties": {"message": string(), "type": string(), "code": string()},
            }},
        },
        "User": user,
        "Login": object(
            &["token", "csrf_token", "expires_in", "user"],
            json!({
                "token": string(),
                "csrf_token": string(),
                "expires_in": {"type": "integer", "minimum": 0},
                "user": reference("User"),
                "totp_enrolment_required": {"type": "boolean"},
            }),
        ),
        "TotpChallenge": object(
            &["totp_required", "challenge", "expires_in"],
            json!({
                "totp_required": {"type": "boolean", "enum": [true]},
                "challenge": string(),
                "expires_in": {"type": "integer", "minimum": 0},
            }),
        ),
        "File": {
            "type": "object",
            "required": ["id", "filename", "status", "progress", "size", "sha256", "media_type", "created_at", "updated_at", "tags", "access"],
            "properties": {
                "id": string(),
                "filename": string(),
                "status": {"type": "string", "enum": super::files::file_statuses()},
                "progress": {"type": "number"},
                "size": {"type": "integer", "minimum": 0},
                "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                "media_type": string(),
                "tags": {"type": "array", "items": string()},
                "access": {"type": "string", "enum": ["owner", "editor", "viewer"]},
            },
        },
    })
}

fn operation(method: &Method, path: &str, access: Access) -> Value {
    let details = operation_details(method, path)
        .unwrap_or_else(|| Details::new("Undocumented", 200, "Success"));
    let mut parameters: Vec<Value> = path_parameters(path)
        .into_iter()
        .map(|name| {
            let schema = if matches!(name, "segment" | "word") {
                json!({"type": "integer", "minimum": 0})
            } else {
                json!({"type": "string", "minLength": 1})
            };
            json!({"name": name, "in": "path", "required": true, "schema": schema})
        })
        .collect();
    for (name, required, schema) in &details.query {
        parameters
            .push(json!({"name": name, "in": "query", "required": required, "schema": schema}));
    }
    let openai = path.starts_with("/v1/");
    let mut responses = Map::new();
    for (status, description, schema) in &details.success {
        let mut response = json!({"description": description});
        if let Some(schema) = schema {
            response["content"] = json!({"application/json": {"schema": schema}});
        }
        responses.insert(status.to_string(), response);
    }
    let error = if openai {
        reference("OpenAiError")
    } else {
        reference("Error")
    };
    responses.insert(
        "4XX".to_owned(),
        json!({
            "description": "The request was refused; `code` says why (401 without valid credentials, 403 for a missing CSRF token or a non-admin on admin routes, 404 for what the caller may not see)",
            "content": {"application/json": {"schema": error}},
        }),
    );
    let operation_id = format!(
        "{}{}",
        method.as_str().to_ascii_lowercase(),
        path.replace(['{', '}'], "")
            .split(['/', '-', '.'])
            .filter(|part| !part.is_empty())
            .map(|part| {
                let mut chars = part.chars();
                chars
                    .next()
                    .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            })
            .collect::<String>()
    );
    let mut operation = json!({
        "operationId": operation_id,
        "summary": details.summary,
        "responses": responses,
        "security": security(method, access),
    });
    if !parameters.is_empty() {
        operation["parameters"] = Value::Array(parameters);
    }
    if let Some((content_type, schema)) = details.body {
        operation["requestBody"] = json!({
            "required": true,
            "content": {content_type: {"schema": schema}},
        });
    }
    operation
}

/// Bearer, or the cookie (with the CSRF header on unsafe methods); none for public routes.
/// `/metrics` may also be open to localhost without credentials (`[metrics] allow`).
fn security(method: &Method, access: Access) -> Value {
    let cookie = if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        json!({"session": []})
    } else {
        json!({"session": [], "csrf": []})
    };
    match access {
        Access::Public => json!([]),
        Access::Metrics => json!([{}, {"bearer": []}, cookie]),
        Access::User | Access::Owner | Access::Admin => json!([{"bearer": []}, cookie]),
    }
}

/// The `{name}` segments of a path pattern, in order.
pub fn path_parameters(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

async fn serve_document() -> Response {
    static DOCUMENT: OnceLock<Vec<u8>> = OnceLock::new();
    let bytes = DOCUMENT.get_or_init(|| serde_json::to_vec(&document()).unwrap_or_default());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        bytes.clone(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_with_its_method() {
        let document = document();
        let mut undocumented = Vec::new();
        for (method, path, _) in route_table() {
            if !is_documented_route(path) {
                continue;
            }
            let operation = &document["paths"][path][method.as_str().to_ascii_lowercase()];
            assert!(
                operation.is_object(),
                "{method} {path} is missing from the document"
            );
            if operation_details(&method, path).is_none() {
                undocumented.push(format!("{method} {path}"));
            }
            // Every path template parameter is declared.
            for name in path_parameters(path) {
                let declared = operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["name"] == name && p["in"] == "path");
                assert!(declared, "{method} {path}: {{{name}}} not declared");
            }
        }
        assert!(
            undocumented.is_empty(),
            "routes without operation_details: {undocumented:?}"
        );
        // Nothing in the document that the router does not serve.
        let table: Vec<(String, &str)> = route_table()
            .into_iter()
            .map(|(m, p, _)| (m.as_str().to_ascii_lowercase(), p))
            .collect();
        for (path, methods) in document["paths"].as_object().unwrap() {
            for method in methods.as_object().unwrap().keys() {
                assert!(
                    table.iter().any(|(m, p)| m == method && p == path),
                    "{method} {path} is documented but not routed"
                );
            }
        }
    }

    #[test]
    fn operation_ids_are_unique() {
        let document = document();
        let mut ids = std::collections::BTreeSet::new();
        for methods in document["paths"].as_object().unwrap().values() {
            for operation in methods.as_object().unwrap().values() {
                let id = operation["operationId"].as_str().unwrap().to_owned();
                assert!(ids.insert(id.clone()), "duplicate operationId {id}");
            }
        }
    }

    #[test]
    fn body_routes_have_schemas_and_public_routes_need_no_credentials() {
        let document = document();
        let upload = &document["paths"]["/api/files"]["post"]["requestBody"]["content"];
        assert_eq!(
            upload["multipart/form-data"]["schema"]["required"],
            json!(["file"])
        );
        let login = &document["paths"]["/api/auth/login"]["post"];
        assert_eq!(login["security"], json!([]));
        assert_eq!(
            login["requestBody"]["content"]["application/json"]["schema"]["additionalProperties"],
            json!(false)
        );
        let delete = &document["paths"]["/api/files/{id}"]["delete"]["security"];
        assert_eq!(
            delete,
            &json!([{"bearer": []}, {"session": [], "csrf": []}])
        );
    }
}
