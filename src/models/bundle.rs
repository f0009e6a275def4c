//! Model bundles: tar or tar.zst archives of model directories, for air-gapped sites.
//! Import is verified before anything becomes visible and refuses unsafe archive members.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::cache::{Depth, ModelCache, STAGING_PREFIX, verify_dir};
use super::manifest::{MANIFEST_FILE, Manifest, is_safe_name};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("bundle member `{member}` is refused: {reason}")]
    UnsafeMember { member: String, reason: String },
    #[error("bundle is invalid: {0}")]
    Invalid(String),
    #[error("bundle failed verification:\n  {}", .0.join("\n  "))]
    Verification(Vec<String>),
    #[error("{0}")]
    Export(String),
}

impl BundleError {
    pub fn code(&self) -> &'static str {
        match self {
            BundleError::Io { .. } => "bundle-io",
            BundleError::UnsafeMember { .. } => "bundle-unsafe",
            BundleError::Invalid(_) => "bundle-invalid",
            BundleError::Verification(_) => "bundle-corrupt",
            BundleError::Export(_) => "bundle-export",
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Bounds on what an archive may unpack to, against decompression bombs.
#[derive(Debug, Clone, Copy)]
pub struct ImportLimits {
    pub max_member_bytes: u64,
    pub max_total_bytes: u64,
    pub max_members: usize,
}

impl Default for ImportLimits {
    fn default() -> Self {
        Self {
            max_member_bytes: 16 * 1024 * 1024 * 1024,
            max_total_bytes: 64 * 1024 * 1024 * 1024,
            max_members: 10_000,
        }
    }
}

/// Counts bytes read from the bundle file, for a progress bar.
struct Counting<R, F: FnMut(u64)> {
    inner: R,
    read: u64,
    progress: F,
}

impl<R: Read, F: FnMut(u64)> Read for Counting<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        (self.progress)(self.read);
        Ok(n)
    }
}

/// Removes the staging directory unless the import finished.
struct StagingGuard {
    dir: PathBuf,
}

impl Drop for StagingGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Imports every model directory in `bundle` into the cache. `progress` gets the number of
/// bundle bytes read so far. Returns the imported model names.
pub fn import(
    cache: &ModelCache,
    bundle: &Path,
    limits: ImportLimits,
    progress: impl FnMut(u64),
) -> Result<Vec<String>, BundleError> {
    std::fs::create_dir_all(cache.root()).map_err(io_err(cache.root()))?;
    cache.clean_leftovers().map_err(io_err(cache.root()))?;
    let staging = cache
        .root()
        .join(format!("{STAGING_PREFIX}{}", uuid::Uuid::now_v7()));
    std::fs::create_dir(&staging).map_err(io_err(&staging))?;
    let guard = StagingGuard {
        dir: staging.clone(),
    };

    let mut file = File::open(bundle).map_err(io_err(bundle))?;
    let mut magic = [0u8; 4];
    let got = file.read(&mut magic).map_err(io_err(bundle))?;
    drop(file);
    let file = File::open(bundle).map_err(io_err(bundle))?;
    let counting = Counting {
        inner: BufReader::new(file),
        read: 0,
        progress,
    };
    if got == 4 && magic == ZSTD_MAGIC {
        let decoder = zstd::stream::read::Decoder::new(counting).map_err(io_err(bundle))?;
        unpack(decoder, &staging, limits, bundle)?;
    } else if got >= 3 && &magic[..3] == b"BZh" {
        // sherpa-onnx publishes its models as .tar.bz2.
        unpack(
            bzip2::read::MultiBzDecoder::new(counting),
            &staging,
            limits,
            bundle,
        )?;
    } else {
        unpack(counting, &staging, limits, bundle)?;
    }

    adapt_foreign_layouts(&staging)?;
    let models = check_staged(&staging)?;
    for name in &models {
        install(cache, &staging.join(name), name)?;
    }
    drop(guard);
    Ok(models)
}

fn unpack(
    reader: impl Read,
    staging: &Path,
    limits: ImportLimits,
    bundle: &Path,
) -> Result<(), BundleError> {
    let mut archive = tar::Archive::new(reader);
    let mut members = 0usize;
    let mut total: u64 = 0;
    let entries = archive.entries().map_err(io_err(bundle))?;
    for entry in entries {
        let mut entry = entry.map_err(io_err(bundle))?;
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let refuse = |reason: &str| BundleError::UnsafeMember {
            member: raw_path.clone(),
            reason: reason.to_owned(),
        };
        members += 1;
        if members > limits.max_members {
            return Err(refuse("too many members in the bundle"));
        }
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        }
        if raw_path.starts_with('/') {
            return Err(refuse("absolute paths are not allowed"));
        }
        let trimmed = raw_path.trim_start_matches("./");
        let components: Vec<&str> = trimmed.split('/').filter(|c| !c.is_empty()).collect();
        if components.iter().any(|c| *c == ".." || *c == ".") {
            return Err(refuse("`..` in paths is not allowed"));
        }
        if components.is_empty() {
            continue;
        }
        if let Some(bad) = components.iter().find(|c| !is_safe_name(c)) {
            return Err(refuse(&format!("unsafe path component `{bad}`")));
        }
        let target = components
            .iter()
            .fold(staging.to_path_buf(), |path, c| path.join(c));
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(io_err(&target))?;
            continue;
        }
        if !(kind.is_file() || kind == tar::EntryType::Continuous) {
            return Err(refuse(
                "only regular files and directories are allowed (no links or device files)",
            ));
        }
        let size = entry.header().size().map_err(io_err(bundle))?;
        if size > limits.max_member_bytes {
            return Err(refuse(&format!(
                "{size} bytes is over the member limit of {}",
                limits.max_member_bytes
            )));
        }
        total += size;
        if total > limits.max_total_bytes {
            return Err(refuse("the bundle unpacks to more than the total limit"));
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    refuse("the member appears twice")
                } else {
                    BundleError::Io {
                        path: target.display().to_string(),
                        source: e,
                    }
                }
            })?;
        // Never trust the header's size: copy at most one byte more than it claims.
        let copied =
            std::io::copy(&mut (&mut entry).take(size + 1), &mut out).map_err(io_err(&target))?;
        if copied != size {
            return Err(refuse("member data does not match its header size"));
        }
        out.sync_all().map_err(io_err(&target))?;
    }
    Ok(())
}

/// Directories without a manifest may be sherpa-onnx archives; those become model directories.
fn adapt_foreign_layouts(staging: &Path) -> Result<(), BundleError> {
    let dirs: Vec<PathBuf> = std::fs::read_dir(staging)
        .map_err(io_err(staging))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir() && !p.join(MANIFEST_FILE).exists())
        .collect();
    for dir in dirs {
        match super::sherpa::adapt(&dir) {
            Ok(Some(name)) => tracing::info!(model = %name, "adapted a sherpa-onnx archive"),
            Ok(None) => {}
            Err(e) => return Err(BundleError::Invalid(e)),
        }
    }
    Ok(())
}

/// Every top-level entry must be a model directory whose manifest verifies and lists
/// exactly the files present.
fn check_staged(staging: &Path) -> Result<Vec<String>, BundleError> {
    let mut models = Vec::new();
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(staging).map_err(io_err(staging))? {
        let entry = entry.map_err(io_err(staging))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !path.is_dir() {
            return Err(BundleError::Invalid(format!(
                "top-level file `{name}`: a bundle holds model directories only"
            )));
        }
        let manifest = match Manifest::read(&path) {
            Ok(m) => m,
            Err(e) => {
                problems.push(format!("{name}: {e}"));
                continue;
            }
        };
        if manifest.name != name {
            problems.push(format!(
                "{name}: manifest names the model `{}`",
                manifest.name
            ));
            continue;
        }
        let mut listed: Vec<String> = manifest.files.iter().map(|f| f.path.clone()).collect();
        listed.push(MANIFEST_FILE.to_owned());
        for present in relative_files(&path) {
            if !listed.contains(&present) {
                problems.push(format!("{name}/{present}: not listed in the manifest"));
            }
        }
        let mut file_problems = verify_dir(&path, &manifest, Depth::Hashes);
        problems.append(&mut file_problems);
        models.push(name);
    }
    if !problems.is_empty() {
        return Err(BundleError::Verification(problems));
    }
    if models.is_empty() {
        return Err(BundleError::Invalid("the bundle holds no model".to_owned()));
    }
    models.sort();
    Ok(models)
}

fn relative_files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((path, prefix)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            if entry.path().is_dir() {
                stack.push((entry.path(), relative));
            } else {
                out.push(relative);
            }
        }
    }
    out
}

/// Swaps a verified staged model into place: the old directory is renamed aside first, so
/// readers see either the old or the new model, never a mix.
fn install(cache: &ModelCache, staged: &Path, name: &str) -> Result<(), BundleError> {
    let target = cache.root().join(name);
    let retired = cache.root().join(format!(
        "{}{name}-{}",
        super::cache::RETIRED_PREFIX,
        uuid::Uuid::now_v7()
    ));
    let had_old = target.exists();
    if had_old {
        std::fs::rename(&target, &retired).map_err(io_err(&target))?;
    }
    if let Err(e) = std::fs::rename(staged, &target) {
        if had_old {
            let _ = std::fs::rename(&retired, &target);
        }
        return Err(BundleError::Io {
            path: target.display().to_string(),
            source: e,
        });
    }
    if let Ok(dir) = File::open(cache.root()) {
        let _ = dir.sync_all();
    }
    if had_old {
        let _ = std::fs::remove_dir_all(&retired);
    }
    Ok(())
}

/// Writes the named models into a tar.zst bundle (temp file, then rename).
pub fn export(
    cache: &ModelCache,
    names: &[String],
    out: &Path,
    mut progress: impl FnMut(u64),
) -> Result<u64, BundleError> {
    let mut models = Vec::new();
    for name in names {
        let model = cache.model(name);
        let manifest = model.manifest.map_err(BundleError::Export)?;
        let problems = verify_dir(&model.dir, &manifest, Depth::Sizes);
        if !problems.is_empty() {
            return Err(BundleError::Verification(problems));
        }
        models.push((model.dir, manifest));
    }
    let temp = out.with_extension("partial");
    let file = File::create(&temp).map_err(io_err(&temp))?;
    let encoder = zstd::stream::write::Encoder::new(file, 3).map_err(io_err(&temp))?;
    let mut builder = tar::Builder::new(encoder);
    let mut written: u64 = 0;
    for (dir, manifest) in &models {
        let mut paths: Vec<String> = manifest.files.iter().map(|f| f.path.clone()).collect();
        paths.push(MANIFEST_FILE.to_owned());
        for relative in paths {
            let source = dir.join(&relative);
            let mut file = File::open(&source).map_err(io_err(&source))?;
            let size = file.metadata().map_err(io_err(&source))?.len();
            let mut header = tar::Header::new_gnu();
            header.set_size(size);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_entry_type(tar::EntryType::Regular);
            let member = format!("{}/{relative}", manifest.name);
            builder
                .append_data(&mut header, &member, &mut file)
                .map_err(io_err(&source))?;
            written += size;
            progress(written);
        }
    }
    let encoder = builder.into_inner().map_err(io_err(&temp))?;
    let mut file = encoder.finish().map_err(io_err(&temp))?;
    file.flush().map_err(io_err(&temp))?;
    file.sync_all().map_err(io_err(&temp))?;
    std::fs::rename(&temp, out).map_err(io_err(out))?;
    Ok(written)
}
