//! Unit tests for the blob store: round trips, random access, tampering, keys and sweeping.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use super::crypto::{ENCRYPTED_HEADER_LEN, KEY_LEN, TAG_LEN, hmac_sha256};
use super::*;

const CHUNK: usize = ENCRYPTION_CHUNK_SIZE;

/// Deterministic SplitMix64, so failures reproduce without extra dependencies.
struct TestRng(u64);

impl TestRng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

struct TestStores {
    _dir: tempfile::TempDir,
    root: PathBuf,
    key_path: PathBuf,
}

impl TestStores {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("blobs");
        let key_path = dir.path().join("keys").join("blob.key");
        TestStores {
            _dir: dir,
            root,
            key_path,
        }
    }

    fn plain(&self) -> BlobStore {
        BlobStore::open(&self.root, None).unwrap()
    }

    fn encrypted(&self) -> BlobStore {
        BlobStore::open(&self.root, Some(&self.key_path)).unwrap()
    }
}

fn put(store: &BlobStore, data: &[u8]) -> BlobInfo {
    let mut writer = store.begin_write().unwrap();
    // Odd-sized pieces exercise the chunk boundary handling in the writer.
    for piece in data.chunks(7919) {
        writer.write_all(piece).unwrap();
    }
    assert_eq!(writer.bytes_written(), data.len() as u64);
    writer.finish().unwrap()
}

fn read_all(store: &BlobStore, sha256: &str) -> Vec<u8> {
    let mut reader = store.open_read(sha256).unwrap();
    let mut out = Vec::new();
    reader.read_to_end(&mut out).unwrap();
    out
}

fn stored_path(store: &BlobStore, sha256: &str) -> PathBuf {
    let encrypted = store.encrypted_path(sha256);
    if encrypted.exists() {
        encrypted
    } else {
        store.plain_path(sha256)
    }
}

fn temp_file_count(store: &BlobStore) -> usize {
    fs::read_dir(store.root().join(TEMP_DIR_NAME))
        .unwrap()
        .count()
}

fn interesting_sizes() -> Vec<usize> {
    vec![0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 12345]
}

fn round_trip(store: &BlobStore, expect_encrypted: bool) {
    let mut rng = TestRng(42);
    for size in interesting_sizes() {
        let data = rng.bytes(size);
        let info = put(store, &data);
        assert_eq!(info.sha256, sha256_hex(&data), "size {size}");
        assert_eq!(info.size, size as u64);
        assert!(store.exists(&info.sha256));
        let path = stored_path(store, &info.sha256);
        assert_eq!(
            path.to_string_lossy().ends_with(ENCRYPTED_SUFFIX),
            expect_encrypted
        );
        assert!(
            path.starts_with(
                store
                    .root()
                    .join(&info.sha256[0..2])
                    .join(&info.sha256[2..4])
            )
        );
        let file_mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(file_mode, 0o600);
        let on_disk = fs::read(&path).unwrap();
        if expect_encrypted {
            assert_ne!(on_disk.get(ENCRYPTED_HEADER_LEN..), Some(&data[..]));
        } else {
            assert_eq!(on_disk, data);
        }
        let reader = store.open_read(&info.sha256).unwrap();
        assert_eq!(reader.len(), size as u64);
        assert_eq!(reader.is_empty(), size == 0);
        assert_eq!(reader.is_encrypted(), expect_encrypted);
        assert_eq!(read_all(store, &info.sha256), data, "size {size}");
    }
    assert_eq!(temp_file_count(store), 0);
}

#[test]
fn round_trip_plain() {
    let stores = TestStores::new();
    round_trip(&stores.plain(), false);
}

#[test]
fn round_trip_encrypted() {
    let stores = TestStores::new();
    round_trip(&stores.encrypted(), true);
}

fn random_ranges(store: &BlobStore) {
    let mut rng = TestRng(7);
    let data = rng.bytes(3 * CHUNK + 777);
    let info = put(store, &data);
    let mut reader = store.open_read(&info.sha256).unwrap();
    for _ in 0..300 {
        let start = rng.below(data.len() as u64 + 10) as usize;
        let want = rng.below(2 * CHUNK as u64 + 5) as usize;
        let position = match rng.below(3) {
            0 => reader.seek(SeekFrom::Start(start as u64)).unwrap(),
            1 => reader
                .seek(SeekFrom::End(start as i64 - data.len() as i64))
                .unwrap(),
            _ => {
                let current = reader.stream_position().unwrap() as i64;
                reader
                    .seek(SeekFrom::Current(start as i64 - current))
                    .unwrap()
            }
        };
        assert_eq!(position, start as u64);
        let mut got = Vec::new();
        (&mut reader)
            .take(want as u64)
            .read_to_end(&mut got)
            .unwrap();
        let expected_end = (start + want).min(data.len());
        let expected = data.get(start..expected_end).unwrap_or(&[]);
        assert_eq!(got, expected, "range {start}+{want}");
    }
    assert!(
        reader
            .seek(SeekFrom::End(-(data.len() as i64) - 1))
            .is_err()
    );
}

#[test]
fn random_ranges_plain() {
    let stores = TestStores::new();
    random_ranges(&stores.plain());
}

#[test]
fn random_ranges_encrypted() {
    let stores = TestStores::new();
    random_ranges(&stores.encrypted());
}

#[test]
fn dedup_keeps_one_copy_and_no_temp_files() {
    let stores = TestStores::new();
    let store = stores.encrypted();
    let first = put(&store, b"same content");
    let path = stored_path(&store, &first.sha256);
    let before = fs::read(&path).unwrap();
    let second = put(&store, b"same content");
    assert_eq!(first, second);
    // The existing file was kept (a fresh encryption would have a different salt).
    assert_eq!(fs::read(&path).unwrap(), before);
    assert_eq!(store.list().unwrap(), vec![first.sha256.clone()]);
    assert_eq!(temp_file_count(&store), 0);
    // A plain store sees the encrypted copy as existing too and does not add a plain one.
    let plain_store = stores.plain();
    put(&plain_store, b"same content");
    assert!(!plain_store.plain_path(&first.sha256).exists());
}

#[test]
fn dropped_writer_leaves_nothing() {
    let stores = TestStores::new();
    for store in [stores.plain(), stores.encrypted()] {
        let mut writer = store.begin_write().unwrap();
        writer.write_all(&vec![5u8; CHUNK * 2 + 3]).unwrap();
        assert_eq!(temp_file_count(&store), 1);
        drop(writer);
        assert_eq!(temp_file_count(&store), 0);
        assert!(store.list().unwrap().is_empty());
    }
}

#[test]
fn flipped_byte_is_corrupt_only_for_its_chunk() {
    let stores = TestStores::new();
    let store = stores.encrypted();
    let data = TestRng(3).bytes(3 * CHUNK + 100);
    let info = put(&store, &data);
    let path = stored_path(&store, &info.sha256);
    let mut bytes = fs::read(&path).unwrap();
    // A byte inside chunk 1.
    bytes[ENCRYPTED_HEADER_LEN + (CHUNK + TAG_LEN) + 500] ^= 0x01;
    fs::write(&path, &bytes).unwrap();

    let mut reader = store.open_read(&info.sha256).unwrap();
    let mut first_chunk = vec![0u8; CHUNK];
    reader.read_exact(&mut first_chunk).unwrap();
    assert_eq!(first_chunk, data[..CHUNK]);
    let mut one = [0u8; 1];
    let error = reader.read(&mut one).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    assert_eq!(BlobError::from(error).code(), "blob-corrupt");
    // Chunk 2 is still fine after seeking past the damage.
    reader.seek(SeekFrom::Start(2 * CHUNK as u64)).unwrap();
    reader.read_exact(&mut one).unwrap();
    assert_eq!(one[0], data[2 * CHUNK]);
}

#[test]
fn tampering_with_layout_is_corrupt() {
    let stores = TestStores::new();
    let store = stores.encrypted();
    let data = TestRng(4).bytes(3 * CHUNK);
    let info = put(&store, &data);
    let path = stored_path(&store, &info.sha256);
    let original = fs::read(&path).unwrap();
    let stored_chunk = CHUNK + TAG_LEN;
    let open_code = |bytes: &[u8]| {
        fs::write(&path, bytes).unwrap();
        match store.open_read(&info.sha256) {
            Ok(mut reader) => {
                let mut sink = Vec::new();
                match reader.read_to_end(&mut sink) {
                    Ok(_) => "ok",
                    Err(error) => BlobError::from(error).code(),
                }
            }
            Err(error) => error.code(),
        }
    };
    assert_eq!(open_code(&original), "ok");
    // Cut in the middle of the last chunk.
    assert_eq!(open_code(&original[..original.len() - 10]), "blob-corrupt");
    // Drop the whole last chunk: the new last chunk is not flagged as last.
    assert_eq!(
        open_code(&original[..original.len() - stored_chunk]),
        "blob-corrupt"
    );
    // Extension by a duplicate of the last chunk.
    let mut extended = original.clone();
    extended.extend_from_slice(&original[original.len() - stored_chunk..]);
    assert_eq!(open_code(&extended), "blob-corrupt");
    // Swap chunks 0 and 1.
    let mut swapped = original.clone();
    let (chunk0, chunk1) = (ENCRYPTED_HEADER_LEN, ENCRYPTED_HEADER_LEN + stored_chunk);
    let first: Vec<u8> = original[chunk0..chunk1].to_vec();
    swapped[chunk0..chunk1].copy_from_slice(&original[chunk1..chunk1 + stored_chunk]);
    swapped[chunk1..chunk1 + stored_chunk].copy_from_slice(&first);
    assert_eq!(open_code(&swapped), "blob-corrupt");
    // Header: changed salt, and truncation into the header.
    let mut bad_salt = original.clone();
    bad_salt[20] ^= 0x80;
    assert_eq!(open_code(&bad_salt), "blob-corrupt");
    assert_eq!(open_code(&original[..20]), "blob-corrupt");
    assert_eq!(open_code(&original[..ENCRYPTED_HEADER_LEN]), "blob-corrupt");
}

#[test]
fn plain_blob_stays_readable_after_enabling_encryption() {
    let stores = TestStores::new();
    let plain_info = put(&stores.plain(), b"written before encryption");
    let store = stores.encrypted();
    assert!(store.encrypts_new_blobs());
    assert_eq!(
        read_all(&store, &plain_info.sha256),
        b"written before encryption"
    );
    let encrypted_info = put(&store, b"written after");
    // Reopen with the same (now existing) key file: both still readable.
    let reopened = stores.encrypted();
    assert_eq!(
        read_all(&reopened, &encrypted_info.sha256),
        b"written after"
    );
    assert_eq!(
        read_all(&reopened, &plain_info.sha256),
        b"written before encryption"
    );
    // Without a key the encrypted blob is a clear key error, the plain one still works.
    let keyless = stores.plain();
    assert_eq!(
        keyless
            .open_read(&encrypted_info.sha256)
            .unwrap_err()
            .code(),
        "blob-key"
    );
    assert_eq!(
        read_all(&keyless, &plain_info.sha256),
        b"written before encryption"
    );
    let mut listed = keyless.list().unwrap();
    listed.sort();
    let mut expected = vec![plain_info.sha256, encrypted_info.sha256];
    expected.sort();
    assert_eq!(listed, expected);
}

#[test]
fn wrong_key_is_corrupt() {
    let stores = TestStores::new();
    let info = put(&stores.encrypted(), b"secret");
    fs::remove_file(&stores.key_path).unwrap();
    let store = stores.encrypted(); // generates a different key
    assert_eq!(
        store.open_read(&info.sha256).unwrap_err().code(),
        "blob-corrupt"
    );
}

#[test]
fn key_file_permissions_and_size() {
    let stores = TestStores::new();
    let store = stores.encrypted();
    assert!(format!("{store:?}").contains("encrypt_new_blobs: true"));
    let metadata = fs::metadata(&stores.key_path).unwrap();
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    assert_eq!(metadata.len(), KEY_LEN as u64);
    let key_dir = stores.key_path.parent().unwrap();
    assert_eq!(
        fs::metadata(key_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        fs::metadata(&stores.root).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let key_bytes = fs::read(&stores.key_path).unwrap();
    assert!(!format!("{store:?}").contains(&format!("{:?}", &key_bytes[..4])));

    fs::set_permissions(&stores.key_path, fs::Permissions::from_mode(0o644)).unwrap();
    let error = BlobStore::open(&stores.root, Some(&stores.key_path)).unwrap_err();
    assert_eq!(error.code(), "blob-key");
    assert!(error.to_string().contains("0644"), "{error}");

    fs::set_permissions(&stores.key_path, fs::Permissions::from_mode(0o400)).unwrap();
    BlobStore::open(&stores.root, Some(&stores.key_path)).unwrap();

    fs::set_permissions(&stores.key_path, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(&stores.key_path, [1u8; 31]).unwrap();
    let error = BlobStore::open(&stores.root, Some(&stores.key_path)).unwrap_err();
    assert_eq!(error.code(), "blob-key");
    assert!(error.to_string().contains("31 bytes"), "{error}");
}

#[test]
fn sweep_removes_orphans_and_old_temp_files() {
    let stores = TestStores::new();
    let store = stores.encrypted();
    let keep = put(&store, b"keep me");
    let orphan = put(&store, b"orphan");
    let plain_orphan = put(&stores.plain(), b"plain orphan");
    let temp_dir = store.root().join(TEMP_DIR_NAME);
    let old_temp = temp_dir.join("old.tmp");
    let fresh_temp = temp_dir.join("fresh.tmp");
    fs::write(&old_temp, b"partial").unwrap();
    fs::write(&fresh_temp, b"in progress").unwrap();
    File::options()
        .write(true)
        .open(&old_temp)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(7200))
        .unwrap();
    // A file that is not a blob must be left alone.
    let stray = store.root().join("README");
    fs::write(&stray, b"not a blob").unwrap();

    let referenced: HashSet<String> = [keep.sha256.clone()].into_iter().collect();
    let report = store.sweep(&referenced, Duration::from_secs(3600)).unwrap();
    assert_eq!(report.removed_blobs, 2);
    assert_eq!(report.kept_blobs, 1);
    assert_eq!(report.removed_temp_files, 1);
    assert!(report.freed_bytes > 0);
    assert!(store.exists(&keep.sha256));
    assert!(!store.exists(&orphan.sha256));
    assert!(!store.exists(&plain_orphan.sha256));
    assert!(!old_temp.exists());
    assert!(fresh_temp.exists());
    assert!(stray.exists());
    assert_eq!(store.list().unwrap(), vec![keep.sha256.clone()]);
    assert_eq!(read_all(&store, &keep.sha256), b"keep me");
}

#[test]
fn remove_and_invalid_names() {
    let stores = TestStores::new();
    let store = stores.plain();
    let info = put(&store, b"x");
    let upper = info.sha256.to_uppercase();
    // Plant a file where an uppercase name would map, so only validation can refuse it.
    let upper_dir = store.root().join(&upper[0..2]).join(&upper[2..4]);
    fs::create_dir_all(&upper_dir).unwrap();
    fs::write(upper_dir.join(&upper), b"x").unwrap();
    assert!(!is_valid_sha256(&upper));
    assert!(is_valid_sha256(&info.sha256));
    for invalid in [
        "../x",
        "",
        upper.as_str(),
        &info.sha256[..63],
        "../../../../../../../../../../../../../../../../../../etc/passwd",
        &format!("{}/", &info.sha256[..63]),
    ] {
        assert_eq!(
            store.open_read(invalid).unwrap_err().code(),
            "blob-not-found"
        );
        assert!(!store.exists(invalid));
        assert!(!store.remove(invalid).unwrap());
    }
    let missing = "0".repeat(64);
    assert_eq!(
        store.open_read(&missing).unwrap_err().code(),
        "blob-not-found"
    );
    assert!(store.remove(&info.sha256).unwrap());
    assert!(!store.remove(&info.sha256).unwrap());
    assert!(!store.exists(&info.sha256));
    assert_eq!(
        store.open_read(&info.sha256).unwrap_err().code(),
        "blob-not-found"
    );
}

#[test]
fn handles_are_thread_safe() {
    fn assert_shareable<T: Send + Sync + Clone + fmt::Debug>() {}
    fn assert_sendable<T: Send>() {}
    assert_shareable::<BlobStore>();
    assert_sendable::<BlobWriter>();
    assert_sendable::<BlobReader>();
    assert_shareable::<BlobInfo>();
}

#[test]
fn hmac_matches_rfc_4231() {
    // RFC 4231 test case 2, with the key zero-padded to 32 bytes (HMAC pads to the block anyway).
    let mut key = [0u8; KEY_LEN];
    key[..4].copy_from_slice(b"Jefe");
    assert_eq!(
        hex::encode(hmac_sha256(&key, &[b"what do ya ", b"want for nothing?"])),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

#[test]
fn disk_full_errors_are_classified() {
    let enospc = io::Error::from_raw_os_error(libc::ENOSPC);
    assert_eq!(BlobError::from_io("writing", enospc).code(), "disk-full");
    let storage_full = io::Error::from(io::ErrorKind::StorageFull);
    assert_eq!(BlobError::from(storage_full).code(), "disk-full");
    let other = io::Error::from_raw_os_error(libc::EIO);
    assert_eq!(BlobError::from(other).code(), "blob-io");
    // A BlobError tunnelled through io::Error comes back unchanged.
    let tunnelled = BlobError::corrupt("abc", "test").into_io();
    assert_eq!(BlobError::from(tunnelled).code(), "blob-corrupt");
}
