//! Readiness checks (database, blob directory writable, free disk, runtime and models), shared
//! by `/api/ready`, `opentranscribe status` and the job workers' disk check.

use serde::Serialize;

use crate::app::AppState;
use crate::fsutil::free_disk_bytes;

#[derive(Debug, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// Runs every readiness check; blocking I/O, so call it from a blocking thread.
pub fn readiness_checks(state: &AppState) -> Vec<Check> {
    let database = match state.store.check() {
        Ok(()) => Check {
            name: "database",
            ok: true,
            detail: "ok".to_owned(),
        },
        Err(e) => Check {
            name: "database",
            ok: false,
            detail: e.to_string(),
        },
    };
    let probe_path = state
        .blobs
        .root()
        .join(format!(".ready-{}", uuid::Uuid::now_v7()));
    let writable =
        std::fs::write(&probe_path, b"ok").and_then(|()| std::fs::remove_file(&probe_path));
    let blob_dir = Check {
        name: "blob_dir_writable",
        ok: writable.is_ok(),
        detail: match writable {
            Ok(()) => state.blobs.root().display().to_string(),
            Err(e) => format!("{}: {e}", state.blobs.root().display()),
        },
    };
    let floor_mb = state.config.storage.min_free_disk_mb;
    let disk = match free_disk_bytes(&state.config.data_dir) {
        Some(free) => Check {
            name: "disk_free",
            ok: free / (1024 * 1024) >= floor_mb,
            detail: format!("{} MiB free, floor {floor_mb} MiB", free / (1024 * 1024)),
        },
        None => Check {
            name: "disk_free",
            ok: false,
            detail: "cannot read free space".to_owned(),
        },
    };
    vec![database, blob_dir, disk, models_check(&state.config)]
}

/// The runtime library and every required model are present with the manifest's sizes.
fn models_check(config: &crate::config::Config) -> Check {
    use crate::models::cache::{Depth, ModelCache};
    use crate::models::manifest::REQUIRED_MODELS;
    let mut problems = Vec::new();
    let search =
        crate::models::runtime::find_library(config.runtime.library.as_deref(), &config.models_dir);
    if search.found.is_none() {
        problems.push("ONNX Runtime library not found".to_owned());
    }
    let cache = ModelCache::new(&config.models_dir);
    // A runtime found outside the cache (the package's /usr/lib/opentranscribe) needs no
    // runtime in the cache.
    let runtime_in_cache = search.found.as_ref().is_none_or(|p| {
        p.starts_with(config.models_dir.join(crate::models::manifest::RUNTIME_DIR))
    });
    for name in REQUIRED_MODELS
        .iter()
        .filter(|n| **n != crate::models::manifest::RUNTIME_DIR || runtime_in_cache)
    {
        if !cache.verify(name, Depth::Sizes).is_empty() {
            problems.push(format!("{name} missing or damaged"));
        }
    }
    Check {
        name: "models",
        ok: problems.is_empty(),
        detail: if problems.is_empty() {
            format!(
                "all required models present in {}",
                config.models_dir.display()
            )
        } else {
            format!(
                "{} in {} (import a bundle with `opentranscribe models import`)",
                problems.join(", "),
                config.models_dir.display()
            )
        },
    }
}
