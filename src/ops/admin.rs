//! The admin socket: one JSON request line in, one JSON response line out, per connection.
//! Served by the daemon (`spawn`), used by the CLI (`request`).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::{AppState, blocking};

/// Longest request line accepted; requests are a few dozen bytes.
const MAX_REQUEST_BYTES: u64 = 4096;
/// `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    Status,
    /// Prepare an online backup in the staging dir; the answer names it.
    BackupStage,
    /// The CLI has copied the staged backup; remove it.
    BackupRelease {
        id: String,
    },
}

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(super::ADMIN_SOCKET)
}

/// Binds the socket (replacing a stale one left by a crash: the redb lock already proved no other
/// daemon runs on this data dir) and serves it until shutdown. A path too long for a unix socket
/// only costs the admin commands, so it is logged, not fatal.
pub fn spawn(
    state: AppState,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> std::io::Result<Option<PathBuf>> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(&state.config.data_dir);
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        tracing::warn!(path = %path.display(), "data dir path too long for the admin socket; `status` and online `backup` are unavailable");
        return Ok(None);
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let own_uid = current_uid();
    let served = path.clone();
    let task_tracker = tracker.clone();
    tracker.spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let allowed = stream
                        .peer_cred()
                        .map(|cred| cred.uid() == 0 || cred.uid() == own_uid)
                        .unwrap_or(false);
                    if !allowed {
                        tracing::warn!("admin socket: refused a peer that is neither root nor the daemon's user");
                        continue;
                    }
                    let state = state.clone();
                    task_tracker.spawn(async move {
                        if let Err(e) = serve_connection(stream, state).await {
                            tracing::debug!(error = %e, "admin connection ended");
                        }
                    });
                }
            }
        }
        let _ = std::fs::remove_file(&served);
    });
    Ok(Some(path))
}

async fn serve_connection(stream: tokio::net::UnixStream, state: AppState) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let (read, mut write) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST_BYTES));
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line)).await;
    let response = match read {
        Err(_) => json!({"ok": false, "error": "request timed out"}),
        Ok(Err(e)) => json!({"ok": false, "error": format!("cannot read request: {e}")}),
        Ok(Ok(_)) => match serde_json::from_str::<Request>(line.trim()) {
            Err(e) => json!({"ok": false, "error": format!("bad request: {e}")}),
            Ok(request) => answer(request, state).await,
        },
    };
    let mut bytes = serde_json::to_vec(&response).unwrap_or_default();
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    write.shutdown().await
}

async fn answer(request: Request, state: AppState) -> Value {
    let result = match request {
        Request::Status => {
            blocking(move || {
                Ok::<_, crate::error::Error>(
                    serde_json::to_value(super::status::gather(&state)).unwrap_or_default(),
                )
            })
            .await
        }
        Request::BackupStage => blocking(move || super::backup::stage_online(&state)).await,
        Request::BackupRelease { id } => {
            blocking(move || super::backup::release_staged(&state.config.data_dir, &id)).await
        }
    };
    match result {
        Ok(Value::Object(mut map)) => {
            map.insert("ok".to_owned(), Value::Bool(true));
            Value::Object(map)
        }
        Ok(other) => json!({"ok": true, "result": other}),
        Err(e) => {
            tracing::warn!(error = %e, "admin request failed");
            let message = match &e.internal_cause {
                Some(cause) => format!("{}: {cause}", e.code),
                None => e.message.clone(),
            };
            json!({"ok": false, "error": message})
        }
    }
}

/// Why the CLI could not get an answer from a daemon.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No socket, or nobody listening: no daemon runs on this data dir.
    #[error("no opentranscribe daemon is running on {0} (no answer on its admin socket)")]
    NotRunning(PathBuf),
    #[error("cannot reach the admin socket {path}: {source} (run as root or as the service user)")]
    Denied {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("admin socket {path}: {message}")]
    Failed { path: PathBuf, message: String },
}

/// Sends one request and returns the daemon's answer (an object with `"ok": true`).
pub fn request(data_dir: &Path, request: &Request, timeout: Duration) -> Result<Value, AdminError> {
    let path = socket_path(data_dir);
    let failed = |message: String| AdminError::Failed {
        path: path.clone(),
        message,
    };
    let stream = match std::os::unix::net::UnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(AdminError::NotRunning(data_dir.to_path_buf()));
        }
        Err(e) => return Err(AdminError::Denied { path, source: e }),
    };
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| failed(e.to_string()))?;
    let mut line = serde_json::to_vec(request).map_err(|e| failed(e.to_string()))?;
    line.push(b'\n');
    (&stream)
        .write_all(&line)
        .map_err(|e| failed(format!("cannot send: {e}")))?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(|e| failed(format!("no answer: {e}")))?;
    let value: Value =
        serde_json::from_str(answer.trim()).map_err(|e| failed(format!("bad answer: {e}")))?;
    if value["ok"] != Value::Bool(true) {
        return Err(failed(
            value["error"]
                .as_str()
                .unwrap_or("request failed")
                .to_owned(),
        ));
    }
    Ok(value)
}

fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    unsafe {
        libc::getuid()
    }
}
