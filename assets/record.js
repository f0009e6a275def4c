// Recording in the browser: the microphone, a tab's audio (where the browser shares it), or
// both mixed, with a level meter and a timer. MediaRecorder hands over a piece every second and
// each piece goes straight to an upload session (kind "recording", upload.js), so a closed tab
// loses at most the last second: the server turns what it received into a file by itself.

import { STRINGS } from "./strings.js";
import { announce, el, field, select } from "./lib.js";
import { abortSession, completeSession, isCancelled, openSession, sendBytes } from "./upload.js";

const TIMESLICE_MS = 1000;

function supported() {
  return !!(window.MediaRecorder && navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
}

function tabAudioSupported() {
  return !!(navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia);
}

function pickMimeType() {
  for (const type of ["audio/webm;codecs=opus", "audio/webm", "audio/ogg;codecs=opus"]) {
    if (MediaRecorder.isTypeSupported?.(type)) return type;
  }
  return "";
}

function clock(ms) {
  const secs = Math.floor(ms / 1000);
  const pad = (n) => String(n).padStart(2, "0");
  const hours = Math.floor(secs / 3600);
  return `${hours ? `${hours}:` : ""}${pad(Math.floor(secs / 60) % 60)}:${pad(secs % 60)}`;
}

function recordingName(mimeType) {
  const now = new Date();
  const pad = (n) => String(n).padStart(2, "0");
  const stamp = `${now.getFullYear()}-${pad(now.getMonth() + 1)}-${pad(now.getDate())} ${pad(now.getHours())}-${pad(now.getMinutes())}`;
  return `${STRINGS.recordingFileName(stamp)}.${mimeType.includes("ogg") ? "ogg" : "webm"}`;
}

/// The streams for a source: `mic`, `tab` or `both` (tab audio mixed with the microphone).
async function openStreams(source) {
  const streams = [];
  try {
    if (source === "tab" || source === "both") {
      // Chrome shares a tab's audio only along with video; the video track is dropped.
      const display = await navigator.mediaDevices.getDisplayMedia({ audio: true, video: true });
      display.getVideoTracks().forEach((t) => t.stop());
      if (!display.getAudioTracks().length) throw new Error(STRINGS.recordNoTabAudio);
      streams.push(display);
    }
    if (source === "mic" || source === "both") {
      streams.push(await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: source === "mic", noiseSuppression: false } }));
    }
  } catch (e) {
    streams.forEach((s) => s.getTracks().forEach((t) => t.stop()));
    throw e;
  }
  return streams;
}

/// The panel is built once and survives navigation (a recording goes on while other pages are
/// open, and its controls are there when the file list comes back).
let panel = null;
let recorded = () => {};

/// Asks before the tab is closed while a recording runs (the server keeps what it received).
function guardUnload(event) {
  event.preventDefault();
  event.returnValue = "";
}

/// The recorder panel; `onRecorded()` runs when a recording has become a file.
export function recordSection(onRecorded) {
  recorded = onRecorded;
  if (!panel) panel = buildSection();
  return panel;
}

function buildSection() {
  const onRecorded = (file) => recorded(file);
  const section = el("section", { class: "recorder", "aria-labelledby": "record-heading", "data-state": "idle" });
  section.append(el("h2", { id: "record-heading", class: "small-heading" }, STRINGS.recordHeading));
  if (!supported()) {
    section.append(el("p", { class: "muted" }, STRINGS.recordUnsupported));
    return section;
  }
  const sources = [["mic", STRINGS.recordSourceMic]];
  if (tabAudioSupported()) sources.push(["tab", STRINGS.recordSourceTab], ["both", STRINGS.recordSourceBoth]);
  const source = select({ name: "record-source" }, sources, "mic");
  const start = el("button", { type: "button", class: "record-start" }, STRINGS.recordStart);
  const stop = el("button", { type: "button", class: "record-stop", disabled: true }, STRINGS.recordStop);
  const meter = el("meter", { class: "level", min: "0", max: "1", low: "0.6", high: "0.85", optimum: "0.3", value: "0", "aria-label": STRINGS.recordLevel });
  const timer = el("span", { class: "record-timer", role: "timer", "aria-label": STRINGS.recordElapsed }, clock(0));
  const status = el("p", { class: "muted record-status", "aria-live": "polite" });
  section.append(
    el("div", { class: "record-controls" }, field(STRINGS.recordSource, source), start, stop),
    el("div", { class: "record-meter" }, meter, " ", timer),
    status);

  let session = null;
  const setState = (value, text) => {
    section.dataset.state = value;
    if (text !== undefined) status.textContent = text;
  };

  start.addEventListener("click", async () => {
    if (session) return;
    start.disabled = true;
    source.disabled = true;
    setState("starting", STRINGS.recordStarting);
    try {
      session = await startRecording(source.value, { meter, timer, setState, onRecorded, announceDone: announce });
      window.addEventListener("beforeunload", guardUnload);
      // Stopped by the browser (a shared tab closed): the panel is ready again.
      session.stopped.then(() => {
        window.removeEventListener("beforeunload", guardUnload);
        session = null;
        start.disabled = false;
        source.disabled = false;
        stop.disabled = true;
      });
      stop.disabled = false;
      stop.focus();
    } catch (e) {
      session = null;
      setState("idle", STRINGS.recordFailed(e.message || String(e)));
      start.disabled = false;
      source.disabled = false;
    }
  });
  stop.addEventListener("click", async () => {
    if (!session) return;
    stop.disabled = true;
    await session.stop();
  });
  return section;
}

async function startRecording(sourceName, { meter, timer, setState, onRecorded, announceDone }) {
  const streams = await openStreams(sourceName);
  const audio = new AudioContext();
  const mix = audio.createMediaStreamDestination();
  const analyser = audio.createAnalyser();
  analyser.fftSize = 2048;
  for (const stream of streams) {
    const node = audio.createMediaStreamSource(stream);
    node.connect(mix);
    node.connect(analyser);
  }
  const mimeType = pickMimeType();
  const recorder = new MediaRecorder(mix.stream, mimeType ? { mimeType, audioBitsPerSecond: 64000 } : {});
  const controller = new AbortController();
  const upload = await openSession(recordingName(recorder.mimeType || mimeType || "webm"), { kind: "recording", signal: controller.signal });

  // Pieces go out one after another, in order, each at the offset the last one reached.
  const pending = [];
  let offset = 0;
  let sending = null;
  let failed = null;
  const pump = async () => {
    while (pending.length && !failed) {
      const blob = pending.shift();
      try {
        offset = await sendBytes(upload.id, blob, offset, {
          signal: controller.signal,
          onRetry: (ms) => setState("recording", STRINGS.recordReconnecting(Math.ceil(ms / 1000))),
        });
      } catch (e) {
        if (!isCancelled(e)) failed = e;
      }
    }
    sending = null;
  };
  recorder.addEventListener("dataavailable", (event) => {
    if (!event.data || !event.data.size) return;
    pending.push(event.data);
    if (!sending) sending = pump();
  });

  // The meter: RMS of the latest samples, 0..1 (scaled so speech shows), every frame.
  const samples = new Float32Array(analyser.fftSize);
  const started = performance.now();
  let frame = 0;
  const draw = () => {
    analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const s of samples) sum += s * s;
    meter.value = Math.min(1, Math.sqrt(sum / samples.length) * 4);
    timer.textContent = clock(performance.now() - started);
    frame = requestAnimationFrame(draw);
  };
  draw();
  recorder.start(TIMESLICE_MS);
  setState("recording", STRINGS.recordRecording);
  announceDone(STRINGS.recordRecording);
  // A shared tab that stops sharing ends the recording like the stop button.
  let stopping = null;
  const stop = () => {
    if (stopping) return stopping;
    stopping = (async () => {
      const stopped = new Promise((resolve) => recorder.addEventListener("stop", resolve, { once: true }));
      if (recorder.state !== "inactive") recorder.stop();
      await stopped;
      cancelAnimationFrame(frame);
      meter.value = 0;
      streams.forEach((s) => s.getTracks().forEach((t) => t.stop()));
      audio.close().catch(() => {});
      setState("saving", STRINGS.recordSaving);
      // The last piece arrives with "stop"; wait until every piece is sent.
      while (sending) await sending;
      if (failed) {
        setState("idle", STRINGS.recordFailed(failed.message));
        return;
      }
      try {
        const file = await completeSession(upload.id, { signal: controller.signal });
        setState("done", STRINGS.recordSaved(file.filename));
        announceDone(STRINGS.recordSaved(file.filename));
        onRecorded?.(file);
      } catch (e) {
        setState("idle", STRINGS.recordFailed(e.message || String(e)));
        if (e.code === "upload-incomplete") abortSession(upload.id);
      }
    })();
    return stopping;
  };
  let ended;
  const stopped = new Promise((resolve) => { ended = resolve; });
  const stopAndEnd = () => stop().finally(ended);
  for (const stream of streams) for (const track of stream.getAudioTracks()) track.addEventListener("ended", stopAndEnd);
  return { stop: stopAndEnd, stopped, upload };
}
