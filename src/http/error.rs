//! The only place errors become HTTP responses: `{"code", "message"}` with the status from
//! the code table in `crate::error`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::error::Error;

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_id: Option<&'a str>,
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
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
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
