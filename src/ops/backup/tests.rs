//! Unit tests of backup paths and rotation.

use std::fs;
use std::io::Write;

use super::create::prune;
use super::files::is_safe_backup_path;
use super::*;

#[test]
fn blob_candidates_match_the_blob_store_layout() {
    let dir = tempfile::tempdir().unwrap();
    let plain = crate::blobs::BlobStore::open(&dir.path().join("plain"), None).unwrap();
    let mut writer = plain.begin_write().unwrap();
    writer.write_all(b"some bytes").unwrap();
    let info = writer.finish().unwrap();
    let candidates = blob_candidates(&info.sha256);
    assert!(dir.path().join("plain").join(&candidates[0]).is_file());
    let encrypted = crate::blobs::BlobStore::open(
        &dir.path().join("enc"),
        Some(&dir.path().join("keys/blob.key")),
    )
    .unwrap();
    let mut writer = encrypted.begin_write().unwrap();
    writer.write_all(b"some bytes").unwrap();
    let info = writer.finish().unwrap();
    assert!(
        dir.path()
            .join("enc")
            .join(&blob_candidates(&info.sha256)[1])
            .is_file()
    );
    assert!(blob_candidates("../../etc/passwd").is_empty());
}

#[test]
fn backup_paths_outside_the_layout_are_unsafe() {
    for good in [
        "opentranscribe.redb",
        "blobs/ab/cd/x",
        "secrets/blob.key",
        "tls/key.pem",
        "config/opentranscribe.toml",
    ] {
        assert!(is_safe_backup_path(good), "{good}");
    }
    for bad in [
        "",
        "/etc/passwd",
        "blobs/../../x",
        "other/file",
        "blobs",
        "./opentranscribe.redb",
    ] {
        assert!(!is_safe_backup_path(bad), "{bad}");
    }
}

#[test]
fn prune_keeps_the_newest_complete_backups() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "opentranscribe-20260101T000000Z",
        "opentranscribe-20260102T000000Z",
        "opentranscribe-20260103T000000Z",
    ] {
        fs::create_dir(dir.path().join(name)).unwrap();
        fs::write(dir.path().join(name).join(MANIFEST_FILE), "{}").unwrap();
    }
    // Incomplete and foreign directories are never touched.
    fs::create_dir(dir.path().join("opentranscribe-20250101T000000Z")).unwrap();
    fs::create_dir(dir.path().join("mine")).unwrap();
    let pruned = prune(dir.path(), 2).unwrap();
    assert_eq!(
        pruned,
        vec![dir.path().join("opentranscribe-20260101T000000Z")]
    );
    let mut left: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        [
            "mine",
            "opentranscribe-20250101T000000Z",
            "opentranscribe-20260102T000000Z",
            "opentranscribe-20260103T000000Z"
        ]
    );
}
