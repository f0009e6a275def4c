//! `opentranscribe models …` and `opentranscribe doctor`: terminal output for the model cache.

use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};

use super::bundle::{self, ImportLimits};
use super::cache::{Depth, ModelCache};
use super::manifest::{DEFAULT_MODELS, REQUIRED_MODELS};
use super::runtime::{Runtime, find_library};
use crate::cli::ModelsCommand;
use crate::config::Config;

pub fn human_size(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < units.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

fn bar(total: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_owned());
    bar
}

pub fn run(config: &Config, command: ModelsCommand) -> anyhow::Result<()> {
    let cache = ModelCache::new(&config.models_dir);
    match command {
        ModelsCommand::List => {
            let models = cache.list();
            if models.is_empty() {
                println!(
                    "no models in {} (run scripts/fetch-models or `opentranscribe models import BUNDLE`)",
                    cache.root().display()
                );
                return Ok(());
            }
            println!("{:<28} {:<18} {:>10}  VERIFIED", "NAME", "KIND", "SIZE");
            for model in models {
                match &model.manifest {
                    Ok(manifest) => {
                        let problems = cache.verify(&model.name, Depth::Sizes);
                        let verified = if problems.is_empty() {
                            "sizes ok"
                        } else {
                            "FAILED"
                        };
                        println!(
                            "{:<28} {:<18} {:>10}  {verified}",
                            model.name,
                            manifest.kind.as_str(),
                            human_size(manifest.total_size())
                        );
                    }
                    Err(e) => println!("{:<28} {:<18} {:>10}  FAILED: {e}", model.name, "?", "?"),
                }
            }
            Ok(())
        }
        ModelsCommand::Verify { name } => {
            let names: Vec<String> = match name {
                Some(name) => vec![name],
                None => cache.list().into_iter().map(|m| m.name).collect(),
            };
            if names.is_empty() {
                bail!("no models in {}", cache.root().display());
            }
            let mut failed = Vec::new();
            for name in names {
                let started = Instant::now();
                let problems = cache.verify(&name, Depth::Hashes);
                if problems.is_empty() {
                    println!("{name}: ok ({:.1} s)", started.elapsed().as_secs_f64());
                } else {
                    for problem in &problems {
                        println!("{name}: {problem}");
                    }
                    failed.push(format!("{name} ({})", problems.join("; ")));
                }
            }
            if !failed.is_empty() {
                bail!("verification failed: {}", failed.join(", "));
            }
            Ok(())
        }
        ModelsCommand::Import { bundle } => {
            let total = std::fs::metadata(&bundle)
                .with_context(|| format!("cannot read {}", bundle.display()))?
                .len();
            let progress = bar(total, "importing");
            let started = Instant::now();
            let imported = bundle::import(&cache, &bundle, ImportLimits::default(), |read| {
                progress.set_position(read)
            });
            progress.finish_and_clear();
            let imported = imported?;
            println!(
                "imported {} into {} in {:.1} s",
                imported.join(", "),
                cache.root().display(),
                started.elapsed().as_secs_f64()
            );
            Ok(())
        }
        ModelsCommand::Export { names, output } => {
            let total: u64 = names
                .iter()
                .filter_map(|n| cache.model(n).manifest.ok())
                .map(|m| m.total_size())
                .sum();
            let progress = bar(total, "exporting");
            let written = bundle::export(&cache, &names, &output, |n| progress.set_position(n));
            progress.finish_and_clear();
            let written = written?;
            println!(
                "wrote {} ({} of models) to {}",
                names.join(", "),
                human_size(written),
                output.display()
            );
            Ok(())
        }
        ModelsCommand::Remove { name } => {
            if cache
                .remove(&name)
                .with_context(|| format!("cannot remove {name}"))?
            {
                println!("removed {name}");
                Ok(())
            } else {
                bail!("model `{name}` is not in {}", cache.root().display())
            }
        }
    }
}

/// Prints what works and what does not; an error return means the daemon could not do its job.
pub fn doctor(config: anyhow::Result<Config>) -> anyhow::Result<()> {
    let mut fatal = Vec::new();
    let config = match config {
        Ok(config) => {
            println!("config: ok");
            config
        }
        Err(e) => {
            println!("config: {e}");
            fatal.push("config".to_owned());
            Config::default()
        }
    };
    let search = find_library(config.runtime.library.as_deref(), &config.models_dir);
    match &search.found {
        Some(path) => println!("runtime library: {}", path.display()),
        None => {
            println!(
                "runtime library: NOT FOUND (tried {})",
                search
                    .tried
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            fatal.push("runtime".to_owned());
        }
    }
    if search.found.is_some() {
        match Runtime::get_or_init(&config.runtime_settings()) {
            Ok(runtime) => {
                println!("runtime build: {}", runtime.build_info.trim());
                println!(
                    "providers: cpu, cuda {}",
                    if runtime.cuda_available {
                        "available"
                    } else {
                        "not in this build"
                    }
                );
                println!(
                    "provider chosen: {} ({}), {} threads",
                    runtime.provider, runtime.provider_reason, runtime.intra_threads
                );
                println!(
                    "gpu: {}",
                    if runtime.gpu_seen {
                        "NVIDIA device node present"
                    } else {
                        "none seen"
                    }
                );
            }
            Err(e) => {
                println!("runtime: {e}");
                fatal.push("runtime".to_owned());
            }
        }
    }
    let cache = ModelCache::new(&config.models_dir);
    println!("models dir: {}", cache.root().display());
    for (name, kind) in DEFAULT_MODELS {
        let problems = cache.verify(name, Depth::Hashes);
        // A runtime found outside the cache (the package's /usr/lib/opentranscribe) is enough.
        let runtime_elsewhere = *name == crate::models::manifest::RUNTIME_DIR
            && search
                .found
                .as_ref()
                .is_some_and(|p| !p.starts_with(cache.root().join(name)));
        let required = REQUIRED_MODELS.contains(name) && !runtime_elsewhere;
        if problems.is_empty() {
            println!("  {name:<28} {:<18} ok", kind.as_str());
        } else {
            println!(
                "  {name:<28} {:<18} {}: {}",
                kind.as_str(),
                if required { "MISSING/BAD" } else { "absent" },
                problems.join("; ")
            );
            if required {
                fatal.push(name.to_string());
            }
        }
    }
    let floor = config.storage.min_free_disk_mb;
    let probe_dir = if config.data_dir.exists() {
        config.data_dir.clone()
    } else {
        std::path::PathBuf::from("/")
    };
    match crate::fsutil::free_disk_bytes(&probe_dir) {
        Some(free) => {
            let free_mb = free / (1024 * 1024);
            println!(
                "free disk ({}): {free_mb} MiB, floor {floor} MiB",
                probe_dir.display()
            );
            if free_mb < floor {
                fatal.push("disk".to_owned());
            }
        }
        None => println!("free disk: unknown"),
    }
    llm_doctor(&config, &mut fatal);
    directory_doctor(&config, &mut fatal);
    if fatal.is_empty() {
        println!("doctor: all checks passed");
        Ok(())
    } else {
        bail!("doctor found problems: {}", fatal.join(", "))
    }
}

/// The language model (`[llm]`): off is fine; on, the key file must be usable (the daemon
/// would refuse to start) and the server is asked for its models (unreachable is reported,
/// not fatal: transcription works without it).
fn llm_doctor(config: &Config, fatal: &mut Vec<String>) {
    // The HTTP client needs the process's TLS provider (the daemon installs it at start).
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let llm = match crate::llm::Llm::from_config(&config.llm) {
        Ok(None) => {
            println!("llm: not configured (summaries and questions are off)");
            return;
        }
        Ok(Some(llm)) => llm,
        Err(e) => {
            println!("llm: {e}");
            fatal.push("llm".to_owned());
            return;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            println!("llm: cannot check ({e})");
            return;
        }
    };
    let status = runtime.block_on(llm.status());
    println!(
        "llm: {} model {} at {}: {}",
        if status.reachable {
            "ok,"
        } else {
            "UNREACHABLE,"
        },
        config.llm.model,
        config.llm.base_url,
        status.detail
    );
}

/// Sign-in directories (`[ldap]`, `[oidc]`): off is fine; on, the directory must answer (LDAP:
/// connection with its TLS and the service account's bind; OIDC: discovery, JWKS and the client
/// secret file), or its users cannot sign in.
fn directory_doctor(config: &Config, fatal: &mut Vec<String>) {
    if !config.ldap.enabled && !config.oidc.enabled {
        println!("directory sign-in: not configured (local accounts only)");
        return;
    }
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            println!("directory sign-in: cannot check ({e})");
            return;
        }
    };
    if config.ldap.enabled {
        match runtime.block_on(crate::services::ldap::check(&config.ldap)) {
            Ok(said) => println!("ldap: ok, {said}"),
            Err(e) => {
                println!("ldap: FAILED, {}", e.message);
                fatal.push("ldap".to_owned());
            }
        }
    }
    if config.oidc.enabled {
        match runtime.block_on(crate::services::oidc::check(&config.oidc)) {
            Ok(said) => println!("oidc: ok, {said}"),
            Err(e) => {
                println!("oidc: FAILED, {}", e.message);
                fatal.push("oidc".to_owned());
            }
        }
    }
}
