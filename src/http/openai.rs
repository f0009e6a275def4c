//! The OpenAI-compatible API: `POST /v1/audio/transcriptions`, `POST /v1/audio/translations`
//! (speech in any language to English text) and `GET /v1/models`, so tools
//! written for OpenAI's speech-to-text (its official clients included) work against the
//! appliance with a personal API token as the key.
//!
//! A request goes through the same path as a browser upload: the audio is streamed into the
//! blob store, a file and its job are created, and the answer is sent when the job ends. The
//! file stays in the caller's library, so a transcript fetched by a script can later be read,
//! corrected and searched in the browser. Errors use OpenAI's `{"error": {...}}` shape.

use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::extract::AuthUser;
use super::files::{
    MULTIPART_OVERHEAD, UploadForm, apply_option, ingest, read_upload_form, too_large,
};
use crate::app::{AppState, blocking};
use crate::error::Error;
use crate::store::records::UploadOptions;
use crate::transcript::Transcript;
use crate::transcript::export::{Format, render};

/// The model name OpenAI's clients send by default; it means "the configured model".
pub const OPENAI_MODEL: &str = "whisper-1";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/audio/transcriptions",
            post(transcriptions).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route(
            "/v1/audio/translations",
            post(translations).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/v1/models", get(models))
}

/// An error in the shape OpenAI's clients parse, with our code as `code`.
struct OpenAiError(Error);

impl From<Error> for OpenAiError {
    fn from(error: Error) -> Self {
        Self(error)
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let kind = if status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        };
        let message = if status.is_server_error() {
            tracing::error!(code = self.0.code, cause = ?self.0.internal_cause, "request failed");
            "internal error".to_owned()
        } else {
            self.0.message.clone()
        };
        let body = json!({"error": {"message": message, "type": kind, "param": Value::Null, "code": self.0.code}});
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = self.0.retry_after_secs
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

type ApiResult<T> = std::result::Result<T, OpenAiError>;

/// `whisper-1` (the configured model), then every speech-recognition model in the cache.
async fn model_names(state: &AppState) -> Vec<String> {
    let cache = crate::models::cache::ModelCache::new(&state.config.models_dir);
    let mut names = vec![OPENAI_MODEL.to_owned(), state.config.jobs.model.clone()];
    if let Ok(installed) = blocking(move || Ok::<_, Error>(cache.asr_models())).await {
        for name in installed {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

async fn models(
    State(state): State<AppState>,
    user: std::result::Result<AuthUser, Error>,
) -> ApiResult<Json<Value>> {
    // Refusals in OpenAI's shape too: its clients parse `error.message` on a 401.
    user?;
    let created = state
        .clock
        .now_secs()
        .saturating_sub(state.started_at.elapsed().as_secs());
    let data: Vec<Value> = model_names(&state)
        .await
        .into_iter()
        .map(|id| json!({"id": id, "object": "model", "created": created, "owned_by": "opentranscribe"}))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum ResponseFormat {
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
}

impl ResponseFormat {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "json" => Self::Json,
            "text" => Self::Text,
            "srt" => Self::Srt,
            "vtt" => Self::Vtt,
            "verbose_json" => Self::VerboseJson,
            _ => return None,
        })
    }
}

struct Request {
    format: ResponseFormat,
    words: bool,
    segments: bool,
}

/// The OpenAI route's parts around the audio.
struct OpenAiForm {
    options: UploadOptions,
    request: Request,
    model: Option<String>,
    /// `model_names` when the request came in.
    served: Vec<String>,
}

impl UploadForm for OpenAiForm {
    fn knows(&self, name: &str) -> bool {
        matches!(
            name,
            "model"
                | "language"
                | "response_format"
                | "timestamp_granularities[]"
                | "timestamp_granularities"
                // Accepted for compatibility; Whisper's own fallback schedule decides these.
                | "prompt"
                | "temperature"
                | "stream"
        )
    }

    fn option(&mut self, name: &str, value: &str) -> crate::error::Result<()> {
        let value = value.trim();
        match name {
            "model" => self.model = Some(value.to_owned()),
            "language" => apply_option(&mut self.options, "language", value)?,
            "response_format" => {
                self.request.format = ResponseFormat::parse(value).ok_or_else(|| {
                    Error::bad_request(
                        "`response_format` must be json, text, srt, vtt or verbose_json",
                    )
                })?;
            }
            "timestamp_granularities[]" | "timestamp_granularities" => match value {
                "word" => self.request.words = true,
                "segment" => self.request.segments = true,
                _ => {
                    return Err(Error::bad_request(
                        "`timestamp_granularities[]` must be word or segment",
                    ));
                }
            },
            _ => {}
        }
        Ok(())
    }

    /// A model not served here is refused before the audio is stored, when the client sends
    /// it first (OpenAI's clients do).
    fn before_file(&mut self) -> crate::error::Result<()> {
        match &self.model {
            Some(name) => check_served(&self.served, name),
            None => Ok(()),
        }
    }

    fn default_filename(&self) -> &'static str {
        "audio"
    }
}

async fn transcriptions(
    State(state): State<AppState>,
    user: std::result::Result<AuthUser, Error>,
    headers: HeaderMap,
    multipart: std::result::Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<Response> {
    transcribe(state, user, headers, multipart, false).await
}

/// OpenAI's translation endpoint: the same form, Whisper's `translate` task (English text).
async fn translations(
    State(state): State<AppState>,
    user: std::result::Result<AuthUser, Error>,
    headers: HeaderMap,
    multipart: std::result::Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<Response> {
    transcribe(state, user, headers, multipart, true).await
}

async fn transcribe(
    state: AppState,
    user: std::result::Result<AuthUser, Error>,
    headers: HeaderMap,
    multipart: std::result::Result<Multipart, axum::extract::multipart::MultipartRejection>,
    translate: bool,
) -> ApiResult<Response> {
    let user = user?;
    // A missing or malformed multipart boundary is a client error in OpenAI's shape.
    let mut multipart = multipart.map_err(|e| Error::new("invalid-multipart", e.body_text()))?;
    let limit = state.config.server.max_upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit.saturating_add(MULTIPART_OVERHEAD)) {
        return Err(too_large(limit).into());
    }
    // Someone is waiting on the answer: ahead of library uploads in the queue.
    let mut form = OpenAiForm {
        options: UploadOptions {
            diarize: false,
            priority: 1,
            translate,
            ..UploadOptions::default()
        },
        request: Request {
            format: ResponseFormat::Json,
            words: false,
            segments: false,
        },
        model: None,
        served: model_names(&state).await,
    };
    let (filename, info) = read_upload_form(&state, &mut multipart, limit, &mut form).await?;
    let OpenAiForm {
        mut options,
        mut request,
        model,
        served,
    } = form;
    let Some(model) = model else {
        return Err(Error::bad_request("`model` is required").into());
    };
    check_served(&served, &model)?;
    // `whisper-1` means the configured model; any other name must be installed (checked
    // again here: the part may have come after the audio, or the model may have gone).
    if model != OPENAI_MODEL {
        options.model = Some(model);
    }
    super::files::check_asr_model(&state, &options).await?;
    if !request.segments && !request.words {
        request.segments = true;
    }
    // Subscribe before the job exists, so its end cannot be missed.
    let mut events = state.jobs.events.subscribe();
    let record = ingest(&state, &user.user.id, filename, info, options).await?;
    let transcript = wait_for_transcript(&state, &user.user.id, &record.id, &mut events).await?;
    Ok(respond(&transcript, &request))
}

fn check_served(served: &[String], name: &str) -> std::result::Result<(), Error> {
    if served.iter().any(|m| m == name) {
        Ok(())
    } else {
        Err(Error::bad_request(format!(
            "model `{name}` is not served here; use {}",
            served.join(", ")
        )))
    }
}

/// Waits until the job of `file_id` ends; events wake it, and a slow poll covers events
/// that a lagging receiver dropped.
async fn wait_for_transcript(
    state: &AppState,
    owner_id: &str,
    file_id: &str,
    events: &mut tokio::sync::broadcast::Receiver<crate::jobs::FileEvent>,
) -> std::result::Result<Transcript, Error> {
    loop {
        let store = state.store.clone();
        let (owner, id) = (owner_id.to_owned(), file_id.to_owned());
        let ended = blocking(move || {
            let Some(file) = store.get_user_file(&owner, &id)? else {
                return Err(Error::new(
                    "file-deleted",
                    "the file was deleted while it was transcribed",
                ));
            };
            match file.status.as_str() {
                "completed" => {
                    let bytes = store.get_transcript(&owner, &id)?.ok_or_else(|| {
                        Error::internal("store", "completed file without transcript")
                    })?;
                    let transcript: Transcript =
                        serde_json::from_slice(&bytes).map_err(|e| Error::internal("store", e))?;
                    Ok(Some(transcript))
                }
                "error" => Err(Error::new(
                    "transcription-failed",
                    file.error
                        .unwrap_or_else(|| "transcription failed".to_owned()),
                )),
                "cancelled" => Err(Error::new("cancelled", "the transcription was cancelled")),
                _ => Ok(None),
            }
        })
        .await?;
        if let Some(transcript) = ended {
            return Ok(transcript);
        }
        let deadline = tokio::time::sleep(std::time::Duration::from_secs(2));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                event = events.recv() => match event {
                    Ok(event) if event.file_id == file_id && event.kind != "file.status" => break,
                    Ok(event) if event.file_id == file_id && event.status == "cancelled" => break,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => {
                        deadline.as_mut().await;
                        break;
                    }
                },
            }
        }
    }
}

fn plain_text(transcript: &Transcript) -> String {
    transcript
        .segments
        .iter()
        .map(|s| s.text.trim())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whisper's language names, as OpenAI's verbose JSON reports them, for common codes.
fn language_name(code: &str) -> &str {
    match code {
        "en" => "english",
        "de" => "german",
        "fr" => "french",
        "es" => "spanish",
        "it" => "italian",
        "nl" => "dutch",
        "pt" => "portuguese",
        "pl" => "polish",
        "ru" => "russian",
        "zh" => "chinese",
        "ja" => "japanese",
        "ko" => "korean",
        "sv" => "swedish",
        "uk" => "ukrainian",
        "tr" => "turkish",
        other => other,
    }
}

fn respond(transcript: &Transcript, request: &Request) -> Response {
    let text_response = |body: String, media_type: &'static str| -> Response {
        let mut response = body.into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(media_type));
        response
    };
    match request.format {
        ResponseFormat::Json => Json(json!({"text": plain_text(transcript)})).into_response(),
        ResponseFormat::Text => {
            text_response(plain_text(transcript) + "\n", "text/plain; charset=utf-8")
        }
        ResponseFormat::Srt => text_response(
            render(transcript, Format::Srt, false),
            Format::Srt.media_type(),
        ),
        ResponseFormat::Vtt => text_response(
            render(transcript, Format::Vtt, false),
            Format::Vtt.media_type(),
        ),
        ResponseFormat::VerboseJson => Json(verbose_json(transcript, request)).into_response(),
    }
}

fn verbose_json(transcript: &Transcript, request: &Request) -> Value {
    let mut body = json!({
        "task": "transcribe",
        "language": language_name(&transcript.language),
        "duration": transcript.duration,
        "text": plain_text(transcript),
    });
    if request.segments {
        let segments: Vec<Value> = transcript
            .segments
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let avg_logprob = if s.words.is_empty() {
                    0.0
                } else {
                    s.words
                        .iter()
                        .map(|w| f64::from(w.probability.max(1e-6)).ln())
                        .sum::<f64>()
                        / s.words.len() as f64
                };
                json!({
                    "id": i,
                    "seek": 0,
                    "start": s.start,
                    "end": s.end,
                    "text": s.text,
                    "tokens": [],
                    "temperature": 0.0,
                    "avg_logprob": avg_logprob,
                    "compression_ratio": 0.0,
                    "no_speech_prob": 0.0,
                })
            })
            .collect();
        body["segments"] = Value::Array(segments);
    }
    if request.words {
        let words: Vec<Value> = transcript
            .segments
            .iter()
            .flat_map(|s| s.words.iter())
            .map(|w| json!({"word": w.text.trim(), "start": w.start, "end": w.end}))
            .collect();
        body["words"] = Value::Array(words);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::{Segment, Word};

    fn sample() -> Transcript {
        let word = |text: &str, start: f64, p: f32| Word {
            start,
            end: start + 0.4,
            text: text.to_owned(),
            probability: p,
            speaker: None,
        };
        Transcript {
            language: "en".to_owned(),
            duration: 3.0,
            speakers: Vec::new(),
            segments: vec![
                Segment {
                    id: 0,
                    start: 0.0,
                    end: 1.0,
                    speaker: None,
                    text: " Hello there.".to_owned(),
                    words: vec![word(" Hello", 0.0, 0.9), word(" there.", 0.5, 0.5)],
                    edited: false,
                    original_text: None,
                },
                Segment {
                    id: 1,
                    start: 1.5,
                    end: 2.5,
                    speaker: None,
                    text: " Bye.".to_owned(),
                    words: vec![word(" Bye.", 1.5, 1.0)],
                    edited: false,
                    original_text: None,
                },
            ],
        }
    }

    #[test]
    fn verbose_json_carries_segments_and_words_on_request() {
        let request = Request {
            format: ResponseFormat::VerboseJson,
            words: true,
            segments: false,
        };
        let body = verbose_json(&sample(), &request);
        assert_eq!(body["language"], "english");
        assert_eq!(body["text"], "Hello there. Bye.");
        assert!(body.get("segments").is_none());
        assert_eq!(body["words"][1]["word"], "there.");
        assert_eq!(body["words"][2]["start"], 1.5);
        let request = Request {
            format: ResponseFormat::VerboseJson,
            words: false,
            segments: true,
        };
        let body = verbose_json(&sample(), &request);
        let expected = (0.9f64.ln() + 0.5f64.ln()) / 2.0;
        let got = body["segments"][0]["avg_logprob"].as_f64().unwrap();
        assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
        assert!(body.get("words").is_none());
    }

    #[test]
    fn response_formats_parse_and_unknown_ones_do_not() {
        assert_eq!(ResponseFormat::parse("srt"), Some(ResponseFormat::Srt));
        assert_eq!(
            ResponseFormat::parse("verbose_json"),
            Some(ResponseFormat::VerboseJson)
        );
        assert_eq!(ResponseFormat::parse("xml"), None);
    }
}
