//! Model bundle import: an archive through `models::bundle::import` into an empty cache, with
//! small limits. Checked after every import: nothing is written outside the cache, no staging
//! or retired directory is left behind, and every model an import reports verifies by hash.
//!
//! Input: raw bundle bytes (tar, tar.zst or tar.bz2, as a user would give), or `\xffS`
//! followed by a structured archive that this target writes as a tar with valid checksums
//! (so the fuzzer gets past the tar headers to manifests, sherpa-onnx layouts and ONNX
//! metadata).
#![no_main]

use std::io::Write;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use opentranscribe::models::bundle::{ImportLimits, import};
use opentranscribe::models::cache::{Depth, ModelCache, RETIRED_PREFIX, STAGING_PREFIX};
use opentranscribe::models::onnx_meta::encode_model_with_metadata;

const LIMITS: ImportLimits = ImportLimits {
    max_member_bytes: 1 << 20,
    max_total_bytes: 4 << 20,
    max_members: 64,
};

#[derive(Arbitrary, Debug)]
enum Compression {
    None,
    Zstd,
    Bzip2,
}

#[derive(Arbitrary, Debug)]
enum Body {
    Bytes(Vec<u8>),
    /// A minimal ONNX `ModelProto` holding these metadata entries.
    Onnx(Vec<(String, String)>),
    /// A manifest listing the archive's other files under this model, with their real sizes
    /// and hashes, perhaps with some fields changed.
    Manifest {
        model: String,
        kind: u8,
        format_version: u32,
        wrong_size: bool,
        wrong_hash: bool,
        extra_file: Option<String>,
    },
}

#[derive(Arbitrary, Debug)]
enum Kind {
    File(Body),
    Dir,
    Symlink(String),
    Hardlink(String),
    Fifo,
}

#[derive(Arbitrary, Debug)]
struct Member {
    path: String,
    kind: Kind,
    /// Lie about the size in the header.
    size_delta: i8,
}

#[derive(Arbitrary, Debug)]
struct Archive {
    compression: Compression,
    members: Vec<Member>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn manifest_json(archive: &Archive, own_path: &str, body: &Body) -> Vec<u8> {
    let Body::Manifest {
        model,
        kind,
        format_version,
        wrong_size,
        wrong_hash,
        extra_file,
    } = body
    else {
        return Vec::new();
    };
    let prefix = own_path.rsplit_once('/').map_or("", |(dir, _)| dir);
    let mut files = Vec::new();
    for member in &archive.members {
        let Kind::File(Body::Bytes(bytes)) = &member.kind else {
            continue;
        };
        let Some(relative) = member
            .path
            .strip_prefix(prefix)
            .and_then(|p| p.strip_prefix('/'))
        else {
            continue;
        };
        let size = bytes.len() as u64 + u64::from(*wrong_size);
        let sha = if *wrong_hash {
            "0".repeat(64)
        } else {
            sha256_hex(bytes)
        };
        files.push(serde_json::json!({"path": relative, "size": size, "sha256": sha}));
    }
    if let Some(extra) = extra_file {
        files.push(serde_json::json!({"path": extra, "size": 0, "sha256": sha256_hex(b"")}));
    }
    let kinds = [
        "runtime",
        "asr",
        "vad",
        "segmentation",
        "speaker-embedding",
        "text-embedding",
    ];
    serde_json::to_vec(&serde_json::json!({
        "format_version": format_version,
        "name": model,
        "kind": kinds[usize::from(*kind) % kinds.len()],
        "files": files,
    }))
    .unwrap_or_default()
}

fn write_archive(archive: &Archive) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for member in &archive.members {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_mtime(0);
        if header.set_path(&member.path).is_err() {
            // Names the tar crate refuses to write (`..`, too long) go in raw.
            let raw = member.path.as_bytes();
            let name = &mut header.as_old_mut().name;
            let n = raw.len().min(name.len());
            name[..n].copy_from_slice(&raw[..n]);
        }
        let data: Vec<u8> = match &member.kind {
            Kind::File(Body::Bytes(bytes)) => bytes.clone(),
            Kind::File(Body::Onnx(meta)) => {
                let pairs: Vec<(&str, &str)> =
                    meta.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                encode_model_with_metadata(&pairs, b"weights")
            }
            Kind::File(body @ Body::Manifest { .. }) => manifest_json(archive, &member.path, body),
            _ => Vec::new(),
        };
        match &member.kind {
            Kind::File(_) => header.set_entry_type(tar::EntryType::Regular),
            Kind::Dir => header.set_entry_type(tar::EntryType::Directory),
            Kind::Fifo => header.set_entry_type(tar::EntryType::Fifo),
            Kind::Symlink(target) | Kind::Hardlink(target) => {
                header.set_entry_type(if matches!(member.kind, Kind::Symlink(_)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                });
                let _ = header.set_link_name(target);
            }
        }
        let declared = (data.len() as i64 + i64::from(member.size_delta)).max(0) as u64;
        header.set_size(declared);
        header.set_cksum();
        // The data as it is; a lying size shifts the following headers, as in a damaged file.
        let bytes = builder.get_mut();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&data);
        let padding = (512 - data.len() % 512) % 512;
        bytes.extend(std::iter::repeat_n(0u8, padding));
    }
    let tar = builder.into_inner().unwrap_or_default();
    match archive.compression {
        Compression::None => tar,
        Compression::Zstd => zstd::encode_all(&tar[..], 1).unwrap_or_default(),
        Compression::Bzip2 => {
            let mut encoder = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            let _ = encoder.write_all(&tar);
            encoder.finish().unwrap_or_default()
        }
    }
}

fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fuzz_target!(|data: &[u8]| {
    let bytes = match data.strip_prefix(b"\xffS") {
        Some(rest) => match Archive::arbitrary_take_rest(Unstructured::new(rest)) {
            Ok(archive) => write_archive(&archive),
            Err(_) => return,
        },
        None => data.to_vec(),
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let bundle = dir.path().join("bundle.tar");
    std::fs::write(&bundle, &bytes).expect("write bundle");
    let outer = dir.path().join("cache-parent");
    let root = outer.join("models");
    let cache = ModelCache::new(&root);

    let result = import(&cache, &bundle, LIMITS, |_| {});

    assert_eq!(
        names_in(dir.path()),
        ["bundle.tar", "cache-parent"],
        "{result:?}"
    );
    assert_eq!(names_in(&outer), ["models"], "{result:?}");
    for name in names_in(&root) {
        assert!(
            !name.starts_with(STAGING_PREFIX) && !name.starts_with(RETIRED_PREFIX),
            "left behind: {name} ({result:?})"
        );
    }
    match result {
        Ok(models) => {
            assert!(!models.is_empty());
            assert_eq!(
                names_in(&root),
                models,
                "imported models and cache disagree"
            );
            for name in &models {
                let problems = cache.verify(name, Depth::Hashes);
                assert!(problems.is_empty(), "{name}: {problems:?}");
            }
        }
        Err(_) => assert!(names_in(&root).is_empty(), "a failed import left models"),
    }
});
