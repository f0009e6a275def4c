//! Choosing the speech model and the task per file: the upload's `model` and `task` parts, the
//! configured default, refusals of unknown models and of translation with an English-only
//! model, and translation of real German speech (espeak-ng) into English.

use std::path::Path;

use serde_json::Value;

use crate::asr::{LIBRIVOX, normalize, references, wer};
use crate::support::TestServer;

/// A cache holding the runtime, the VAD, whisper-tiny.en and whisper-base, but not the model
/// the configuration names, so a file that runs at all ran the model it asked for.
fn cache_without_default(root: &Path) -> std::path::PathBuf {
    let cache = root.join("models");
    std::fs::create_dir_all(&cache).unwrap();
    for name in [
        "onnxruntime",
        "silero-vad",
        "whisper-tiny.en",
        "whisper-base",
    ] {
        std::os::unix::fs::symlink(crate::models::models_dir().join(name), cache.join(name))
            .unwrap();
    }
    cache
}

async fn upload(
    server: &TestServer,
    token: &str,
    parts: &[(&str, &str)],
    audio: Vec<u8>,
) -> (u16, Value) {
    let mut form = reqwest::multipart::Form::new();
    for (name, value) in parts {
        form = form.text(name.to_string(), value.to_string());
    }
    form = form.part(
        "file",
        reqwest::multipart::Part::bytes(audio).file_name("speech.wav"),
    );
    let response = server
        .client
        .post(server.url("/api/files"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, crate::support::json(response).await)
}

async fn transcript_text(server: &TestServer, token: &str, id: &str) -> (String, String) {
    let (status, transcript) = server
        .call(
            reqwest::Method::GET,
            &format!("/api/files/{id}/transcript"),
            token,
            None,
        )
        .await;
    assert_eq!(status, 200, "{transcript}");
    let text: Vec<&str> = transcript["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    (
        transcript["language"].as_str().unwrap().to_owned(),
        text.join(" "),
    )
}

/// German speech spoken by espeak-ng, 16 kHz mono WAV.
fn german_speech(dir: &Path) -> Vec<u8> {
    let raw = dir.join("de.wav");
    let wav = dir.join("de16.wav");
    let text = "Guten Morgen. Heute ist das Wetter sehr schön, und wir gehen zusammen in den Park. \
                Am Abend essen wir mit unseren Freunden.";
    let status = std::process::Command::new("espeak-ng")
        .args(["-v", "de", "-s", "140", "-w"])
        .arg(&raw)
        .arg(text)
        .status()
        .unwrap();
    assert!(status.success());
    let status = std::process::Command::new("sox")
        .arg(&raw)
        .args(["-r", "16000", "-b", "16", "-c", "1"])
        .arg(&wav)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(wav).unwrap()
}

#[tokio::test]
async fn each_file_runs_the_model_and_task_it_asks_for() {
    let root = tempfile::tempdir().unwrap();
    let cache = cache_without_default(root.path());
    let server = TestServer::start_with(|c| {
        c.models_dir = cache.clone();
        c.jobs.model = "whisper-large-v3".to_owned();
        c.jobs.beam_size = 1;
        c.jobs.max_attempts = 1;
    })
    .await;
    let token = server.admin().await;
    let (id, reference) = references().into_iter().next().unwrap();
    let english = std::fs::read(format!("{LIBRIVOX}/{id}.wav")).unwrap();

    // Refused before a file exists: a model not in the cache, a task that is not one, and
    // translation with an English-only model.
    let (status, body) = upload(
        &server,
        &token,
        &[("model", "whisper-huge")],
        english.clone(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("whisper-huge"), "{message}");
    assert!(
        message.contains("whisper-base") && message.contains("whisper-tiny.en"),
        "the installed models are named: {message}"
    );
    let (status, body) = upload(&server, &token, &[("task", "summarise")], english.clone()).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = upload(
        &server,
        &token,
        &[("model", "whisper-tiny.en"), ("task", "translate")],
        english.clone(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("English-only"),
        "{body}"
    );
    let (_, listed) = server
        .call(reqwest::Method::GET, "/api/files", &token, None)
        .await;
    assert_eq!(listed["total"], 0, "{listed}");

    // The file's model runs although the configured one is not installed.
    let (status, file) = upload(
        &server,
        &token,
        &[
            ("model", "whisper-tiny.en"),
            ("language", "en"),
            ("diarize", "false"),
        ],
        english.clone(),
    )
    .await;
    assert_eq!(status, 201, "{file}");
    assert_eq!(file["options"]["model"], "whisper-tiny.en");
    let done = server.wait_done(&token, file["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "completed", "{done}");
    let (_, text) = transcript_text(&server, &token, file["id"].as_str().unwrap()).await;
    let error = wer(&normalize(&reference), &normalize(&text));
    assert!(error < 0.2, "WER {error:.3}: {text}");

    // Without a model part the configured default runs, and here it is missing.
    let (status, file) = upload(&server, &token, &[("diarize", "false")], english).await;
    assert_eq!(status, 201, "{file}");
    assert!(file["options"].get("model").is_none(), "{file}");
    let done = server.wait_done(&token, file["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "error", "{done}");
    assert!(
        done["error"].as_str().unwrap().contains("whisper-large-v3"),
        "{done}"
    );

    // German speech: transcribed it stays German, translated (the worker swaps models) it
    // becomes English.
    let german = german_speech(root.path());
    let mut texts = Vec::new();
    for task in ["transcribe", "translate"] {
        let (status, file) = upload(
            &server,
            &token,
            &[
                ("model", "whisper-base"),
                ("task", task),
                ("diarize", "false"),
            ],
            german.clone(),
        )
        .await;
        assert_eq!(status, 201, "{file}");
        assert_eq!(file["options"]["translate"], task == "translate");
        let done = server.wait_done(&token, file["id"].as_str().unwrap()).await;
        assert_eq!(done["status"], "completed", "{done}");
        let (language, text) = transcript_text(&server, &token, file["id"].as_str().unwrap()).await;
        assert_eq!(language, "de", "{text}");
        texts.push(text.to_lowercase());
    }
    println!("{texts:?}");
    assert!(
        texts[0].contains("morgen") && texts[0].contains("park"),
        "{}",
        texts[0]
    );
    assert!(!texts[1].contains("morgen"), "{}", texts[1]);
    assert!(
        texts[1].contains("morning") && texts[1].contains("park"),
        "{}",
        texts[1]
    );
    server.stop().await;
}
