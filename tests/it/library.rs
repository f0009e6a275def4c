//! Working with transcripts through the API: segment edits, tags, comments, analytics,
//! collections shared as viewer or editor (and revoked), and a ZIP of exports.

use reqwest::Method;
use serde_json::{Value, json};

use crate::asr::{LIBRIVOX, references};
use crate::support::{TestServer, json as body_json};

async fn transcribed_file(server: &TestServer, token: &str, name: &str) -> String {
    let (id, _) = references().into_iter().next().unwrap();
    let wav = std::fs::read(format!("{LIBRIVOX}/{id}.wav")).unwrap();
    let created = body_json(server.upload(token, name, wav).await).await;
    let file_id = created["id"].as_str().unwrap().to_owned();
    let file = server.wait_done(token, &file_id).await;
    assert_eq!(file["status"], "completed", "{file}");
    file_id
}

#[tokio::test]
async fn edit_tag_comment_share_and_zip() {
    let server = TestServer::start_with(|c| {
        c.models_dir = crate::models::models_dir();
        c.jobs.model = "whisper-tiny.en".to_owned();
    })
    .await;
    let admin = server.admin().await;
    let alice = server.user(&admin, "alice").await;
    let bob = server.user(&admin, "bob").await;
    let carol = server.user(&admin, "carol").await;
    let file = transcribed_file(&server, &alice, "talk.wav").await;
    let other = transcribed_file(&server, &alice, "talk-two.wav").await;

    // Analytics of the recognised text.
    let (status, stats) = server
        .call(
            Method::GET,
            &format!("/api/files/{file}/analytics"),
            &alice,
            None,
        )
        .await;
    assert_eq!(status, 200, "{stats}");
    assert!(stats["words"].as_u64().unwrap() > 5, "{stats}");
    assert!(
        stats["words_per_minute"].as_f64().unwrap() > 60.0,
        "{stats}"
    );
    let silence = stats["silence_ratio"].as_f64().unwrap();
    assert!((0.0..0.9).contains(&silence), "{stats}");

    // Edit a segment: the original text is kept and the segment is flagged.
    let (_, transcript) = server
        .call(
            Method::GET,
            &format!("/api/files/{file}/transcript"),
            &alice,
            None,
        )
        .await;
    let first = &transcript["segments"][0];
    let original = first["text"].as_str().unwrap().to_owned();
    let seg = first["id"].as_u64().unwrap();
    let path = format!("/api/files/{file}/segments/{seg}");
    let (status, edited) = server
        .call(
            Method::PATCH,
            &path,
            &alice,
            Some(json!({"text": "Corrected <b>text</b>."})),
        )
        .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["edited"], true);
    assert_eq!(edited["original_text"], original.as_str());
    let (_, transcript) = server
        .call(
            Method::GET,
            &format!("/api/files/{file}/transcript"),
            &alice,
            None,
        )
        .await;
    assert_eq!(transcript["segments"][0]["text"], "Corrected <b>text</b>.");
    // Control characters and empty text are refused; unknown speakers too.
    for bad in [
        json!({"text": ""}),
        json!({"text": "a\u{0007}b"}),
        json!({"speaker": "nobody"}),
        json!({}),
    ] {
        let (status, body) = server
            .call(Method::PATCH, &path, &alice, Some(bad.clone()))
            .await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _) = server
        .call(
            Method::PATCH,
            &format!("/api/files/{file}/segments/9999"),
            &alice,
            Some(json!({"text": "x"})),
        )
        .await;
    assert_eq!(status, 404);
    // The export carries the edit, escaped where the format needs it.
    let vtt = server
        .client
        .get(server.url(&format!("/api/files/{file}/export?format=vtt")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(vtt.contains("Corrected &lt;b&gt;text&lt;/b&gt;."), "{vtt}");

    // Tags: cleaned, listed, filterable.
    let (status, tagged) = server
        .call(
            Method::PUT,
            &format!("/api/files/{file}/tags"),
            &alice,
            Some(json!({"tags": ["Board", " board ", "Q3"]})),
        )
        .await;
    assert_eq!(status, 200, "{tagged}");
    assert_eq!(tagged["tags"], json!(["board", "q3"]));
    let (_, tags) = server.call(Method::GET, "/api/tags", &alice, None).await;
    assert_eq!(
        tags["tags"],
        json!([{"tag": "board", "count": 1}, {"tag": "q3", "count": 1}])
    );
    let (_, listed) = server
        .call(Method::GET, "/api/files?tag=Board", &alice, None)
        .await;
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["items"][0]["id"], file.as_str());
    // The list carries the transcript's language and speaker count (the file list shows them),
    // the same as the transcript says.
    let (_, full) = server
        .call(
            Method::GET,
            &format!("/api/files/{file}/transcript"),
            &alice,
            None,
        )
        .await;
    let item = &listed["items"][0];
    assert_eq!(item["language"], full["language"], "{item}");
    assert_eq!(item["language"], "en", "{item}");
    assert_eq!(
        item["speaker_count"].as_u64(),
        Some(full["speakers"].as_array().unwrap().len() as u64),
        "{item}"
    );

    // Comments pinned to times, listed in media order.
    for (time, text) in [(4.0, "later"), (1.5, "earlier")] {
        let (status, c) = server
            .call(
                Method::POST,
                &format!("/api/files/{file}/comments"),
                &alice,
                Some(json!({"time": time, "text": text})),
            )
            .await;
        assert_eq!(status, 201, "{c}");
        assert_eq!(c["author"], "alice");
    }
    let (status, _) = server
        .call(
            Method::POST,
            &format!("/api/files/{file}/comments"),
            &alice,
            Some(json!({"time": -1.0, "text": "x"})),
        )
        .await;
    assert_eq!(status, 400);
    let (_, comments) = server
        .call(
            Method::GET,
            &format!("/api/files/{file}/comments"),
            &alice,
            None,
        )
        .await;
    let texts: Vec<&str> = comments["comments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, vec!["earlier", "later"]);

    // The waveform of the 7 s clip: peaks in 0..1 covering its duration, not all silent.
    let (status, wave) = server
        .call(
            Method::GET,
            &format!("/api/files/{file}/waveform"),
            &alice,
            None,
        )
        .await;
    assert_eq!(status, 200, "{wave}");
    let peaks = wave["peaks"].as_array().unwrap();
    let covered = peaks.len() as f64 * wave["seconds_per_peak"].as_f64().unwrap();
    assert!((5.0..10.0).contains(&covered), "{covered}");
    assert!(
        peaks
            .iter()
            .all(|p| (0.0..=1.0).contains(&p.as_f64().unwrap()))
    );
    assert!(
        peaks.iter().any(|p| p.as_f64().unwrap() > 0.1),
        "speech is audible"
    );

    // Bob and Carol see nothing of Alice's yet: 404 everywhere.
    for path in [
        format!("/api/files/{file}"),
        format!("/api/files/{file}/transcript"),
        format!("/api/files/{file}/comments"),
        format!("/api/files/{file}/analytics"),
        format!("/api/files/{file}/waveform"),
    ] {
        assert_eq!(
            server.call(Method::GET, &path, &bob, None).await.0,
            404,
            "{path}"
        );
    }

    // A collection shared with Bob as viewer and Carol as editor.
    let (status, collection) = server
        .call(
            Method::POST,
            "/api/collections",
            &alice,
            Some(json!({"name": "Board meetings"})),
        )
        .await;
    assert_eq!(status, 201, "{collection}");
    let cid = collection["id"].as_str().unwrap().to_owned();
    assert_eq!(
        server
            .call(
                Method::PUT,
                &format!("/api/collections/{cid}/files/{file}"),
                &alice,
                None
            )
            .await
            .0,
        204
    );
    // Bob may not add files to a collection he is not in, nor Alice add Bob's files.
    assert_eq!(
        server
            .call(
                Method::PUT,
                &format!("/api/collections/{cid}/files/{other}"),
                &bob,
                None
            )
            .await
            .0,
        404
    );
    for (user, role) in [("bob", "viewer"), ("carol", "editor")] {
        let (status, body) = server
            .call(
                Method::PUT,
                &format!("/api/collections/{cid}/shares"),
                &alice,
                Some(json!({"username": user, "role": role})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = server
        .call(
            Method::PUT,
            &format!("/api/collections/{cid}/shares"),
            &alice,
            Some(json!({"username": "nobody", "role": "viewer"})),
        )
        .await;
    assert_eq!(status, 404);

    let (status, seen) = server
        .call(Method::GET, &format!("/api/files/{file}"), &bob, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(seen["access"], "viewer");
    assert_eq!(
        server
            .call(Method::GET, &format!("/api/files/{other}"), &bob, None)
            .await
            .0,
        404,
        "not in the collection"
    );
    let (_, shared) = server
        .call(Method::GET, "/api/files?scope=shared", &bob, None)
        .await;
    assert_eq!(shared["total"], 1, "{shared}");
    let (_, own) = server.call(Method::GET, "/api/files", &bob, None).await;
    assert_eq!(own["total"], 0);
    let (_, listed) = server
        .call(
            Method::GET,
            &format!("/api/files?collection={cid}"),
            &bob,
            None,
        )
        .await;
    assert_eq!(listed["total"], 1);
    assert_eq!(
        server
            .call(
                Method::GET,
                &format!("/api/files/{file}/transcript"),
                &bob,
                None
            )
            .await
            .0,
        200
    );
    // A viewer comments but does not edit, tag, rename, delete or share.
    let (status, comment) = server
        .call(
            Method::POST,
            &format!("/api/files/{file}/comments"),
            &bob,
            Some(json!({"time": 2.0, "text": "from bob"})),
        )
        .await;
    assert_eq!(status, 201);
    assert_eq!(
        server
            .call(
                Method::PATCH,
                &path,
                &bob,
                Some(json!({"text": "bob was here"}))
            )
            .await
            .0,
        403
    );
    assert_eq!(
        server
            .call(
                Method::PUT,
                &format!("/api/files/{file}/tags"),
                &bob,
                Some(json!({"tags": []}))
            )
            .await
            .0,
        403
    );
    assert_eq!(
        server
            .call(
                Method::PATCH,
                &format!("/api/files/{file}"),
                &bob,
                Some(json!({"filename": "x.wav"}))
            )
            .await
            .0,
        403
    );
    assert_eq!(
        server
            .call(Method::DELETE, &format!("/api/files/{file}"), &bob, None)
            .await
            .0,
        403
    );
    assert_eq!(
        server
            .call(
                Method::PUT,
                &format!("/api/collections/{cid}/shares"),
                &bob,
                Some(json!({"username": "admin", "role": "viewer"}))
            )
            .await
            .0,
        403
    );
    // An editor corrects the transcript; Alice's comments are not Carol's to delete.
    let (status, _) = server
        .call(
            Method::PATCH,
            &path,
            &carol,
            Some(json!({"text": "Carol's fix."})),
        )
        .await;
    assert_eq!(status, 200);
    let first_comment = comments["comments"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        server
            .call(
                Method::DELETE,
                &format!("/api/files/{file}/comments/{first_comment}"),
                &carol,
                None
            )
            .await
            .0,
        403
    );
    // Alice, the owner, may delete Bob's comment.
    let bob_comment = comment["id"].as_str().unwrap();
    assert_eq!(
        server
            .call(
                Method::DELETE,
                &format!("/api/files/{file}/comments/{bob_comment}"),
                &alice,
                None
            )
            .await
            .0,
        204
    );

    // ZIP of both of Alice's files.
    let response = server
        .client
        .get(server.url(&format!("/api/exports/zip?ids={file},{other}&format=srt")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/zip");
    let bytes = response.bytes().await.unwrap();
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    let mut names: Vec<String> = archive
        .file_names()
        .map(|n| n.unwrap().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["talk-two.srt", "talk.srt"]);
    let mut srt = String::new();
    std::io::Read::read_to_string(&mut archive.by_name("talk.srt").unwrap(), &mut srt).unwrap();
    assert!(srt.contains("Carol's fix."), "{srt}");
    // Bob cannot zip Alice's other file: 404 for the whole request.
    let status = server
        .client
        .get(server.url(&format!("/api/exports/zip?ids={file},{other}&format=srt")))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);

    // Revoking Bob ends his access at once; Carol keeps hers until she leaves.
    let bob_id = server.call(Method::GET, "/api/auth/me", &bob, None).await.1["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        server
            .call(
                Method::DELETE,
                &format!("/api/collections/{cid}/shares/{bob_id}"),
                &alice,
                None
            )
            .await
            .0,
        204
    );
    assert_eq!(
        server
            .call(Method::GET, &format!("/api/files/{file}"), &bob, None)
            .await
            .0,
        404
    );
    assert_eq!(
        server
            .call(Method::GET, &format!("/api/files/{file}"), &carol, None)
            .await
            .0,
        200
    );
    let carol_id = server
        .call(Method::GET, "/api/auth/me", &carol, None)
        .await
        .1["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        server
            .call(
                Method::DELETE,
                &format!("/api/collections/{cid}/shares/{carol_id}"),
                &carol,
                None
            )
            .await
            .0,
        204
    );
    assert_eq!(
        server
            .call(Method::GET, &format!("/api/files/{file}"), &carol, None)
            .await
            .0,
        404
    );

    // Deleting the file removes it from the collection and its comments go with it.
    assert_eq!(
        server
            .call(Method::DELETE, &format!("/api/files/{file}"), &alice, None)
            .await
            .0,
        204
    );
    let (_, view): (u16, Value) = server
        .call(
            Method::GET,
            &format!("/api/collections/{cid}"),
            &alice,
            None,
        )
        .await;
    assert_eq!(view["file_count"], 0, "{view}");
    assert_eq!(
        server
            .call(
                Method::DELETE,
                &format!("/api/collections/{cid}"),
                &alice,
                None
            )
            .await
            .0,
        204
    );
    assert!(
        server
            .call(Method::GET, "/api/collections", &alice, None)
            .await
            .1["collections"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    server.stop().await;
}

/// Markdown and DOCX exports of a real transcript; the DOCX is opened by a real reader
/// (python-docx, in the test Python that scripts/test prepares, `OT_TEST_OPENAI_PYTHON`).
#[tokio::test]
async fn markdown_and_docx_exports_open_in_real_readers() {
    let server = TestServer::start_with(|c| {
        c.models_dir = crate::models::models_dir();
        c.jobs.model = "whisper-tiny.en".to_owned();
        c.jobs.beam_size = 1;
    })
    .await;
    let token = server.admin().await;
    let file = transcribed_file(&server, &token, "talk.wav").await;
    let (_, transcript) = server
        .call(
            Method::GET,
            &format!("/api/files/{file}/transcript"),
            &token,
            None,
        )
        .await;
    let first_words: Vec<String> = transcript["segments"][0]["text"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .take(3)
        .map(|w| w.trim_matches(|c: char| !c.is_alphanumeric()).to_owned())
        .collect();

    let export = |format: &'static str| {
        let request = server
            .client
            .get(server.url(&format!("/api/files/{file}/export?format={format}")))
            .bearer_auth(&token);
        async move { request.send().await.unwrap() }
    };
    let md = export("md").await;
    assert_eq!(md.status(), 200);
    assert!(
        md.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/markdown")
    );
    let md = md.text().await.unwrap();
    assert!(md.contains("(00:00:0"), "{md}");
    for word in &first_words {
        assert!(md.contains(word.as_str()), "{word} missing from {md}");
    }

    let docx = export("docx").await;
    assert_eq!(docx.status(), 200);
    assert_eq!(
        docx.headers()["content-type"],
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    );
    assert!(
        docx.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("talk.docx")
    );
    let bytes = docx.bytes().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("talk.docx");
    std::fs::write(&path, &bytes).unwrap();
    let python = std::env::var("OT_TEST_OPENAI_PYTHON").expect(
        "OT_TEST_OPENAI_PYTHON must name a python with python-docx (scripts/test sets it up)",
    );
    let output = std::process::Command::new(python)
        .args([
            "-c",
            "import sys, docx\nfor p in docx.Document(sys.argv[1]).paragraphs:\n    print(('B:' if any(r.bold for r in p.runs) else 'P:') + p.text)",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "python-docx could not open it: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 2, "{text}");
    // A heading (speaker in bold when diarized, and the time) then the turn's text.
    assert!(lines[0].contains("00:00:0"), "{text}");
    for word in &first_words {
        assert!(text.contains(word.as_str()), "{word} missing from {text}");
    }
}
