//! The OpenAI-compatible API driven by OpenAI's official Python client (PyPI `openai`, in a
//! venv that scripts/test prepares and names in `OT_TEST_OPENAI_PYTHON`).

use serde_json::Value;

use crate::asr::{LIBRIVOX, normalize, references, wer};
use crate::support::TestServer;

fn openai_python() -> String {
    std::env::var("OT_TEST_OPENAI_PYTHON").expect(
        "OT_TEST_OPENAI_PYTHON must name a python with the `openai` package (scripts/test sets it up)",
    )
}

#[tokio::test]
async fn official_openai_client_transcribes_and_lists_models() {
    let server = TestServer::start_with(|c| {
        c.models_dir = crate::models::models_dir();
        c.jobs.model = "whisper-tiny.en".to_owned();
    })
    .await;
    let token = server.admin().await;
    let owner_token = token.clone();
    let (id, reference) = references().into_iter().next().unwrap();
    let audio = format!("{LIBRIVOX}/{id}.wav");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/openai_client.py");
    let base = format!("{}/v1", server.base);
    let cert = server.running().cert_path.clone();
    let python = openai_python();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(script)
            .arg(&base)
            .arg(&token)
            .arg(&cert)
            .arg(&audio)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_slice(&output.stdout).unwrap();
    let models: Vec<&str> = out["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(models.contains(&"whisper-1"), "{models:?}");
    assert!(models.contains(&"whisper-tiny.en"), "{models:?}");
    // Every installed speech model is listed, and can be asked for by name.
    assert!(models.contains(&"whisper-base"), "{models:?}");
    assert!(!models.contains(&"silero-vad"), "{models:?}");

    let reference = normalize(&reference);
    let plain = out["json"].as_str().unwrap();
    let error = wer(&reference, &normalize(plain));
    assert!(error < 0.15, "WER {error:.3}: {plain}");

    let verbose = &out["verbose"];
    assert_eq!(verbose["language"], "english");
    assert_eq!(verbose["text"], plain);
    assert!(verbose["duration"].as_f64().unwrap() > 1.0);
    let words = verbose["words"].as_array().unwrap();
    assert!(words.len() >= reference.len() / 2, "{words:?}");
    let mut last = 0.0;
    for word in words {
        let (start, end) = (
            word["start"].as_f64().unwrap(),
            word["end"].as_f64().unwrap(),
        );
        assert!(start >= last - 1e-6 && end >= start, "{word}");
        last = start;
    }
    assert!(!verbose["segments"].as_array().unwrap().is_empty());

    let srt = out["srt"].as_str().unwrap();
    assert!(srt.starts_with("1\n00:00:0"), "{srt}");
    assert!(srt.contains(" --> "));

    let translation = out["translation"].as_str().unwrap();
    let error = wer(&reference, &normalize(translation));
    assert!(error < 0.3, "translation WER {error:.3}: {translation}");
    assert_eq!(out["translate_english_only"], "bad-request");
    assert_eq!(out["bad_model"], "bad-request");
    assert_eq!(out["bad_key"], "refused");

    // Each request left a file in the caller's library.
    let listed = server
        .client
        .get(server.url("/api/files"))
        .bearer_auth(&owner_token)
        .send()
        .await
        .unwrap();
    let listed: Value = crate::support::json(listed).await;
    assert_eq!(listed["total"], 4, "{listed}");
    server.stop().await;
}
