//! ONNX Runtime: finding the library, loading it once, choosing execution providers, and
//! building sessions that are created once and shared.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::ep::ExecutionProvider;
use ort::session::Session;

use super::cache::ModelCache;
use super::manifest::RUNTIME_DIR;

/// Where the runtime library is looked for, in order, and what was found.
#[derive(Debug, Clone)]
pub struct LibrarySearch {
    pub tried: Vec<PathBuf>,
    pub found: Option<PathBuf>,
}

/// The system-wide location the `.deb` installs the CPU runtime to.
pub const SYSTEM_LIBRARY_DIR: &str = "/usr/lib/opentranscribe";

/// Config, then `ORT_DYLIB_PATH`, then the model cache's `onnxruntime/`, then the system dir.
pub fn find_library(configured: Option<&Path>, models_dir: &Path) -> LibrarySearch {
    let mut tried = Vec::new();
    if let Some(path) = configured {
        tried.push(path.to_path_buf());
    }
    if let Some(env) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        tried.push(PathBuf::from(env));
    }
    let cache = ModelCache::new(models_dir);
    if let Ok(manifest) = cache.model(RUNTIME_DIR).manifest
        && let Some(library) = manifest.parameter_str("library")
    {
        tried.push(models_dir.join(RUNTIME_DIR).join(library));
    }
    tried.push(models_dir.join(RUNTIME_DIR).join("libonnxruntime.so"));
    if let Ok(entries) = std::fs::read_dir(SYSTEM_LIBRARY_DIR) {
        let mut libs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libonnxruntime.so"))
            })
            .collect();
        libs.sort();
        tried.extend(libs.into_iter().rev());
    }
    let found = tried.iter().find(|p| p.is_file()).cloned();
    LibrarySearch { tried, found }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Auto,
    Cpu,
    Cuda,
}

impl Device {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "auto" => Some(Device::Auto),
            "cpu" => Some(Device::Cpu),
            "cuda" => Some(Device::Cuda),
            _ => None,
        }
    }
}

/// The loaded runtime and the provider decision, made once per process.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub library: PathBuf,
    pub build_info: String,
    /// `cuda` or `cpu`.
    pub provider: &'static str,
    /// Why that provider was chosen, for logs and `doctor`.
    pub provider_reason: String,
    pub cuda_available: bool,
    pub gpu_seen: bool,
    pub device_id: i32,
    pub intra_threads: usize,
    /// Whether idle inference threads spin; off by default because spinning threads steal
    /// the CPU from everything else on a small or shared machine.
    pub spin: bool,
    environment: ort::environment::Environment,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "ONNX Runtime library not found (tried: {}); run scripts/fetch-models or import a runtime bundle",
        .0.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NotFound(Vec<PathBuf>),
    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("CUDA was requested but cannot be used: {0}")]
    Cuda(String),
    #[error("cannot create a session for {path}: {reason}")]
    Session { path: String, reason: String },
}

impl RuntimeError {
    pub fn code(&self) -> &'static str {
        match self {
            RuntimeError::NotFound(_) => "runtime-missing",
            RuntimeError::Load { .. } => "runtime-load",
            RuntimeError::Cuda(_) => "runtime-cuda",
            RuntimeError::Session { .. } => "model-load",
        }
    }
}

static RUNTIME: Mutex<Option<Runtime>> = Mutex::new(None);

/// Settings for [`Runtime::get_or_init`].
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    pub library: Option<PathBuf>,
    pub models_dir: PathBuf,
    pub device: Device,
    pub device_id: i32,
    /// 0: one per physical core.
    pub threads: usize,
    pub spin: bool,
}

impl Runtime {
    /// Loads the library on first use; later calls return the same runtime (ONNX Runtime can be
    /// loaded only once per process). A failure is not remembered: a daemon started before its
    /// models were imported loads the runtime on the next attempt after the import.
    pub fn get_or_init(settings: &RuntimeSettings) -> Result<Runtime, RuntimeError> {
        let mut loaded = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(runtime) = loaded.as_ref() {
            return Ok(runtime.clone());
        }
        let runtime = Runtime::load(settings)?;
        *loaded = Some(runtime.clone());
        Ok(runtime)
    }

    /// The runtime if this process has loaded it already; never loads it.
    pub fn loaded() -> Option<Runtime> {
        RUNTIME.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn load(settings: &RuntimeSettings) -> Result<Runtime, RuntimeError> {
        let search = find_library(settings.library.as_deref(), &settings.models_dir);
        let library = search.found.ok_or(RuntimeError::NotFound(search.tried))?;
        let environment = ort::init_from(&library)
            .map_err(|e| RuntimeError::Load {
                path: library.display().to_string(),
                reason: e.to_string(),
            })?
            .with_name("opentranscribe")
            .with_telemetry(false)
            .build()
            .map_err(|e| RuntimeError::Load {
                path: library.display().to_string(),
                reason: e.to_string(),
            })?;
        let gpu_seen = Path::new("/dev/nvidia0").exists() || Path::new("/dev/nvidiactl").exists();
        let cuda_available = <ort::ep::CUDA as ExecutionProvider>::is_available().unwrap_or(false);
        let (provider, provider_reason) = match settings.device {
            Device::Cpu => ("cpu", "device = \"cpu\" in config".to_owned()),
            Device::Cuda if !cuda_available => {
                return Err(RuntimeError::Cuda(format!(
                    "the runtime at {} has no CUDA execution provider",
                    library.display()
                )));
            }
            Device::Cuda => ("cuda", "device = \"cuda\" in config".to_owned()),
            Device::Auto if cuda_available && gpu_seen => (
                "cuda",
                "auto: CUDA provider present and an NVIDIA GPU is visible".to_owned(),
            ),
            Device::Auto if cuda_available => (
                "cpu",
                "auto: CUDA provider present but no NVIDIA GPU device node".to_owned(),
            ),
            Device::Auto => (
                "cpu",
                "auto: this ONNX Runtime build has no CUDA provider".to_owned(),
            ),
        };
        let (provider, provider_reason) = if provider == "cuda" {
            match preload_cuda_libraries(&library) {
                Ok(()) => (provider, provider_reason),
                Err(e) if settings.device == Device::Cuda => return Err(RuntimeError::Cuda(e)),
                Err(e) => {
                    tracing::warn!(error = %e, "CUDA libraries could not be loaded; using the CPU");
                    ("cpu", format!("auto: CUDA libraries failed to load ({e})"))
                }
            }
        } else {
            (provider, provider_reason)
        };
        let intra_threads = if settings.threads == 0 {
            physical_cores()
        } else {
            settings.threads
        };
        let runtime = Runtime {
            library,
            build_info: ort::info().to_owned(),
            provider,
            provider_reason,
            cuda_available,
            gpu_seen,
            device_id: settings.device_id,
            intra_threads,
            spin: settings.spin,
            environment,
        };
        tracing::info!(
            library = %runtime.library.display(),
            provider = runtime.provider,
            reason = %runtime.provider_reason,
            threads = runtime.intra_threads,
            "ONNX Runtime loaded"
        );
        Ok(runtime)
    }

    /// Builds a session on the chosen provider. A CUDA registration failure is an error that
    /// names the cause, never a silent CPU fallback; with `device = "auto"` the caller may retry
    /// on the CPU after logging it.
    pub fn session(&self, model_path: &Path) -> Result<Session, RuntimeError> {
        self.session_with_threads(model_path, self.intra_threads)
    }

    /// As [`Runtime::session`] with a given number of intra-op threads: tiny models run once
    /// per 32 ms window (VAD) lose more to thread hand-offs than they gain.
    pub fn session_with_threads(
        &self,
        model_path: &Path,
        threads: usize,
    ) -> Result<Session, RuntimeError> {
        let fail = |reason: String| RuntimeError::Session {
            path: model_path.display().to_string(),
            reason,
        };
        let mut builder = Session::builder(&self.environment)
            .map_err(|e| fail(e.to_string()))?
            .with_intra_threads(threads.max(1))
            .map_err(|e| fail(e.to_string()))?
            .with_intra_op_spinning(self.spin)
            .map_err(|e| fail(e.to_string()))?
            .with_optimization_level(ort::session::builder::GraphOptimizationLevel::All)
            .map_err(|e| fail(e.to_string()))?;
        if self.provider == "cuda" {
            builder = builder
                .with_execution_providers([ort::ep::CUDA::default()
                    .with_device_id(self.device_id)
                    .build()
                    .error_on_failure()])
                .map_err(|e| RuntimeError::Cuda(e.to_string()))?;
        }
        builder
            .commit_from_file(model_path)
            .map_err(|e| fail(e.to_string()))
    }
}

/// The GPU runtime bundle ships the CUDA and cuDNN libraries beside libonnxruntime; they are
/// loaded explicitly so a missing one is reported by name rather than failing inside the
/// provider. Without them beside the runtime, the system's loader path is relied on.
fn preload_cuda_libraries(library: &Path) -> Result<(), String> {
    let dir = library.parent().unwrap_or(Path::new("."));
    let bundled = dir.join("libcudart.so.13").exists();
    let cudnn = dir.join("libcudnn.so.9").exists();
    if !bundled {
        return Ok(());
    }
    ort::ep::cuda::preload_dylibs(Some(dir), cudnn.then_some(dir)).map_err(|e| e.to_string())
}

/// Physical cores (not hyper-threads): distinct (physical id, core id) pairs in /proc/cpuinfo.
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let Ok(text) = std::fs::read_to_string("/proc/cpuinfo") else {
        return logical;
    };
    let mut cores = std::collections::HashSet::new();
    let mut physical = "0".to_owned();
    for line in text.lines() {
        if let Some((key, value)) = line.split_once(':') {
            match key.trim() {
                "physical id" => physical = value.trim().to_owned(),
                "core id" => {
                    cores.insert((physical.clone(), value.trim().to_owned()));
                }
                _ => {}
            }
        }
    }
    if cores.is_empty() {
        logical
    } else {
        cores.len().min(logical)
    }
}
