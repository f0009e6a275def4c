//! Operation details of the newer route groups (resumable uploads, LLM summaries), beside
//! `operation_details` in the parent module, which falls back to this one.

use axum::http::Method;
use serde_json::json;

use super::{Details, name, object, string};

pub(super) fn operation_details(method: &Method, path: &str) -> Option<Details> {
    let details = match (method.as_str(), path) {
        ("POST", "/api/uploads") => Details::new(
            "Open a resumable upload (or a browser recording); send its bytes with PATCH (docs/uploads.md)",
            201,
            "The session, `offset` 0 (also in `Upload-Offset`)",
        )
        .json(object(
            &["name"],
            json!({
                "name": name(),
                "size": {"type": "integer", "minimum": 1},
                "kind": {"type": "string", "enum": ["file", "recording"]},
                "options": {"type": "object", "additionalProperties": string()},
            }),
        )),
        ("GET", "/api/uploads/{id}") => Details::new(
            "An upload session and its offset (also `HEAD`; the offset is in `Upload-Offset`)",
            200,
            "The session",
        ),
        ("PATCH", "/api/uploads/{id}") => {
            let mut details = Details::new(
                "Append a chunk at the `Upload-Offset` header's offset (409 with the real offset otherwise)",
                200,
                "The session at its new offset",
            );
            details.body = Some((
                "application/offset+octet-stream",
                json!({"type": "string", "format": "binary"}),
            ));
            details
        }
        ("DELETE", "/api/uploads/{id}") => {
            Details::new("Abort an upload session; its partial data is removed", 204, "Removed")
        }
        ("POST", "/api/uploads/{id}/complete") => Details::new(
            "Turn the received bytes into a file, like POST /api/files (repeating it answers the same file)",
            200,
            "The file",
        ),
        ("GET", "/api/files/{id}/summary") => Details::new(
            "The file's LLM summary: status (none, running, done, error), summary, action_items, decisions, topics, speaker_names, model, times, error",
            200,
            "The summary",
        ),
        ("POST", "/api/files/{id}/summary") => Details::new(
            "Start (or re-run) the file's summary on the site's language model; progress as summary.status events; 409 llm-not-configured without one",
            202,
            "The run, running",
        ),
        ("POST", "/api/files/{id}/ask") => Details::new(
            "Ask a question about the transcript; the answer cites segment times",
            200,
            "answer, citations [{start, end, text}], model",
        )
        .json(object(
            &["question"],
            json!({"question": {"type": "string", "minLength": 1, "maxLength": 2000}}),
        )),
        ("GET", "/api/account/llm-prompts") => Details::new(
            "The caller's summary prompt templates, the defaults and the placeholders",
            200,
            "Templates",
        ),
        ("PUT", "/api/account/llm-prompts") => {
            let template = || json!({"anyOf": [{"type": "string", "maxLength": 4000}, {"type": "null"}]});
            Details::new("Set the own summary prompt templates (null or empty: the default)", 200, "Templates")
                .json(object(&[], json!({"map": template(), "reduce": template()})))
        }
        _ => return None,
    };
    Some(details)
}
