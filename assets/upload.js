// Resumable uploads through /api/uploads (docs/uploads.md): a file goes in chunks, each at the
// offset the server confirmed; after a network drop or a server error the upload asks the
// server where it is and continues from there, with backoff, until it is done or cancelled.

import { state } from "./lib.js";

export const CHUNK_SIZE = 8 * 1024 * 1024;
/// Waits between retries after a failure (ms); the last one repeats.
const BACKOFF = [1000, 2000, 4000, 8000, 15000, 30000];

/// A failure the server meant (4xx other than a conflict): retrying will not help.
export class UploadRefused extends Error {
  constructor(status, code, message, data) {
    super(message);
    this.status = status;
    this.code = code;
    this.data = data;
  }
}

class Cancelled extends Error {}

function headers(extra = {}) {
  const h = { ...extra };
  if (state.csrf) h["X-CSRF-Token"] = state.csrf;
  return h;
}

/// One request with XHR (fetch has no upload progress); resolves with {status, data, offset},
/// rejects on a network failure.
function send(method, path, { body, json, extra, onProgress, signal } = {}) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open(method, path);
    for (const [key, value] of Object.entries(headers(extra))) request.setRequestHeader(key, value);
    if (json !== undefined) request.setRequestHeader("Content-Type", "application/json");
    if (onProgress) request.upload.onprogress = (e) => onProgress(e.loaded);
    const abort = () => request.abort();
    signal?.addEventListener("abort", abort, { once: true });
    const done = () => signal?.removeEventListener("abort", abort);
    request.onload = () => {
      done();
      let data = null;
      try { data = request.responseText ? JSON.parse(request.responseText) : null; } catch { /* not JSON */ }
      const header = request.getResponseHeader("Upload-Offset");
      const offset = header !== null ? Number(header) : (data && typeof data.offset === "number" ? data.offset : null);
      resolve({ status: request.status, data, offset });
    };
    request.onerror = () => { done(); reject(new Error("network")); };
    request.ontimeout = request.onerror;
    request.onabort = () => { done(); reject(new Cancelled("cancelled")); };
    request.send(json !== undefined ? JSON.stringify(json) : body);
  });
}

function refused(response) {
  const data = response.data || {};
  return new UploadRefused(response.status, data.code || "http", data.message || `HTTP ${response.status}`, data);
}

/// Whether to try again: the network, a 5xx, a timeout or a conflict (someone else's write).
function retryable(response) {
  return response.status >= 500 || response.status === 408 || response.status === 409 || response.status === 429;
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => { clearTimeout(timer); reject(new Cancelled("cancelled")); }, { once: true });
  });
}

/// Runs `step` until it succeeds, waiting longer after each failure; `onRetry(ms)` is told.
async function withRetry(step, { signal, onRetry }) {
  for (let attempt = 0; ; attempt++) {
    if (signal?.aborted) throw new Cancelled("cancelled");
    let response;
    try {
      response = await step();
    } catch (e) {
      if (e instanceof Cancelled || e instanceof UploadRefused) throw e;
      response = null;
    }
    if (response && !retryable(response)) return response;
    const wait = BACKOFF[Math.min(attempt, BACKOFF.length - 1)];
    onRetry?.(wait, response);
    await sleep(wait, signal);
  }
}

/// Opens a session. `options` are the upload form's fields (strings; blank ones dropped).
export async function openSession(name, { size, kind, options = {}, signal, onRetry } = {}) {
  const cleaned = {};
  for (const [key, value] of Object.entries(options)) if (value !== "" && value != null) cleaned[key] = String(value);
  const json = { name, options: cleaned };
  if (size) json.size = size;
  if (kind) json.kind = kind;
  const response = await withRetry(() => send("POST", "/api/uploads", { json, signal }), { signal, onRetry });
  if (response.status !== 201) throw refused(response);
  return response.data;
}

/// The server's offset of a session.
async function serverOffset(id, signal, onRetry) {
  const response = await withRetry(() => send("GET", `/api/uploads/${id}`, { signal }), { signal, onRetry });
  if (response.status !== 200) throw refused(response);
  if (response.data.state === "completed") {
    throw new UploadRefused(409, "upload-finished", "this upload was already completed", response.data);
  }
  return response.data.offset;
}

/// Sends `blob` (the bytes from `start` on) to the session, continuing from whatever offset the
/// server has after any failure. Resolves with the new offset (start + blob.size).
export async function sendBytes(id, blob, start, { signal, onProgress, onRetry } = {}) {
  const end = start + blob.size;
  let offset = start;
  let failures = 0;
  while (offset < end) {
    const chunk = blob.slice(offset - start, Math.min(offset - start + CHUNK_SIZE, blob.size));
    let response;
    try {
      response = await send("PATCH", `/api/uploads/${id}`, {
        body: chunk,
        extra: { "Upload-Offset": String(offset), "Content-Type": "application/offset+octet-stream" },
        onProgress: (loaded) => onProgress?.(offset + loaded),
        signal,
      });
    } catch (e) {
      if (e instanceof Cancelled) throw e;
      response = null;
    }
    if (response && response.status === 200) {
      offset = response.offset;
      failures = 0;
      onProgress?.(offset);
      continue;
    }
    if (response && (!retryable(response) || response.data?.code === "upload-finished")) throw refused(response);
    // A cut connection, a busy session, a wrong offset or a server error: wait, ask, go on.
    const wait = BACKOFF[Math.min(failures++, BACKOFF.length - 1)];
    onRetry?.(wait, response);
    await sleep(wait, signal);
    offset = await serverOffset(id, signal, onRetry);
    if (offset > end || offset < start) throw new UploadRefused(409, "upload-offset-mismatch", "offset out of range", null);
    onProgress?.(offset);
  }
  return offset;
}

/// Completes a session into a file (retried: completing twice answers the same file).
export async function completeSession(id, { signal, onRetry } = {}) {
  const response = await withRetry(() => send("POST", `/api/uploads/${id}/complete`, { signal }), { signal, onRetry });
  if (response.status !== 200) throw refused(response);
  return response.data;
}

/// Aborts a session (best effort; a chunk still being written on the server makes it wait).
export async function abortSession(id) {
  for (let attempt = 0; attempt < 5; attempt++) {
    const response = await send("DELETE", `/api/uploads/${id}`).catch(() => null);
    if (response && response.status !== 409) return;
    await sleep(1000);
  }
}

/// Uploads one file with resume. `onProgress(fraction)`, `onRetry(ms)`, `signal` to cancel.
/// Resolves with the new file; rejects with `UploadRefused` (the server said no) or a
/// cancellation (`error.name === "AbortError"`-like: check `signal.aborted`).
export async function uploadFile(file, options, { signal, onProgress, onRetry } = {}) {
  const session = await openSession(file.name, { size: file.size, options, signal, onRetry });
  try {
    await sendBytes(session.id, file, 0, {
      signal,
      onRetry,
      onProgress: (sent) => onProgress?.(file.size ? sent / file.size : 1),
    });
    return await completeSession(session.id, { signal, onRetry });
  } catch (e) {
    if (signal?.aborted) abortSession(session.id);
    throw e;
  }
}

export function isCancelled(error) {
  return error instanceof Cancelled;
}
