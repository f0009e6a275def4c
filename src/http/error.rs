//! The only place errors become HTTP responses: `{"code", "message"}` with the status from
//! the code table in `crate::error`.

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::Error;

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_id: Option<&'a str>,
    /// An upload session's real offset (upload refusals only).
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // Server-side causes are logged with an id the user can quote; they never reach the client.
        let error_id = self
            .internal_cause
            .as_ref()
            .map(|cause| {
                let id = uuid::Uuid::now_v7().to_string();
                tracing::error!(error_id = %id, code = self.code, cause = %cause, "request failed");
                id
            })
            .or_else(|| {
                if status.is_server_error() {
                    let id = uuid::Uuid::now_v7().to_string();
                    tracing::error!(error_id = %id, code = self.code, message = %self.message, "request failed");
                    Some(id)
                } else {
                    None
                }
            });
        let body = ErrorBody {
            code: self.code,
            message: &self.message,
            error_id: error_id.as_deref(),
            offset: self.upload_offset,
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if let Some(offset) = self.upload_offset {
            response
                .headers_mut()
                .insert("upload-offset", HeaderValue::from(offset));
        }
        // The rest of a body that timed out is never read: the connection cannot be reused.
        if status == StatusCode::REQUEST_TIMEOUT {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

/// Axum's own rejections (a path segment that is not a number, an upload without a multipart
/// boundary, a WebSocket request without upgrade headers, a method a route does not serve) are
/// plain text. Under `/api/` they become the `{"code", "message"}` body every other error has,
/// with the same status and headers.
pub async fn rejections_as_json(request: Request, next: Next) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let response = next.run(request).await;
    let status = response.status();
    if !api || !status.is_client_error() {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let code = match status {
        StatusCode::BAD_REQUEST => "bad-request",
        StatusCode::METHOD_NOT_ALLOWED => "method-not-allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload-too-large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported-media",
        StatusCode::UPGRADE_REQUIRED => "upgrade-required",
        _ => return response,
    };
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    // Rejection texts are one line; anything longer is cut, not buffered.
    let bytes = axum::body::to_bytes(body, 16 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).trim().to_owned();
    let message = if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("refused")
            .to_lowercase()
    } else {
        text
    };
    let mut converted = Error::new(code, message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            converted.headers_mut().append(name.clone(), value.clone());
        }
    }
    converted
}
