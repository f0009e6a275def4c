//! The watch folder: media dropped in is imported once for the configured user and moved to
//! `imported/`; non-media goes to `failed/` with a reason; the `mark` mode leaves markers.

use std::time::{Duration, Instant};

use reqwest::Method;

use crate::asr::{LIBRIVOX, references};
use crate::support::TestServer;

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn dropped_files_are_imported_once_and_moved() {
    let inbox = tempfile::tempdir().unwrap();
    let dir = inbox.path().to_owned();
    let server = TestServer::start_with(|c| {
        c.watch.dir = dir.display().to_string();
        c.watch.user = "alice".to_owned();
        c.watch.interval_secs = 1;
        c.jobs.workers = 0;
    })
    .await;
    let admin = server.admin().await;
    let alice = server.user(&admin, "alice").await;

    let (id, _) = references().into_iter().next().unwrap();
    let wav = std::fs::read(format!("{LIBRIVOX}/{id}.wav")).unwrap();
    // A copy in progress under a partial name is left alone, then renamed into place.
    std::fs::write(inbox.path().join("meeting.wav.part"), &wav).unwrap();
    std::fs::write(inbox.path().join("notes.txt"), b"not media at all").unwrap();
    std::fs::write(inbox.path().join(".hidden.wav"), &wav).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(inbox.path().join("meeting.wav.part").exists());
    std::fs::rename(
        inbox.path().join("meeting.wav.part"),
        inbox.path().join("meeting.wav"),
    )
    .unwrap();

    let imported = inbox.path().join("imported/meeting.wav");
    wait_for("the import", || imported.exists()).await;
    let failed = inbox.path().join("failed/notes.txt");
    wait_for("the refusal", || failed.exists()).await;
    let reason = std::fs::read_to_string(inbox.path().join("failed/notes.txt.reason.txt")).unwrap();
    assert!(reason.contains("not decodable"), "{reason}");
    assert!(
        inbox.path().join(".hidden.wav").exists(),
        "hidden files are ignored"
    );

    let (_, files) = server.call(Method::GET, "/api/files", &alice, None).await;
    assert_eq!(files["total"], 1, "{files}");
    assert_eq!(files["items"][0]["filename"], "meeting.wav");
    assert_eq!(files["items"][0]["status"], "queued");
    let (_, admin_files) = server.call(Method::GET, "/api/files", &admin, None).await;
    assert_eq!(admin_files["total"], 0, "imports belong to watch.user only");

    // Dropping the same name again imports it again (a new file), never overwriting.
    std::fs::write(inbox.path().join("meeting.wav"), &wav).unwrap();
    let second = inbox.path().join("imported/1-meeting.wav");
    wait_for("the second import", || second.exists()).await;
    let (_, files) = server.call(Method::GET, "/api/files", &alice, None).await;
    assert_eq!(files["total"], 2, "{files}");
    server.stop().await;
}

#[tokio::test]
async fn mark_mode_leaves_files_in_place_with_markers() {
    let inbox = tempfile::tempdir().unwrap();
    let dir = inbox.path().to_owned();
    let server = TestServer::start_with(|c| {
        c.watch.dir = dir.display().to_string();
        c.watch.user = "admin".to_owned();
        c.watch.interval_secs = 1;
        c.watch.after = "mark".to_owned();
        c.jobs.workers = 0;
    })
    .await;
    let admin = server.admin().await;
    let (id, _) = references().into_iter().next().unwrap();
    let wav = std::fs::read(format!("{LIBRIVOX}/{id}.wav")).unwrap();
    std::fs::write(inbox.path().join("a.wav"), &wav).unwrap();
    let marker = inbox.path().join("a.wav.imported");
    wait_for("the marker", || marker.exists()).await;
    // Several more scans do not import it again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(inbox.path().join("a.wav").exists());
    let (_, files) = server.call(Method::GET, "/api/files", &admin, None).await;
    assert_eq!(files["total"], 1, "{files}");
    server.stop().await;
}
