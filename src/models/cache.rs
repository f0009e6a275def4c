//! The model cache on disk: one directory per model, each with a manifest; listing,
//! verification by size or by SHA-256, removal.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::manifest::{MANIFEST_FILE, Manifest, ModelKind, is_safe_name};

/// Prefix of staging directories used by imports; leftovers are removed on open.
pub const STAGING_PREFIX: &str = ".import-";
pub const RETIRED_PREFIX: &str = ".old-";

#[derive(Debug, Clone)]
pub struct ModelCache {
    root: PathBuf,
}

/// One directory in the cache, read or failed to read.
#[derive(Debug)]
pub struct CachedModel {
    pub name: String,
    pub dir: PathBuf,
    pub manifest: Result<Manifest, String>,
}

/// How thoroughly to check files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Existence and size: cheap enough for every readiness probe.
    Sizes,
    /// Re-hash every byte.
    Hashes,
}

impl ModelCache {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes staging and retired directories left by an interrupted import.
    pub fn clean_leftovers(&self) -> std::io::Result<usize> {
        let mut removed = 0;
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Ok(0);
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(STAGING_PREFIX) || name.starts_with(RETIRED_PREFIX) {
                std::fs::remove_dir_all(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    pub fn list(&self) -> Vec<CachedModel> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return out;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_safe_name(&name) || !entry.path().is_dir() {
                continue;
            }
            out.push(self.model(&name));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Names of the speech-recognition models whose manifests read, in name order: what a
    /// file may ask for.
    pub fn asr_models(&self) -> Vec<String> {
        self.list()
            .into_iter()
            .filter(|m| m.manifest.as_ref().is_ok_and(|m| m.kind == ModelKind::Asr))
            .map(|m| m.name)
            .collect()
    }

    /// Checks that `name` is a speech-recognition model here that can do what is asked
    /// (translation needs a multilingual model); the error is a sentence for the user.
    pub fn check_asr_model(&self, name: &str, translate: bool) -> Result<(), String> {
        let available = || {
            let names = self.asr_models();
            if names.is_empty() {
                "no speech-recognition model is installed".to_owned()
            } else {
                format!("installed: {}", names.join(", "))
            }
        };
        let manifest = match self.model(name).manifest {
            Ok(m) if m.kind == ModelKind::Asr => m,
            _ => return Err(format!("unknown model `{name}` ({})", available())),
        };
        if translate && manifest.parameters["multilingual"].as_bool() != Some(true) {
            return Err(format!(
                "model `{name}` is English-only and cannot translate; choose a multilingual model"
            ));
        }
        Ok(())
    }

    pub fn model(&self, name: &str) -> CachedModel {
        let dir = self.root.join(name);
        let manifest = if !is_safe_name(name) {
            Err(format!("invalid model name `{name}`"))
        } else if !dir.join(MANIFEST_FILE).exists() {
            Err(format!("model `{name}` is not in {}", self.root.display()))
        } else {
            Manifest::read(&dir)
                .map_err(|e| e.to_string())
                .and_then(|m| {
                    if m.name == name {
                        Ok(m)
                    } else {
                        Err(format!(
                            "{}: manifest names `{}`, directory is `{name}`",
                            dir.display(),
                            m.name
                        ))
                    }
                })
        };
        CachedModel {
            name: name.to_owned(),
            dir,
            manifest,
        }
    }

    /// Checks a model's files against its manifest. Returns one line per problem, naming the file.
    pub fn verify(&self, name: &str, depth: Depth) -> Vec<String> {
        let model = self.model(name);
        match &model.manifest {
            Err(e) => vec![e.clone()],
            Ok(manifest) => verify_dir(&model.dir, manifest, depth),
        }
    }

    /// Removes a model directory; the rename first makes the removal atomic for readers.
    pub fn remove(&self, name: &str) -> std::io::Result<bool> {
        if !is_safe_name(name) {
            return Ok(false);
        }
        let dir = self.root.join(name);
        if !dir.is_dir() {
            return Ok(false);
        }
        let retired = self
            .root
            .join(format!("{RETIRED_PREFIX}{name}-{}", uuid::Uuid::now_v7()));
        std::fs::rename(&dir, &retired)?;
        std::fs::remove_dir_all(&retired)?;
        Ok(true)
    }
}

/// Checks every manifest file in `dir`; extra files not in the manifest are problems too.
pub fn verify_dir(dir: &Path, manifest: &Manifest, depth: Depth) -> Vec<String> {
    let mut problems = Vec::new();
    for file in &manifest.files {
        let path = dir.join(&file.path);
        match std::fs::symlink_metadata(&path) {
            Err(_) => problems.push(format!("{}: missing", path.display())),
            Ok(meta) if !meta.file_type().is_file() => {
                problems.push(format!("{}: not a regular file", path.display()));
            }
            Ok(meta) if meta.len() != file.size => problems.push(format!(
                "{}: size {} differs from the manifest's {}",
                path.display(),
                meta.len(),
                file.size
            )),
            Ok(_) => {
                if depth == Depth::Hashes {
                    match sha256_file(&path) {
                        Ok(hash) if hash == file.sha256.to_lowercase() => {}
                        Ok(hash) => problems.push(format!(
                            "{}: sha256 {hash} differs from the manifest's {}",
                            path.display(),
                            file.sha256
                        )),
                        Err(e) => problems.push(format!("{}: {e}", path.display())),
                    }
                }
            }
        }
    }
    problems
}

pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1024 * 1024];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}
