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

/// Outside the watch folder: a file that must stay byte-for-byte the same, a real media file a
/// planted link points at, and names that must never be created.
struct Outside {
    dir: tempfile::TempDir,
}

impl Outside {
    fn new(wav: &[u8]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("victim.txt"), b"precious\n").unwrap();
        std::fs::write(dir.path().join("media.wav"), wav).unwrap();
        std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    /// Nothing outside changed and nothing new appeared.
    fn assert_untouched(&self, wav: &[u8]) {
        assert_eq!(
            std::fs::read(self.path("victim.txt")).unwrap(),
            b"precious\n"
        );
        assert_eq!(std::fs::read(self.path("media.wav")).unwrap(), wav);
        let mut names: Vec<String> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["elsewhere", "media.wav", "victim.txt"]);
        assert_eq!(
            std::fs::read_dir(self.path("elsewhere")).unwrap().count(),
            0,
            "nothing was moved out of the watch folder"
        );
    }
}

fn is_symlink(path: &std::path::Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

async fn filenames(server: &TestServer, token: &str) -> Vec<String> {
    let (_, files) = server.call(Method::GET, "/api/files", token, None).await;
    let mut names: Vec<String> = files["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["filename"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn move_mode_never_follows_symlinks() {
    use std::os::unix::fs::symlink;
    let inbox = tempfile::tempdir().unwrap();
    let dir = inbox.path().to_owned();
    let (id, _) = references().into_iter().next().unwrap();
    let wav = std::fs::read(format!("{LIBRIVOX}/{id}.wav")).unwrap();
    let outside = Outside::new(&wav);
    // Planted before the daemon starts: links at the names of reason notes and a move target.
    let failed = inbox.path().join("failed");
    let imported = inbox.path().join("imported");
    std::fs::create_dir(&failed).unwrap();
    std::fs::create_dir(&imported).unwrap();
    symlink(
        outside.path("victim.txt"),
        failed.join("notes.txt.reason.txt"),
    )
    .unwrap();
    symlink(
        outside.path("created.txt"),
        failed.join("bad.txt.reason.txt"),
    )
    .unwrap();
    symlink(outside.path("created.wav"), imported.join("meeting.wav")).unwrap();

    let server = TestServer::start_with(|c| {
        c.watch.dir = dir.display().to_string();
        c.watch.user = "admin".to_owned();
        c.watch.interval_secs = 1;
        c.jobs.workers = 0;
    })
    .await;
    let admin = server.admin().await;
    std::fs::write(inbox.path().join("meeting.wav"), &wav).unwrap();
    std::fs::write(inbox.path().join("notes.txt"), b"not media").unwrap();
    std::fs::write(inbox.path().join("bad.txt"), b"not media either").unwrap();
    symlink(outside.path("media.wav"), inbox.path().join("link.wav")).unwrap();

    // A (dangling) link at the target's name counts as taken: a numbered name is chosen.
    let meeting = imported.join("1-meeting.wav");
    wait_for("the import", || meeting.exists()).await;
    assert!(is_symlink(&imported.join("meeting.wav")));
    // Links at a note's name are never written through: the next free name pair is used.
    for name in ["notes.txt", "bad.txt"] {
        let note = failed.join(format!("1-{name}.reason.txt"));
        wait_for("the refusal", || note.exists()).await;
        let reason = std::fs::read_to_string(&note).unwrap();
        assert!(reason.contains("not decodable"), "{reason}");
        assert!(failed.join(format!("1-{name}")).is_file());
    }
    // The link to media outside is not imported: the link itself is set aside with the reason.
    let note = failed.join("link.wav.reason.txt");
    wait_for("the link's refusal", || note.exists()).await;
    let reason = std::fs::read_to_string(&note).unwrap();
    assert!(
        reason.contains("symbolic links are not imported"),
        "{reason}"
    );
    assert!(is_symlink(&failed.join("link.wav")));
    assert!(!is_symlink(&inbox.path().join("link.wav")));

    assert_eq!(filenames(&server, &admin).await, ["meeting.wav"]);
    outside.assert_untouched(&wav);
    server.stop().await;
}

#[tokio::test]
async fn move_mode_refuses_symlinked_target_dirs() {
    use std::os::unix::fs::symlink;
    let (id, _) = references().into_iter().next().unwrap();
    let wav = std::fs::read(format!("{LIBRIVOX}/{id}.wav")).unwrap();
    for (linked, other) in [("imported", "failed"), ("failed", "imported")] {
        let inbox = tempfile::tempdir().unwrap();
        let dir = inbox.path().to_owned();
        let outside = Outside::new(&wav);
        // One points at an existing directory outside, the other at one that must not appear.
        symlink(outside.path("elsewhere"), inbox.path().join(linked)).unwrap();
        symlink(outside.path("made-dir"), inbox.path().join(other)).unwrap();
        let server = TestServer::start_with(|c| {
            c.watch.dir = dir.display().to_string();
            c.watch.user = "admin".to_owned();
            c.watch.interval_secs = 1;
            c.jobs.workers = 0;
        })
        .await;
        let admin = server.admin().await;
        std::fs::write(inbox.path().join("meeting.wav"), &wav).unwrap();
        std::fs::write(inbox.path().join("notes.txt"), b"not media").unwrap();
        symlink(outside.path("media.wav"), inbox.path().join("link.wav")).unwrap();
        // Several scans past the settling time: nothing is imported or moved.
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(inbox.path().join("meeting.wav").is_file());
        assert!(inbox.path().join("notes.txt").is_file());
        assert!(is_symlink(&inbox.path().join("link.wav")));
        assert!(filenames(&server, &admin).await.is_empty());
        outside.assert_untouched(&wav);
        server.stop().await;
    }
}

#[tokio::test]
async fn mark_mode_never_follows_symlinks() {
    use std::os::unix::fs::symlink;
    let inbox = tempfile::tempdir().unwrap();
    let dir = inbox.path().to_owned();
    let (id, _) = references().into_iter().next().unwrap();
    let wav = std::fs::read(format!("{LIBRIVOX}/{id}.wav")).unwrap();
    let outside = Outside::new(&wav);
    let server = TestServer::start_with(|c| {
        c.watch.dir = dir.display().to_string();
        c.watch.user = "admin".to_owned();
        c.watch.interval_secs = 1;
        c.watch.after = "mark".to_owned();
        c.jobs.workers = 0;
    })
    .await;
    let admin = server.admin().await;
    let path = |name: &str| inbox.path().join(name);
    // Links at marker names, planted before the files.
    symlink(outside.path("created-imported"), path("a.wav.imported")).unwrap();
    symlink(outside.path("created-failed"), path("b.txt.failed")).unwrap();
    symlink(outside.path("victim.txt"), path("c.wav.failed")).unwrap();
    std::fs::write(path("a.wav"), &wav).unwrap();
    std::fs::write(path("b.txt"), b"not media").unwrap();
    std::fs::write(path("c.wav"), &wav).unwrap();
    std::fs::write(path("d.wav"), &wav).unwrap();
    symlink(outside.path("media.wav"), path("link.wav")).unwrap();

    wait_for("the plain import", || path("d.wav.imported").is_file()).await;
    // A link at `.imported`: the file is refused, the reason in a real `.failed` marker.
    wait_for("a.wav's refusal", || path("a.wav.failed").is_file()).await;
    let reason = std::fs::read_to_string(path("a.wav.failed")).unwrap();
    assert!(reason.contains("symbolic link"), "{reason}");
    // The link to media outside is refused and marked.
    wait_for("the link's refusal", || path("link.wav.failed").is_file()).await;
    let reason = std::fs::read_to_string(path("link.wav.failed")).unwrap();
    assert!(
        reason.contains("symbolic links are not imported"),
        "{reason}"
    );
    // A link at `.failed`: no marker can be written safely, so the file is left alone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for name in ["b.txt", "c.wav"] {
        assert!(!path(&format!("{name}.imported")).exists(), "{name}");
        assert!(is_symlink(&path(&format!("{name}.failed"))), "{name}");
    }
    assert!(is_symlink(&path("a.wav.imported")));
    assert!(!path("link.wav.imported").exists());
    assert_eq!(filenames(&server, &admin).await, ["d.wav"]);
    outside.assert_untouched(&wav);
    server.stop().await;
}
