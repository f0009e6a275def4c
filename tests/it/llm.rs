//! Summaries and questions on a language model, end to end against the real daemon and a
//! separate OpenAI-compatible STUB server (`llm_stub.py`: no model can be fetched here, so it
//! answers deterministically from the prompt and records every request). Shown: map-reduce over
//! speaker turns within `context_tokens` on a real transcription, answers whose citations name
//! real segments, name suggestions only for names that are said, malformed output and a hanging
//! server as clear errors, the key file's mode and header, per-user isolation, prompt templates,
//! the summary in search, no model configured, and re-runs raced with deletes.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::asr::{LIBRIVOX, references};
use crate::support::{TestServer, json as body_json, sine_wav};

const KEY: &str = "sk-stub-0123456789";

/// The stub server, started on a free port; its requests land in `record`.
struct Stub {
    _child: Child,
    port: u16,
    record: PathBuf,
    _dir: tempfile::TempDir,
}

impl Stub {
    async fn start(mode: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("requests.jsonl");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/llm_stub.py");
        let mut child = Command::new("python3")
            .arg(script)
            .env("STUB_RECORD", &record)
            .env("STUB_MODE", mode)
            .env("STUB_KEY", KEY)
            .env("STUB_HANG_SECS", "30")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs the stub");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("the stub starts")
            .unwrap()
            .unwrap();
        let port = first.strip_prefix("PORT ").unwrap().parse().unwrap();
        Self {
            _child: child,
            port,
            record,
            _dir: dir,
        }
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// A key file with `mode`, inside `dir`.
fn key_file(dir: &Path, mode: u32) -> String {
    let path = dir.join("llm.key");
    std::fs::write(&path, format!("{KEY}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.display().to_string()
}

fn with_llm(
    c: &mut opentranscribe::config::Config,
    stub: &Stub,
    key_dir: &Path,
    context_tokens: usize,
) {
    c.llm.enabled = true;
    c.llm.base_url = stub.base_url();
    c.llm.model = "stub-model".to_owned();
    c.llm.key_file = key_file(key_dir, 0o600);
    c.llm.timeout_secs = 20;
    c.llm.context_tokens = context_tokens;
    c.llm.max_output_tokens = 64;
}

/// Polls a file's summary until it leaves `running`.
async fn wait_summary(server: &TestServer, token: &str, file: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = server
            .call(
                Method::GET,
                &format!("/api/files/{file}/summary"),
                token,
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        if body["status"] != "running" {
            return body;
        }
        assert!(Instant::now() < deadline, "summary never ended: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A file with the given transcript, saved through the real job queue (workers off: the test
/// claims the job and finishes it as a worker would).
async fn file_with_transcript(
    server: &TestServer,
    token: &str,
    round: usize,
    transcript: &Value,
) -> String {
    let created = body_json(
        server
            .upload(
                token,
                "meeting.wav",
                sine_wav(0.25, 16_000, 300.0 + round as f32),
            )
            .await,
    )
    .await;
    let file_id = created["id"].as_str().unwrap().to_owned();
    let store = server.running().state.store.clone();
    let bytes = serde_json::to_vec(transcript).unwrap();
    serde_json::from_slice::<opentranscribe::transcript::Transcript>(&bytes).unwrap();
    let id = file_id.clone();
    tokio::task::spawn_blocking(move || {
        let now = opentranscribe::store::now_secs();
        let (job, _) = store
            .claim_job(now, 120)
            .unwrap()
            .expect("the job is queued");
        assert_eq!(job.file_id, id);
        store
            .finish_job(
                &id,
                opentranscribe::store::JobOutcome::Completed {
                    transcript_json: bytes,
                    speaker_embeddings: None,
                    waveform: None,
                    stage_seconds: Vec::new(),
                },
                opentranscribe::store::RetryPolicy {
                    max_attempts: 1,
                    backoff_base_secs: 1,
                },
                false,
                now,
            )
            .unwrap();
    })
    .await
    .unwrap();
    file_id
}

/// Every LibriVox clip, four times, as one 16 kHz mono WAV (about 100 s of reading): enough segments
/// for several chunks.
fn librivox_reading() -> Vec<u8> {
    let mut pcm = Vec::new();
    for _ in 0..4 {
        for (id, _) in references() {
            let bytes = std::fs::read(format!("{LIBRIVOX}/{id}.wav")).unwrap();
            let data = bytes.windows(4).position(|w| w == b"data").unwrap() + 8;
            pcm.extend_from_slice(&bytes[data..]);
        }
    }
    let mut wav = Vec::with_capacity(pcm.len() + 44);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + pcm.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes());
    wav.extend_from_slice(&16_000u32.to_le_bytes());
    wav.extend_from_slice(&32_000u32.to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(pcm.len() as u32).to_le_bytes());
    wav.extend_from_slice(&pcm);
    wav
}

/// A two-person meeting where one thanks the other by name.
fn meeting() -> Value {
    let said = [
        (
            "SPEAKER_00",
            "Good morning, let us look at the budget for the new library.",
        ),
        (
            "SPEAKER_01",
            "Thanks, Maria. The budget for books is tight this year.",
        ),
        (
            "SPEAKER_01",
            "We should ask the council for more money before March.",
        ),
        (
            "SPEAKER_00",
            "Agreed, I will write to the council this week.",
        ),
    ];
    let segments: Vec<Value> = said
        .iter()
        .enumerate()
        .map(|(i, (speaker, text))| {
            json!({"id": i, "start": i as f64 * 5.0, "end": i as f64 * 5.0 + 4.5,
                   "speaker": speaker, "text": text, "words": []})
        })
        .collect();
    json!({
        "language": "en", "duration": 20.0,
        "speakers": [
            {"id": "SPEAKER_00", "label": "Speaker 1", "name": null},
            {"id": "SPEAKER_01", "label": "Speaker 2", "name": null},
        ],
        "segments": segments,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn summary_of_a_real_transcription_is_map_reduced_cited_searchable_and_private() {
    let stub = Stub::start("ok").await;
    let keys = tempfile::tempdir().unwrap();
    let context = 800;
    let server = TestServer::start_with(|c| {
        c.models_dir = crate::models::models_dir();
        c.jobs.model = "whisper-tiny.en".to_owned();
        with_llm(c, &stub, keys.path(), context);
    })
    .await;
    let alice = server.admin().await;
    let bob = server.user(&alice, "bob").await;

    // Readiness reports the model as an informational field.
    let (status, ready) = server.call(Method::GET, "/api/ready", &alice, None).await;
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["llm"]["configured"], true, "{ready}");
    assert_eq!(ready["llm"]["reachable"], true, "{ready}");

    let created = body_json(
        server
            .upload(&alice, "reading.wav", librivox_reading())
            .await,
    )
    .await;
    let file = created["id"].as_str().unwrap().to_owned();
    assert_eq!(server.wait_done(&alice, &file).await["status"], "completed");
    let (_, transcript) = server
        .call(
            Method::GET,
            &format!("/api/files/{file}/transcript"),
            &alice,
            None,
        )
        .await;
    let segments = transcript["segments"].as_array().unwrap().clone();
    let starts: Vec<f64> = segments
        .iter()
        .map(|s| s["start"].as_f64().unwrap())
        .collect();

    let (status, none) = server
        .call(
            Method::GET,
            &format!("/api/files/{file}/summary"),
            &alice,
            None,
        )
        .await;
    assert_eq!(
        (status, none["status"].as_str()),
        (200, Some("none")),
        "{none}"
    );
    let (status, started) = server
        .call(
            Method::POST,
            &format!("/api/files/{file}/summary"),
            &alice,
            None,
        )
        .await;
    assert_eq!(status, 202, "{started}");
    assert_eq!(started["status"], "running");
    let done = wait_summary(&server, &alice, &file).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["model"], "stub-model");
    assert!(
        done["summary"]
            .as_str()
            .unwrap()
            .starts_with("Stubsummary: "),
        "{done}"
    );

    // Map-reduce: one request per chunk, then the reduce; each within the context.
    let requests = stub.requests();
    let maps: Vec<&Value> = requests.iter().filter(|r| r["kind"] == "map").collect();
    let reduces = requests.iter().filter(|r| r["kind"] == "reduce").count();
    let chunks = done["chunks"].as_u64().unwrap() as usize;
    assert!(chunks >= 2, "a short context splits the transcript: {done}");
    assert_eq!(maps.len(), chunks, "{requests:?}");
    assert!(reduces >= 1);
    for request in &requests {
        let prompt = request["prompt_bytes"].as_u64().unwrap() as usize;
        let asked = request["max_tokens"].as_u64().unwrap() as usize;
        assert!(
            prompt.div_ceil(3) + asked <= context,
            "over the context: {request}"
        );
        assert_eq!(request["authorization"], format!("Bearer {KEY}"));
        assert_eq!(request["model"], "stub-model");
    }
    // Every segment went to exactly one map call, in order.
    let mapped: Vec<f64> = maps
        .iter()
        .flat_map(|r| {
            r["user"]
                .as_str()
                .unwrap()
                .lines()
                .filter_map(|l| l.strip_prefix('[')?.split("s]").next()?.parse::<f64>().ok())
                .collect::<Vec<_>>()
        })
        .collect();
    let rounded: Vec<f64> = starts.iter().map(|s| (s * 10.0).round() / 10.0).collect();
    assert_eq!(mapped, rounded);
    // Items point at real segments.
    for item in done["action_items"].as_array().unwrap() {
        let t = item["time"].as_f64().expect("a time");
        assert!(starts.iter().any(|s| (s - t).abs() < 0.06), "{item}");
    }
    println!(
        "summary: {} segments ({:.1} s), {chunks} map calls + {reduces} reduce calls, context {context} tokens, largest request {} bytes",
        segments.len(),
        segments.last().unwrap()["end"].as_f64().unwrap(),
        requests
            .iter()
            .map(|r| r["prompt_bytes"].as_u64().unwrap())
            .max()
            .unwrap()
    );

    // A question is answered from the segments; only real segments are cited.
    let question = segments[1]["text"].as_str().unwrap().to_owned();
    let (status, answer) = server
        .call(
            Method::POST,
            &format!("/api/files/{file}/ask"),
            &alice,
            Some(json!({"question": format!("What was said about {question}")})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let citations = answer["citations"].as_array().unwrap();
    assert_eq!(
        citations.len(),
        1,
        "the invented [9999.0s] is dropped: {answer}"
    );
    assert!(
        answer["answer"].as_str().unwrap().contains("9999"),
        "{answer}"
    );
    let cited = citations[0]["start"].as_f64().unwrap();
    assert!((cited - starts[1]).abs() < 0.06, "{answer}");
    let (status, empty) = server
        .call(
            Method::POST,
            &format!("/api/files/{file}/ask"),
            &alice,
            Some(json!({"question": "  "})),
        )
        .await;
    assert_eq!(
        (status, empty["code"].as_str()),
        (400, Some("invalid-question"))
    );

    // The summary is searchable by a word that only it contains.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, found) = server
            .call(Method::GET, "/api/search?q=stubsummary", &alice, None)
            .await;
        assert_eq!(status, 200, "{found}");
        if found["total"].as_u64() >= Some(1) {
            assert_eq!(found["hits"][0]["file_id"], file.as_str());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "summary never searchable: {found}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, theirs) = server
        .call(Method::GET, "/api/search?q=stubsummary", &bob, None)
        .await;
    assert_eq!(theirs["total"], 0, "{theirs}");

    // Another user's file is 404 on every route.
    for (method, path, body) in [
        (Method::GET, format!("/api/files/{file}/summary"), None),
        (Method::POST, format!("/api/files/{file}/summary"), None),
        (
            Method::POST,
            format!("/api/files/{file}/ask"),
            Some(json!({"question": "budget?"})),
        ),
    ] {
        let (status, body) = server.call(method, &path, &bob, body).await;
        assert_eq!(status, 404, "{path}: {body}");
    }

    // Own templates: validated, used by the next run (which replaces the summary), and private.
    let (status, prompts) = server
        .call(Method::GET, "/api/account/llm-prompts", &alice, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(prompts["custom"]["map"], false);
    assert!(
        prompts["defaults"]["map"]
            .as_str()
            .unwrap()
            .contains("{transcript}")
    );
    let (status, refused) = server
        .call(
            Method::PUT,
            "/api/account/llm-prompts",
            &alice,
            Some(json!({"map": "Notes please {secret}"})),
        )
        .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (400, Some("invalid-prompt")),
        "{refused}"
    );
    let (status, refused) = server
        .call(
            Method::PUT,
            "/api/account/llm-prompts",
            &alice,
            Some(json!({"map": "no placeholder"})),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    let (status, set) = server
        .call(
            Method::PUT,
            "/api/account/llm-prompts",
            &alice,
            Some(json!({"map": "CUSTOMMARK part {part}/{parts} of {filename}:\n{transcript}"})),
        )
        .await;
    assert_eq!(
        (status, &set["custom"]["map"]),
        (200, &json!(true)),
        "{set}"
    );
    let (_, theirs) = server
        .call(Method::GET, "/api/account/llm-prompts", &bob, None)
        .await;
    assert_eq!(theirs["custom"]["map"], false);
    let before = stub.requests().len();
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/api/files/{file}/summary"),
            &alice,
            None,
        )
        .await;
    assert_eq!(status, 202);
    let again = wait_summary(&server, &alice, &file).await;
    assert_eq!(again["status"], "done", "{again}");
    let rerun: Vec<Value> = stub.requests().into_iter().skip(before).collect();
    let custom_maps = rerun
        .iter()
        .filter(|r| r["kind"] == "map" && r["user"].as_str().unwrap().starts_with("CUSTOMMARK"))
        .count();
    assert_eq!(
        custom_maps,
        again["chunks"].as_u64().unwrap() as usize,
        "{rerun:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn names_are_suggested_only_when_said_and_bad_output_is_a_clear_error() {
    let stub = Stub::start("ok").await;
    let keys = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(|c| {
        c.jobs.workers = 0;
        with_llm(c, &stub, keys.path(), 4096);
    })
    .await;
    let alice = server.admin().await;
    let file = file_with_transcript(&server, &alice, 0, &meeting()).await;
    let mut events = crate::pipeline::connect_events(&server, &alice).await;
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/api/files/{file}/summary"),
            &alice,
            None,
        )
        .await;
    assert_eq!(status, 202);
    // Progress reaches the owner's WebSocket: each stage, then the end.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut stages = Vec::new();
    loop {
        let event = crate::pipeline::next_event(&mut events, deadline).await;
        if event["type"] != "summary.status" {
            continue;
        }
        assert_eq!(event["file_id"], file.as_str());
        stages.push(event["stage"].as_str().unwrap().to_owned());
        if event["status"] != "running" {
            assert_eq!(event["status"], "done", "{event}");
            break;
        }
    }
    assert_eq!(stages, ["queued", "map 1/1", "reduce", "done"]);
    let done = wait_summary(&server, &alice, &file).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["chunks"], 1);
    // The stub suggests "Maria" (said) and "Zebulon" (never said): only Maria is kept, with
    // the segment that says it as evidence.
    let names = done["speaker_names"].as_array().unwrap();
    assert_eq!(names.len(), 1, "{done}");
    assert_eq!(names[0]["speaker"], "SPEAKER_00");
    assert_eq!(names[0]["name"], "Maria");
    assert_eq!(names[0]["time"], 5.0);
    assert!(
        names[0]["evidence"]
            .as_str()
            .unwrap()
            .contains("Thanks, Maria")
    );
    assert_eq!(done["decisions"][0]["time"], 15.0, "{done}");

    // The same file on a server whose model answers prose: a clear error, no panic.
    drop(server);
    let prose = Stub::start("malformed").await;
    let server = TestServer::start_with(|c| {
        c.jobs.workers = 0;
        with_llm(c, &prose, keys.path(), 4096);
    })
    .await;
    let alice = server.admin().await;
    let file = file_with_transcript(&server, &alice, 1, &meeting()).await;
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/api/files/{file}/summary"),
            &alice,
            None,
        )
        .await;
    assert_eq!(status, 202);
    let failed = wait_summary(&server, &alice, &file).await;
    assert_eq!(failed["status"], "error", "{failed}");
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("JSON") && error.contains("Sure!"), "{error}");
    // A question still gets the model's words, without citations.
    let (status, answer) = server
        .call(
            Method::POST,
            &format!("/api/files/{file}/ask"),
            &alice,
            Some(json!({"question": "budget?"})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["citations"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_model_times_out_and_holds_nothing_else_up() {
    let stub = Stub::start("hang").await;
    let keys = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(|c| {
        c.jobs.workers = 0;
        with_llm(c, &stub, keys.path(), 4096);
        c.llm.timeout_secs = 2;
    })
    .await;
    let alice = server.admin().await;
    let first = file_with_transcript(&server, &alice, 0, &meeting()).await;
    let second = file_with_transcript(&server, &alice, 1, &meeting()).await;
    let began = Instant::now();
    for file in [&first, &second] {
        let (status, _) = server
            .call(
                Method::POST,
                &format!("/api/files/{file}/summary"),
                &alice,
                None,
            )
            .await;
        assert_eq!(status, 202);
    }
    // While both runs wait on the model, the API answers at once and uploads go through.
    let quick = Instant::now();
    let (status, _) = server.call(Method::GET, "/api/files", &alice, None).await;
    assert_eq!(status, 200);
    let upload = server
        .upload(&alice, "other.wav", sine_wav(0.25, 16_000, 900.0))
        .await;
    assert_eq!(upload.status(), 201);
    let (status, ready) = server.call(Method::GET, "/api/ready", &alice, None).await;
    // No speech models in this data dir: not ready for that reason only, never for the model.
    assert!(
        status == 200 || ready["failing"] == json!(["models"]),
        "{ready}"
    );
    assert!(
        quick.elapsed() < Duration::from_secs(2),
        "{:?}",
        quick.elapsed()
    );
    // A question times out with its own clear error.
    let (status, timed_out) = server
        .call(
            Method::POST,
            &format!("/api/files/{first}/ask"),
            &alice,
            Some(json!({"question": "budget?"})),
        )
        .await;
    assert_eq!(
        (status, timed_out["code"].as_str()),
        (504, Some("llm-timeout")),
        "{timed_out}"
    );
    for file in [&first, &second] {
        let failed = wait_summary(&server, &alice, file).await;
        assert_eq!(failed["status"], "error", "{failed}");
        assert!(
            failed["error"].as_str().unwrap().contains("within 2 s"),
            "{failed}"
        );
    }
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "{:?}",
        began.elapsed()
    );
    assert_eq!(server.running().state.llm.as_ref().unwrap().in_flight(), 0);
}

#[tokio::test]
async fn without_a_model_every_route_says_so() {
    let server = TestServer::start_with(|c| c.jobs.workers = 0).await;
    let alice = server.admin().await;
    let file = file_with_transcript(&server, &alice, 0, &meeting()).await;
    let (status, ready) = server.call(Method::GET, "/api/ready", &alice, None).await;
    // No speech models in this data dir: not ready for that reason only, never for the model.
    assert!(
        status == 200 || ready["failing"] == json!(["models"]),
        "{ready}"
    );
    assert_eq!(ready["llm"]["configured"], false, "{ready}");
    for (method, path, body) in [
        (Method::POST, format!("/api/files/{file}/summary"), None),
        (
            Method::POST,
            format!("/api/files/{file}/ask"),
            Some(json!({"question": "budget?"})),
        ),
    ] {
        let (status, body) = server.call(method, &path, &alice, body).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (409, Some("llm-not-configured")),
            "{path}: {body}"
        );
        assert!(
            body["message"].as_str().unwrap().contains("[llm]"),
            "{body}"
        );
    }
    let (status, summary) = server
        .call(
            Method::GET,
            &format!("/api/files/{file}/summary"),
            &alice,
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        (summary["status"].as_str(), &summary["llm_configured"]),
        (Some("none"), &json!(false))
    );
    let (status, prompts) = server
        .call(Method::GET, "/api/account/llm-prompts", &alice, None)
        .await;
    assert_eq!((status, &prompts["llm_configured"]), (200, &json!(false)));
}

#[tokio::test]
async fn a_key_file_readable_by_others_stops_the_start() {
    let stub = Stub::start("ok").await;
    let keys = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut config = opentranscribe::config::Config {
        data_dir: data.path().to_path_buf(),
        ..Default::default()
    };
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    with_llm(&mut config, &stub, keys.path(), 4096);
    config.llm.key_file = key_file(keys.path(), 0o644);
    let Err(err) = opentranscribe::daemon::start(config).await else {
        panic!("a key file of mode 0644 must stop the start");
    };
    assert_eq!(err.code, "llm-key-file");
    assert!(
        err.message.contains("0644") && err.message.contains("0600"),
        "{}",
        err.message
    );
}

/// A re-run raced with the file's delete: once both are answered and the run has ended, the
/// file and its summary are gone (never revived by the run's late write); a re-run raced with
/// another re-run ends `done`, never stuck `running`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn summary_runs_racing_deletes_and_reruns_never_revive_or_stick() {
    let stub = Stub::start("ok").await;
    let keys = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(|c| {
        c.jobs.workers = 0;
        with_llm(c, &stub, keys.path(), 4096);
    })
    .await;
    let alice = server.admin().await;
    let state = server.running().state.clone();
    let rounds = crate::races::iterations();
    let (mut started, mut refused) = (0, 0);
    for round in 0..rounds {
        let file = file_with_transcript(&server, &alice, round, &meeting()).await;
        let jitter = Duration::from_micros((round % 10) as u64 * 400);
        let summary_path = format!("/api/files/{file}/summary");
        let run = server.call(Method::POST, &summary_path, &alice, None);
        let delete = async {
            tokio::time::sleep(jitter).await;
            server
                .call(Method::DELETE, &format!("/api/files/{file}"), &alice, None)
                .await
        };
        let ((run_status, run_body), (deleted, _)) = tokio::join!(run, delete);
        assert_eq!(deleted, 204, "round {round}");
        match run_status {
            202 => started += 1,
            404 => refused += 1,
            other => panic!("round {round}: summary answered {other} {run_body}"),
        }
        let llm = state.llm.clone().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while llm.in_flight() > 0 {
            assert!(
                Instant::now() < deadline,
                "round {round}: a run never ended"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let store = state.store.clone();
        let id = file.clone();
        let left = tokio::task::spawn_blocking(move || store.summary_of(&id).unwrap())
            .await
            .unwrap();
        assert!(left.is_none(), "round {round}: summary revived: {left:?}");
        let (status, _) = server
            .call(
                Method::GET,
                &format!("/api/files/{file}/summary"),
                &alice,
                None,
            )
            .await;
        assert_eq!(status, 404, "round {round}");
    }
    let file = file_with_transcript(&server, &alice, rounds, &meeting()).await;
    for round in 0..rounds / 4 {
        let path = format!("/api/files/{file}/summary");
        let ((a, _), (b, _)) = tokio::join!(
            server.call(Method::POST, &path, &alice, None),
            server.call(Method::POST, &path, &alice, None)
        );
        assert_eq!((a, b), (202, 202), "round {round}");
        let done = wait_summary(&server, &alice, &file).await;
        assert_eq!(done["status"], "done", "round {round}: {done}");
    }
    println!(
        "summary vs delete: {rounds} rounds, {started} runs started, {refused} refused (file gone)"
    );
}

/// `doctor` reports the model: reachable with the right key, unreachable when nothing listens
/// (not fatal), not configured when off, and a key file of the wrong mode as a problem.
#[tokio::test]
async fn doctor_reports_the_model() {
    let stub = Stub::start("ok").await;
    let keys = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let good = key_file(keys.path(), 0o600);
    let doctor = |envs: Vec<(&'static str, String)>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_opentranscribe"));
        command
            .arg("doctor")
            .env_remove("OPENTRANSCRIBE_CONFIG")
            .env("OPENTRANSCRIBE_DATA_DIR", data.path())
            .env("OPENTRANSCRIBE_MODELS_DIR", crate::models::models_dir());
        for (key, value) in envs {
            command.env(key, value);
        }
        let out = command.output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let on = |url: String, key: &str| {
        vec![
            ("OPENTRANSCRIBE_LLM_ENABLED", "true".to_owned()),
            ("OPENTRANSCRIBE_LLM_BASE_URL", url),
            ("OPENTRANSCRIBE_LLM_MODEL", "stub-model".to_owned()),
            ("OPENTRANSCRIBE_LLM_KEY_FILE", key.to_owned()),
        ]
    };
    let off = doctor(Vec::new());
    assert!(off.contains("llm: not configured"), "{off}");
    let ok = doctor(on(stub.base_url(), &good));
    assert!(ok.contains("llm: ok, model stub-model"), "{ok}");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!(
        "http://127.0.0.1:{}/v1",
        listener.local_addr().unwrap().port()
    );
    drop(listener);
    let down = doctor(on(dead, &good));
    assert!(down.contains("llm: UNREACHABLE"), "{down}");
    std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o644)).unwrap();
    let bad = doctor(on(stub.base_url(), &good));
    assert!(
        bad.contains("llm: llm.key_file") && bad.contains("0600"),
        "{bad}"
    );
    assert!(!bad.contains("all checks passed"), "{bad}");
}

/// A model server that answers HTTP 500, or is not there at all: clear errors that say which,
/// for the summary (its status) and for a question (502 `llm-unavailable`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_or_absent_model_server_is_named_in_the_error() {
    let failing = Stub::start("error").await;
    let keys = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(|c| {
        c.jobs.workers = 0;
        with_llm(c, &failing, keys.path(), 4096);
    })
    .await;
    let alice = server.admin().await;
    let file = file_with_transcript(&server, &alice, 0, &meeting()).await;
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/api/files/{file}/summary"),
            &alice,
            None,
        )
        .await;
    assert_eq!(status, 202);
    let failed = wait_summary(&server, &alice, &file).await;
    assert_eq!(failed["status"], "error", "{failed}");
    assert!(
        failed["error"].as_str().unwrap().contains("HTTP 500"),
        "{failed}"
    );
    let (status, answer) = server
        .call(
            Method::POST,
            &format!("/api/files/{file}/ask"),
            &alice,
            Some(json!({"question": "budget?"})),
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (502, Some("llm-unavailable")),
        "{answer}"
    );
    drop(server);

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let server = TestServer::start_with(|c| {
        c.jobs.workers = 0;
        with_llm(c, &failing, keys.path(), 4096);
        c.llm.base_url = format!("http://127.0.0.1:{port}/v1");
    })
    .await;
    let alice = server.admin().await;
    let file = file_with_transcript(&server, &alice, 0, &meeting()).await;
    let (status, ready) = server.call(Method::GET, "/api/ready", &alice, None).await;
    assert!(
        status == 200 || ready["failing"] == json!(["models"]),
        "{ready}"
    );
    assert_eq!(
        (&ready["llm"]["configured"], &ready["llm"]["reachable"]),
        (&json!(true), &json!(false)),
        "{ready}"
    );
    let (status, answer) = server
        .call(
            Method::POST,
            &format!("/api/files/{file}/ask"),
            &alice,
            Some(json!({"question": "budget?"})),
        )
        .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (502, Some("llm-unavailable")),
        "{answer}"
    );
    assert!(
        answer["message"].as_str().unwrap().contains("cannot reach"),
        "{answer}"
    );
}

/// Polls a file's summary until it is `done` or `error` (it may not have begun yet).
async fn wait_summary_ended(server: &TestServer, token: &str, file: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (status, body) = server
            .call(
                Method::GET,
                &format!("/api/files/{file}/summary"),
                token,
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        if body["status"] == "done" || body["status"] == "error" {
            return body;
        }
        assert!(Instant::now() < deadline, "summary never ended: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A summary run cut by a restart is not lost: the next start runs it again by itself, with
/// the templates of the user who started it. Without a model configured at that start, it ends
/// in `error` saying why, never stuck in `running`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_summary_cut_by_a_restart_runs_again_by_itself() {
    let hanging = Stub::start("hang").await;
    let keys = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(|c| {
        c.jobs.workers = 0;
        with_llm(c, &hanging, keys.path(), 4096);
    })
    .await;
    let alice = server.admin().await;
    let (status, set) = server
        .call(
            Method::PUT,
            "/api/account/llm-prompts",
            &alice,
            Some(json!({"map": "RESUMEMARK part {part}/{parts}:\n{transcript}"})),
        )
        .await;
    assert_eq!(status, 200, "{set}");
    let resumed = file_with_transcript(&server, &alice, 0, &meeting()).await;
    let dropped = file_with_transcript(&server, &alice, 1, &meeting()).await;
    for file in [&resumed, &dropped] {
        let (status, started) = server
            .call(
                Method::POST,
                &format!("/api/files/{file}/summary"),
                &alice,
                None,
            )
            .await;
        assert_eq!(status, 202, "{started}");
    }
    // Both runs wait on the model when the daemon stops.
    let deadline = Instant::now() + Duration::from_secs(20);
    while hanging.requests().len() < 2 {
        assert!(Instant::now() < deadline, "{:?}", hanging.requests());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The second file is deleted before the restart: its run has nothing to resume.
    let (status, _) = server
        .call(
            Method::DELETE,
            &format!("/api/files/{dropped}"),
            &alice,
            None,
        )
        .await;
    assert_eq!(status, 204);
    let data_dir = server.stop_keep().await;

    let stub = Stub::start("ok").await;
    let server = TestServer::start_in(data_dir, |c| {
        c.jobs.workers = 0;
        with_llm(c, &stub, keys.path(), 4096);
    })
    .await;
    let done = wait_summary_ended(&server, &alice, &resumed).await;
    assert_eq!(done["status"], "done", "{done}");
    assert!(!done["summary"].as_str().unwrap().is_empty(), "{done}");
    let requests = stub.requests();
    let maps: Vec<&Value> = requests.iter().filter(|r| r["kind"] == "map").collect();
    assert_eq!(maps.len(), 1, "{requests:?}");
    assert!(
        maps[0]["user"].as_str().unwrap().contains("RESUMEMARK"),
        "the resumed run uses the templates of who started it: {requests:?}"
    );
    assert_eq!(
        requests.iter().filter(|r| r["kind"] == "reduce").count(),
        1,
        "{requests:?}"
    );
    let (status, _) = server
        .call(
            Method::GET,
            &format!("/api/files/{dropped}/summary"),
            &alice,
            None,
        )
        .await;
    assert_eq!(status, 404);

    // Cut again, and started without a model: the run ends in error, not stuck.
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/api/files/{resumed}/summary"),
            &alice,
            None,
        )
        .await;
    assert_eq!(status, 202);
    let data_dir = server.stop_keep().await;
    let server = TestServer::start_in(data_dir, |c| c.jobs.workers = 0).await;
    let ended = wait_summary_ended(&server, &alice, &resumed).await;
    assert_eq!(ended["status"], "error", "{ended}");
    assert!(
        ended["error"].as_str().unwrap().contains("restart"),
        "{ended}"
    );
    server.stop().await;
}

/// With `llm.summarize_completed`, a file is summarised when its transcription completes,
/// unasked, as a follow-on stage: the transcript is there first, then the summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn completed_files_are_summarised_unasked_when_configured() {
    let stub = Stub::start("ok").await;
    let keys = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(|c| {
        c.models_dir = crate::models::models_dir();
        c.jobs.model = "whisper-tiny.en".to_owned();
        with_llm(c, &stub, keys.path(), 4096);
        c.llm.summarize_completed = true;
    })
    .await;
    let alice = server.admin().await;
    let (id, _) = references().into_iter().next().unwrap();
    let wav = std::fs::read(format!("{LIBRIVOX}/{id}.wav")).unwrap();
    let created = body_json(server.upload(&alice, "clip.wav", wav).await).await;
    let file = created["id"].as_str().unwrap().to_owned();
    assert_eq!(server.wait_done(&alice, &file).await["status"], "completed");
    let done = wait_summary_ended(&server, &alice, &file).await;
    assert_eq!(done["status"], "done", "{done}");
    assert!(!done["summary"].as_str().unwrap().is_empty(), "{done}");
    let requests = stub.requests();
    assert!(
        requests.iter().any(|r| r["kind"] == "map")
            && requests.iter().any(|r| r["kind"] == "reduce"),
        "{requests:?}"
    );
    server.stop().await;
}
