//! `opentranscribe status`: what the running daemon reports about itself, and its rendering.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::app::AppState;

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub version: &'static str,
    pub pid: u32,
    pub uptime_secs: u64,
    pub data_dir: String,
    pub listen: String,
    pub ready: bool,
    pub checks: Vec<crate::ops::health::Check>,
    /// Job state (`queued`, `running`, `done`, …) → count.
    pub jobs: BTreeMap<String, u64>,
    pub disk: Disk,
    pub models: Vec<ModelStatus>,
    pub runtime: RuntimeStatus,
}

#[derive(Debug, Serialize)]
pub struct Disk {
    pub free_bytes: Option<u64>,
    pub blob_bytes: u64,
    pub blob_files: u64,
    pub database_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct ModelStatus {
    pub name: String,
    pub kind: String,
    pub size_bytes: u64,
    /// Empty when every file is present with its manifest size.
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RuntimeStatus {
    /// False until a worker first needed it.
    pub loaded: bool,
    pub provider: Option<String>,
    pub reason: Option<String>,
    pub library: Option<String>,
    pub threads: Option<usize>,
}

/// Collects the report; blocking I/O, so it runs on a blocking thread.
pub fn gather(state: &AppState) -> StatusReport {
    use crate::models::cache::{Depth, ModelCache};
    let checks = crate::ops::health::readiness_checks(state);
    let mut jobs = BTreeMap::new();
    match state.store.list_jobs() {
        Ok(list) => {
            for job in list {
                *jobs.entry(job.state.to_string()).or_insert(0) += 1;
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "status: cannot list jobs");
        }
    }
    let (blob_files, blob_bytes) = walk_sizes(state.blobs.root());
    let cache = ModelCache::new(&state.config.models_dir);
    let models = cache
        .list()
        .into_iter()
        .map(|model| match &model.manifest {
            Ok(manifest) => ModelStatus {
                name: model.name.clone(),
                kind: manifest.kind.as_str().to_owned(),
                size_bytes: manifest.total_size(),
                problems: cache.verify(&model.name, Depth::Sizes),
            },
            Err(e) => ModelStatus {
                name: model.name.clone(),
                kind: "unknown".to_owned(),
                size_bytes: 0,
                problems: vec![e.clone()],
            },
        })
        .collect();
    let runtime = match crate::models::runtime::Runtime::loaded() {
        Some(runtime) => RuntimeStatus {
            loaded: true,
            provider: Some(runtime.provider.to_owned()),
            reason: Some(runtime.provider_reason.clone()),
            library: Some(runtime.library.display().to_string()),
            threads: Some(runtime.intra_threads),
        },
        None => RuntimeStatus {
            loaded: false,
            provider: None,
            reason: None,
            library: crate::models::runtime::find_library(
                state.config.runtime.library.as_deref(),
                &state.config.models_dir,
            )
            .found
            .map(|p| p.display().to_string()),
            threads: None,
        },
    };
    StatusReport {
        version: env!("CARGO_PKG_VERSION"),
        pid: std::process::id(),
        uptime_secs: state.started_at.elapsed().as_secs(),
        data_dir: state.config.data_dir.display().to_string(),
        listen: state.config.server.listen.to_string(),
        ready: checks.iter().all(|c| c.ok),
        checks,
        jobs,
        disk: Disk {
            free_bytes: crate::fsutil::free_disk_bytes(&state.config.data_dir),
            blob_bytes,
            blob_files,
            database_bytes: std::fs::metadata(state.config.db_path())
                .map(|m| m.len())
                .unwrap_or(0),
        },
        models,
        runtime,
    }
}

fn walk_sizes(dir: &std::path::Path) -> (u64, u64) {
    let mut files = 0;
    let mut bytes = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => stack.push(entry.path()),
                Ok(kind) if kind.is_file() => {
                    files += 1;
                    bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
                }
                _ => {}
            }
        }
    }
    (files, bytes)
}

/// Human-readable rendering of a status answer (the JSON the daemon sent).
pub fn render(status: &Value) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let uptime = status["uptime_secs"].as_u64().unwrap_or(0);
    let _ = writeln!(
        out,
        "opentranscribe {} (pid {})",
        text(&status["version"]),
        text(&status["pid"])
    );
    let _ = writeln!(
        out,
        "uptime:    {}d {:02}h {:02}m {:02}s",
        uptime / 86400,
        uptime / 3600 % 24,
        uptime / 60 % 60,
        uptime % 60
    );
    let _ = writeln!(out, "listen:    {}", text(&status["listen"]));
    let _ = writeln!(out, "data dir:  {}", text(&status["data_dir"]));
    let ready = status["ready"].as_bool().unwrap_or(false);
    let _ = writeln!(out, "ready:     {}", if ready { "yes" } else { "NO" });
    for check in status["checks"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  {:<18} {:<4} {}",
            text(&check["name"]),
            if check["ok"].as_bool() == Some(true) {
                "ok"
            } else {
                "FAIL"
            },
            text(&check["detail"])
        );
    }
    let jobs: Vec<String> = status["jobs"]
        .as_object()
        .map(|map| map.iter().map(|(k, v)| format!("{k} {v}")).collect())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "jobs:      {}",
        if jobs.is_empty() {
            "none".to_owned()
        } else {
            jobs.join(", ")
        }
    );
    let disk = &status["disk"];
    let mib = |v: &Value| {
        v.as_u64()
            .map(|b| format!("{} MiB", b / (1024 * 1024)))
            .unwrap_or("-".to_owned())
    };
    let _ = writeln!(
        out,
        "disk:      {} free; media {} in {} files; database {}",
        mib(&disk["free_bytes"]),
        mib(&disk["blob_bytes"]),
        text(&disk["blob_files"]),
        mib(&disk["database_bytes"])
    );
    let runtime = &status["runtime"];
    if runtime["loaded"].as_bool() == Some(true) {
        let _ = writeln!(
            out,
            "provider:  {} ({}), {} threads, {}",
            text(&runtime["provider"]),
            text(&runtime["reason"]),
            text(&runtime["threads"]),
            text(&runtime["library"])
        );
    } else {
        let _ = writeln!(
            out,
            "provider:  not loaded yet (no job has run); library {}",
            text(&runtime["library"])
        );
    }
    let models = status["models"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(
        out,
        "models:    {}",
        if models.is_empty() {
            "none imported"
        } else {
            ""
        }
    );
    for model in &models {
        let problems: Vec<String> = model["problems"]
            .as_array()
            .map(|p| p.iter().map(text).collect())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<28} {:<18} {:>6} MiB {}",
            text(&model["name"]),
            text(&model["kind"]),
            model["size_bytes"].as_u64().unwrap_or(0) / (1024 * 1024),
            if problems.is_empty() {
                "ok".to_owned()
            } else {
                problems.join("; ")
            }
        );
    }
    out
}
