//! Media files: streamed uploads, sniffing, limits, cut-off uploads, Range, isolation, delete.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::support::{TestServer, json, sine_wav};

async fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..100 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    condition()
}

#[tokio::test]
async fn upload_list_get_rename_and_range_requests() {
    let server = TestServer::start().await;
    let token = server.admin().await;
    let wav = sine_wav(1.0, 16_000, 440.0);
    let response = server.upload(&token, "../../tone.wav", wav.clone()).await;
    assert_eq!(response.status(), 201);
    let created = json(response).await;
    assert_eq!(created["status"], "queued");
    assert_eq!(created["filename"], "tone.wav");
    assert_eq!(created["size"], wav.len());
    assert_eq!(created["media_type"], "audio/wav");
    assert_eq!(created["options"]["language"], "en");
    assert!((created["duration"].as_f64().unwrap() - 1.0).abs() < 0.01);
    let id = created["id"].as_str().unwrap().to_owned();

    let file: Value = json(
        server
            .client
            .get(server.url(&format!("/api/files/{id}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    for key in ["id", "filename", "status", "progress"] {
        assert!(file.get(key).is_some(), "file lacks {key}");
    }

    let second = server
        .upload(&token, "b.wav", sine_wav(0.5, 8_000, 220.0))
        .await;
    assert_eq!(second.status(), 201);
    let list: Value = json(
        server
            .client
            .get(server.url("/api/files?per_page=1&page=1"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(list["total"], 2);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["filename"], "b.wav", "newest first");
    let filtered: Value = json(
        server
            .client
            .get(server.url("/api/files?status=completed"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(filtered["total"], 0);
    let bad_status = server
        .client
        .get(server.url("/api/files?status=bogus"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(bad_status.status(), 400);

    let renamed = server
        .client
        .patch(server.url(&format!("/api/files/{id}")))
        .bearer_auth(&token)
        .json(&json!({"filename": "meeting.wav"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json(renamed).await["filename"], "meeting.wav");

    let media_url = server.url(&format!("/api/files/{id}/media"));
    let full = server
        .client
        .get(&media_url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(full.status(), 200);
    assert_eq!(full.headers()["accept-ranges"], "bytes");
    assert_eq!(full.headers()["content-type"], "audio/wav");
    let etag = full.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(full.bytes().await.unwrap().as_ref(), wav.as_slice());

    let range = |value: String, if_range: Option<String>| {
        let mut request = server
            .client
            .get(&media_url)
            .bearer_auth(&token)
            .header("range", value);
        if let Some(tag) = if_range {
            request = request.header("if-range", tag);
        }
        request.send()
    };
    let part = range("bytes=100-199".into(), None).await.unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 100-199/{}", wav.len()).as_str()
    );
    assert_eq!(part.bytes().await.unwrap().as_ref(), &wav[100..200]);
    let tail = range("bytes=-10".into(), Some(etag.clone())).await.unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(tail.bytes().await.unwrap().as_ref(), &wav[wav.len() - 10..]);
    let open_ended = range(format!("bytes={}-", wav.len() - 5), None)
        .await
        .unwrap();
    assert_eq!(
        open_ended.bytes().await.unwrap().as_ref(),
        &wav[wav.len() - 5..]
    );
    let stale = range("bytes=0-9".into(), Some("\"other\"".into()))
        .await
        .unwrap();
    assert_eq!(
        stale.status(),
        200,
        "If-Range mismatch serves the whole file"
    );
    assert_eq!(stale.bytes().await.unwrap().len(), wav.len());
    let beyond = range(format!("bytes={}-", wav.len()), None).await.unwrap();
    assert_eq!(beyond.status(), 416);
    assert_eq!(
        beyond.headers()["content-range"],
        format!("bytes */{}", wav.len()).as_str()
    );
    server.stop().await;
}

#[tokio::test]
async fn another_users_file_is_404_everywhere() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let bob = server.user(&admin, "bob").await;
    let created = json(
        server
            .upload(&admin, "a.wav", sine_wav(0.2, 16_000, 300.0))
            .await,
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let paths = [format!("/api/files/{id}"), format!("/api/files/{id}/media")];
    for path in &paths {
        let response = server
            .client
            .get(server.url(path))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "GET {path}");
        assert_eq!(json(response).await["code"], "not-found");
    }
    let rename = server
        .client
        .patch(server.url(&paths[0]))
        .bearer_auth(&bob)
        .json(&json!({"filename": "mine.wav"}))
        .send()
        .await
        .unwrap();
    assert_eq!(rename.status(), 404);
    let delete = server
        .client
        .delete(server.url(&paths[0]))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 404);
    let bobs_list: Value = json(
        server
            .client
            .get(server.url("/api/files"))
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(bobs_list["total"], 0);
    // Still there for its owner.
    let own = server
        .client
        .get(server.url(&paths[0]))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    server.stop().await;
}

#[tokio::test]
async fn non_media_is_refused_with_415_and_leaves_nothing() {
    let server = TestServer::start().await;
    let token = server.admin().await;
    let text = b"This is a text file pretending to be audio.\n".repeat(500);
    let response = server.upload(&token, "song.mp3", text).await;
    assert_eq!(response.status(), 415);
    let body = json(response).await;
    assert_eq!(body["code"], "unsupported-media");
    assert!(body["message"].as_str().unwrap().contains("not decodable"));
    // A WAV header over garbage is refused too: it is sniffed by decoding, not by header.
    let mut fake = sine_wav(0.1, 16_000, 100.0);
    fake.truncate(44);
    let header_only = server.upload(&token, "x.wav", fake).await;
    assert_eq!(header_only.status(), 415);
    let empty = server.upload(&token, "empty.wav", Vec::new()).await;
    assert_eq!(empty.status(), 415);
    assert!(server.blob_files().is_empty(), "{:?}", server.blob_files());
    assert!(server.temp_files().is_empty());
    let missing = server
        .client
        .post(server.url("/api/files"))
        .bearer_auth(&token)
        .multipart(reqwest::multipart::Form::new().text("language", "en"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    assert_eq!(json(missing).await["code"], "missing-file");
    server.stop().await;
}

#[tokio::test]
async fn uploads_over_the_limit_get_413_and_leave_nothing() {
    let server = TestServer::start_with(|c| c.server.max_upload_bytes = 64 * 1024).await;
    let token = server.admin().await;
    let big = sine_wav(5.0, 16_000, 440.0); // 160 KB
    // Declared by Content-Length: refused before the body is read.
    let declared = server.upload(&token, "big.wav", big.clone()).await;
    assert_eq!(declared.status(), 413);
    assert_eq!(json(declared).await["code"], "payload-too-large");

    // Streamed without a length: refused once the limit is crossed.
    let chunks: Vec<Result<Bytes, std::io::Error>> = big
        .chunks(8 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let stream = futures_util::stream::iter(chunks);
    let part =
        reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(stream)).file_name("big.wav");
    let streamed = server
        .client
        .post(server.url("/api/files"))
        .bearer_auth(&token)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await;
    // The server may answer 413 and close before the client finished sending.
    if let Ok(response) = streamed {
        assert_eq!(response.status(), 413);
    }
    assert!(wait_until(|| server.temp_files().is_empty()).await);
    assert!(server.blob_files().is_empty());
    let small = server
        .upload(&token, "small.wav", sine_wav(1.0, 16_000, 440.0))
        .await;
    assert_eq!(small.status(), 201, "uploads under the limit still work");
    server.stop().await;
}

#[tokio::test]
async fn an_upload_cut_off_mid_stream_leaves_nothing_behind() {
    let server = TestServer::start().await;
    let token = server.admin().await;
    let wav = sine_wav(4.0, 16_000, 440.0);
    let (first_half, _) = wav.split_at(wav.len() / 2);
    let first_half = Bytes::copy_from_slice(first_half);
    let stream = futures_util::stream::iter(vec![
        Ok(first_half),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "client died",
        )),
    ]);
    let part =
        reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(stream)).file_name("cut.wav");
    let result = server
        .client
        .post(server.url("/api/files"))
        .bearer_auth(&token)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await;
    assert!(result.is_err(), "the client aborted its own request");
    assert!(
        wait_until(|| server.temp_files().is_empty()).await,
        "partial upload left {:?}",
        server.temp_files()
    );
    assert!(server.blob_files().is_empty());
    let list: Value = json(
        server
            .client
            .get(server.url("/api/files"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(list["total"], 0);
    server.stop().await;
}

#[tokio::test]
async fn identical_uploads_share_a_blob_removed_with_the_last_file() {
    let server = TestServer::start().await;
    let admin = server.admin().await;
    let bob = server.user(&admin, "bob").await;
    let wav = sine_wav(0.5, 16_000, 500.0);
    let a = json(server.upload(&admin, "a.wav", wav.clone()).await).await;
    let b = json(server.upload(&bob, "b.wav", wav.clone()).await).await;
    assert_eq!(a["sha256"], b["sha256"]);
    assert_eq!(server.blob_files().len(), 1);
    let delete = |token: &str, id: &str| {
        server
            .client
            .delete(server.url(&format!("/api/files/{id}")))
            .bearer_auth(token.to_owned())
            .send()
    };
    assert_eq!(
        delete(&admin, a["id"].as_str().unwrap())
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        server.blob_files().len(),
        1,
        "bob's file still uses the blob"
    );
    let bobs_media = server
        .client
        .get(server.url(&format!("/api/files/{}/media", b["id"].as_str().unwrap())))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(bobs_media.bytes().await.unwrap().as_ref(), wav.as_slice());
    assert_eq!(
        delete(&bob, b["id"].as_str().unwrap())
            .await
            .unwrap()
            .status(),
        204
    );
    assert!(server.blob_files().is_empty());
    assert_eq!(
        delete(&bob, b["id"].as_str().unwrap())
            .await
            .unwrap()
            .status(),
        404
    );
    server.stop().await;
}

#[tokio::test]
async fn encrypted_at_rest_blobs_serve_ranges_and_hide_content() {
    let server = TestServer::start_with(|c| c.storage.encrypt_at_rest = true).await;
    let token = server.admin().await;
    let wav = sine_wav(3.0, 16_000, 440.0); // ~96 KB: more than one encryption chunk
    let created = json(server.upload(&token, "secret.wav", wav.clone()).await).await;
    let id = created["id"].as_str().unwrap();
    let files = server.blob_files();
    assert_eq!(files.len(), 1);
    assert!(files[0].to_string_lossy().ends_with(".enc"));
    let on_disk = std::fs::read(&files[0]).unwrap();
    assert!(!on_disk.windows(64).any(|w| w == &wav[2000..2064]));
    use std::os::unix::fs::PermissionsExt;
    let key = server.data_dir.path().join("secrets/blob.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let part = server
        .client
        .get(server.url(&format!("/api/files/{id}/media")))
        .bearer_auth(&token)
        .header("range", "bytes=65000-70000")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.bytes().await.unwrap().as_ref(), &wav[65000..=70000]);
    server.stop().await;
}

#[tokio::test]
async fn upload_options_are_validated() {
    let server = TestServer::start().await;
    let token = server.admin().await;
    let form = reqwest::multipart::Form::new()
        .text("num_speakers", "99")
        .part(
            "file",
            reqwest::multipart::Part::bytes(sine_wav(0.2, 16_000, 300.0)).file_name("a.wav"),
        );
    let response = server
        .client
        .post(server.url("/api/files"))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(
        json(response).await["message"]
            .as_str()
            .unwrap()
            .contains("num_speakers")
    );
    let form = reqwest::multipart::Form::new()
        .text("diarize", "false")
        .text("min_speakers", "2")
        .text("max_speakers", "4")
        .part(
            "file",
            reqwest::multipart::Part::bytes(sine_wav(0.2, 16_000, 300.0)).file_name("a.wav"),
        );
    let ok = json(
        server
            .client
            .post(server.url("/api/files"))
            .bearer_auth(&token)
            .multipart(form)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(ok["options"]["diarize"], false);
    assert_eq!(ok["options"]["max_speakers"], 4);
    server.stop().await;
}
