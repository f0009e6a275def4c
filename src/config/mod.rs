//! Configuration: defaults, then the TOML file, then `OPENTRANSCRIBE_…` environment, then flags.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Prefix of every environment variable that overrides a config key,
/// e.g. `OPENTRANSCRIBE_SERVER_LISTEN` for `server.listen`.
pub const ENV_PREFIX: &str = "OPENTRANSCRIBE_";

/// Environment variables with the prefix that are not config keys.
const ENV_NOT_KEYS: &[&str] = &["OPENTRANSCRIBE_CONFIG", "OPENTRANSCRIBE_LOG"];

/// Keys that have no default value and so are absent from a serialised default config.
const OPTIONAL_KEYS: &[&str] = &["server.tls_cert", "server.tls_key", "runtime.library"];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub data_dir: PathBuf,
    pub models_dir: PathBuf,
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub storage: StorageConfig,
    pub runtime: RuntimeConfig,
    pub jobs: JobsConfig,
    pub speakers: SpeakersConfig,
    pub watch: WatchConfig,
    pub metrics: MetricsConfig,
    pub audit: AuditConfig,
    pub retention: RetentionConfig,
    pub notify: NotifyConfig,
    pub uploads: UploadsConfig,
    pub llm: LlmConfig,
    pub ldap: LdapConfig,
    pub oidc: OidcConfig,
    pub log: LogConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// `off` or an address whose only job is to redirect to HTTPS.
    pub http_listen: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    pub max_upload_bytes: u64,
    pub shutdown_grace_secs: u64,
    /// Time allowed to receive request headers, so slow clients cannot hold connections.
    pub header_timeout_secs: u64,
    /// Time allowed to receive a whole request body once the headers are in (uploads have their
    /// own idle timeout instead), so a client dribbling a body cannot hold a connection.
    pub body_timeout_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `closed` (only the first user may register) or `open`.
    pub registration: String,
    pub session_idle_timeout_secs: u64,
    pub session_absolute_timeout_secs: u64,
    pub login_max_failures: u32,
    pub login_ip_max_failures: u32,
    pub login_lockout_secs: u64,
    pub min_password_length: usize,
    /// Password hashes (argon2id, 19 MiB each) computed at once; 0 means one per core.
    pub password_hash_concurrency: usize,
    /// Local accounts must set up a TOTP second factor before they get a full session
    /// (directory accounts are left to their directory).
    pub require_totp: bool,
    /// The issuer name authenticator apps show next to the account.
    pub totp_issuer: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub encrypt_at_rest: bool,
    pub min_free_disk_mb: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// `auto`, `cpu` or `cuda`.
    pub device: String,
    pub device_id: i32,
    /// Inference threads; 0 means one per physical core.
    pub threads: usize,
    /// Let idle inference threads spin (lower latency on a dedicated machine).
    pub spin: bool,
    /// Path of `libonnxruntime.so`; without it, `ORT_DYLIB_PATH`, the model cache and
    /// /usr/lib/opentranscribe are searched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub library: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            device: "auto".to_owned(),
            device_id: 0,
            threads: 0,
            spin: false,
            library: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Transcription workers; each holds its own models. 0 disables processing.
    pub workers: usize,
    /// The ASR model uploads are transcribed with.
    pub model: String,
    /// Use the int8-quantized Whisper model.
    pub int8: bool,
    /// Beam size for uploads; 1 decodes greedily (faster), 5 is Whisper's default.
    pub beam_size: usize,
    /// Windows transcribed together (the throughput mode: one encoder and one batched greedy
    /// decoder call for several independent 30 s windows). 0 chooses: 8 with CUDA, 1 on the
    /// CPU; 1 keeps Whisper's sequential windows, each conditioned on the text before it.
    pub batch_windows: usize,
    /// A job whose worker has not reported for this long is taken again.
    pub lease_secs: u64,
    /// Attempts before a job that keeps failing for a transient reason ends in `error`.
    pub max_attempts: u32,
    /// Days the records of finished jobs (stages, durations, errors) are kept; files and
    /// transcripts are not affected. 0 keeps them for ever.
    pub history_days: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            workers: 1,
            model: "whisper-base".to_owned(),
            int8: false,
            beam_size: 5,
            batch_windows: 0,
            lease_secs: 120,
            max_attempts: 3,
            history_days: 30,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpeakersConfig {
    /// A file's speaker whose true cosine similarity to a voice profile reaches this is
    /// assigned to it automatically.
    pub match_threshold: f32,
    /// From this similarity up to `match_threshold` the profile is offered as a suggestion.
    pub suggest_threshold: f32,
}

impl Default for SpeakersConfig {
    fn default() -> Self {
        Self {
            match_threshold: 0.75,
            suggest_threshold: 0.50,
        }
    }
}

/// A folder whose new media files are imported for one user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    /// The folder to watch; empty turns the watch folder off.
    pub dir: String,
    /// Username that owns the imported files.
    pub user: String,
    /// Seconds between scans; a file is taken once its size and time stop changing.
    pub interval_secs: u64,
    /// `move`: imported files go to `imported/` (refused ones to `failed/` with a reason);
    /// `mark`: they stay and get a `.imported` (or `.failed`) marker file next to them.
    pub after: String,
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            dir: String::new(),
            user: String::new(),
            interval_secs: 10,
            after: "move".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Who may read `/metrics`: `admins`, `localhost`, `admins-and-localhost`, or `off`.
    pub allow: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            allow: "admins-and-localhost".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            models_dir: default_models_dir(),
            server: ServerConfig::default(),
            auth: AuthConfig::default(),
            storage: StorageConfig::default(),
            runtime: RuntimeConfig::default(),
            jobs: JobsConfig::default(),
            speakers: SpeakersConfig::default(),
            watch: WatchConfig::default(),
            metrics: MetricsConfig::default(),
            audit: AuditConfig::default(),
            retention: RetentionConfig::default(),
            notify: NotifyConfig::default(),
            uploads: UploadsConfig::default(),
            llm: LlmConfig::default(),
            ldap: LdapConfig::default(),
            oidc: OidcConfig::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            http_listen: "off".to_owned(),
            tls_cert: None,
            tls_key: None,
            max_upload_bytes: 10 * 1024 * 1024 * 1024,
            shutdown_grace_secs: 30,
            header_timeout_secs: 30,
            body_timeout_secs: 30,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            registration: "closed".to_owned(),
            session_idle_timeout_secs: 24 * 3600,
            session_absolute_timeout_secs: 7 * 24 * 3600,
            login_max_failures: 5,
            login_ip_max_failures: 20,
            login_lockout_secs: 15 * 60,
            min_password_length: 8,
            password_hash_concurrency: 0,
            require_totp: false,
            totp_issuer: "OpenTranscribe".to_owned(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            encrypt_at_rest: false,
            min_free_disk_mb: 1024,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
        }
    }
}

/// `$XDG_DATA_HOME/opentranscribe`, else `~/.local/share/opentranscribe`, else `./data`.
fn default_data_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("opentranscribe");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/share/opentranscribe"),
        None => PathBuf::from("data"),
    }
}

/// `~/.cache/opentranscribe/models`, where `scripts/fetch-models` puts them.
fn default_models_dir() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("opentranscribe/models");
    }
    match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache/opentranscribe/models"),
        None => PathBuf::from("models"),
    }
}

/// A configuration problem, phrased to name the key and where it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

impl ConfigError {
    pub fn code(&self) -> &'static str {
        match self {
            ConfigError::Read { .. } => "config-read",
            ConfigError::Invalid { .. } => "config-invalid",
        }
    }
}

/// Overrides given on the command line; `None` leaves the lower layers in force.
#[derive(Debug, Clone, Default)]
pub struct FlagOverrides {
    pub data_dir: Option<PathBuf>,
    pub models_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub http_listen: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Config {
    /// Builds the configuration from all layers. `file` is the `--config` flag; without it,
    /// `OPENTRANSCRIBE_CONFIG` names the file; without either, only defaults, env and flags apply.
    pub fn load(file: Option<&Path>, flags: &FlagOverrides) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars()
            .filter(|(key, _)| key.starts_with(ENV_PREFIX))
            .collect();
        let env_file = env
            .iter()
            .find(|(key, _)| key == "OPENTRANSCRIBE_CONFIG")
            .map(|(_, value)| PathBuf::from(value));
        let file = file.map(Path::to_path_buf).or(env_file);
        Self::load_from(file.as_deref(), &env, flags)
    }

    /// As [`Config::load`] with the environment given explicitly (tests use this).
    pub fn load_from(
        file: Option<&Path>,
        env: &[(String, String)],
        flags: &FlagOverrides,
    ) -> Result<Self, ConfigError> {
        let mut merged = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                let origin = path.display().to_string();
                // Parse once into the typed struct so unknown keys and bad values are reported
                // against the file itself, with its line and column.
                parse_str(&text, &origin)?;
                text.parse::<toml::Table>()
                    .map_err(|e| invalid(&origin, e.to_string()))?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut merged, env)?;
        let origin = match file {
            Some(path) => format!("{} with environment overrides", path.display()),
            None => "environment".to_owned(),
        };
        let mut config: Config = toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| invalid(&origin, e.to_string()))?;
        config.apply_flags(flags);
        config.validate(&origin)?;
        Ok(config)
    }

    fn apply_flags(&mut self, flags: &FlagOverrides) {
        if let Some(dir) = &flags.data_dir {
            self.data_dir = dir.clone();
        }
        if let Some(dir) = &flags.models_dir {
            self.models_dir = dir.clone();
        }
        if let Some(listen) = flags.listen {
            self.server.listen = listen;
        }
        if let Some(http_listen) = &flags.http_listen {
            self.server.http_listen = http_listen.clone();
        }
        if let Some(cert) = &flags.tls_cert {
            self.server.tls_cert = Some(cert.clone());
        }
        if let Some(key) = &flags.tls_key {
            self.server.tls_key = Some(key.clone());
        }
    }

    /// Checks values that parse but make no sense; every message names its key.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let fail = |key: &str, why: &str| Err(invalid(origin, format!("key `{key}`: {why}")));
        if self.server.http_listen != "off"
            && self.server.http_listen.parse::<SocketAddr>().is_err()
        {
            return fail(
                "server.http_listen",
                "must be `off` or ADDRESS:PORT, e.g. 0.0.0.0:80",
            );
        }
        if self.server.tls_cert.is_some() != self.server.tls_key.is_some() {
            return fail(
                "server.tls_cert",
                "tls_cert and tls_key must be given together",
            );
        }
        if self.server.max_upload_bytes == 0 {
            return fail("server.max_upload_bytes", "must be greater than 0");
        }
        if self.server.header_timeout_secs == 0 {
            return fail("server.header_timeout_secs", "must be greater than 0");
        }
        if self.server.body_timeout_secs == 0 {
            return fail("server.body_timeout_secs", "must be greater than 0");
        }
        if !matches!(self.auth.registration.as_str(), "open" | "closed") {
            return fail("auth.registration", "must be `open` or `closed`");
        }
        let issuer = self.auth.totp_issuer.trim();
        if issuer.is_empty() || issuer.len() > 64 || issuer.contains(':') {
            return fail("auth.totp_issuer", "must be 1 to 64 characters without `:`");
        }
        if self.auth.session_idle_timeout_secs == 0 || self.auth.session_absolute_timeout_secs == 0
        {
            return fail(
                "auth.session_idle_timeout_secs",
                "session timeouts must be greater than 0",
            );
        }
        if self.auth.login_max_failures == 0 || self.auth.login_ip_max_failures == 0 {
            return fail("auth.login_max_failures", "must be greater than 0");
        }
        if self.auth.min_password_length < 8 {
            return fail("auth.min_password_length", "must be at least 8");
        }
        let (matched, suggested) = (
            self.speakers.match_threshold,
            self.speakers.suggest_threshold,
        );
        if !(0.0..=1.0).contains(&matched)
            || !(0.0..=1.0).contains(&suggested)
            || suggested > matched
        {
            return fail(
                "speakers.match_threshold",
                "thresholds must lie in 0..1 with suggest_threshold <= match_threshold",
            );
        }
        if !self.watch.dir.is_empty() && self.watch.user.is_empty() {
            return fail(
                "watch.user",
                "name the user who owns files from the watch folder",
            );
        }
        if self.watch.interval_secs == 0 {
            return fail("watch.interval_secs", "must be greater than 0");
        }
        if !matches!(self.watch.after.as_str(), "move" | "mark") {
            return fail("watch.after", "must be `move` or `mark`");
        }
        if !matches!(
            self.metrics.allow.as_str(),
            "admins" | "localhost" | "admins-and-localhost" | "off"
        ) {
            return fail(
                "metrics.allow",
                "must be `admins`, `localhost`, `admins-and-localhost` or `off`",
            );
        }
        if crate::models::runtime::Device::parse(&self.runtime.device).is_none() {
            return fail("runtime.device", "must be `auto`, `cpu` or `cuda`");
        }
        if self.runtime.device_id < 0 {
            return fail("runtime.device_id", "must be 0 or more");
        }
        if self.jobs.lease_secs < 10 {
            return fail("jobs.lease_secs", "must be at least 10");
        }
        if !(1..=16).contains(&self.jobs.beam_size) {
            return fail("jobs.beam_size", "must be from 1 to 16");
        }
        if self.jobs.batch_windows > 64 {
            return fail("jobs.batch_windows", "must be from 0 (choose) to 64");
        }
        if self.jobs.max_attempts == 0 {
            return fail("jobs.max_attempts", "must be at least 1");
        }
        if !crate::models::manifest::is_safe_name(&self.jobs.model) {
            return fail(
                "jobs.model",
                "must be a model name from the cache, e.g. whisper-base",
            );
        }
        if !matches!(
            self.log.level.as_str(),
            "error" | "warn" | "info" | "debug" | "trace"
        ) {
            return fail(
                "log.level",
                "must be one of error, warn, info, debug, trace",
            );
        }
        if self.data_dir.as_os_str().is_empty() {
            return fail("data_dir", "must not be empty");
        }
        if let Err((key, why)) = self.notify.check() {
            return fail(key, why);
        }
        if let Err((key, why)) = self.uploads.check() {
            return fail(key, why);
        }
        if let Err((key, why)) = self.llm.check() {
            return fail(key, why);
        }
        if let Err((key, why)) = self.ldap.check() {
            return fail(key, why);
        }
        if let Err((key, why)) = self.oidc.check() {
            return fail(key, why);
        }
        Ok(())
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("opentranscribe.redb")
    }

    pub fn blob_dir(&self) -> PathBuf {
        self.data_dir.join("blobs")
    }

    pub fn secrets_dir(&self) -> PathBuf {
        self.data_dir.join("secrets")
    }

    pub fn runtime_settings(&self) -> crate::models::runtime::RuntimeSettings {
        crate::models::runtime::RuntimeSettings {
            library: self.runtime.library.clone(),
            models_dir: self.models_dir.clone(),
            device: crate::models::runtime::Device::parse(&self.runtime.device)
                .unwrap_or(crate::models::runtime::Device::Auto),
            device_id: self.runtime.device_id,
            threads: self.runtime.threads,
            spin: self.runtime.spin,
        }
    }
}

/// Parses a whole config file's text; used by `config check`.
pub fn parse_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let config: Config = toml::from_str(text).map_err(|e| invalid(origin, e.to_string()))?;
    config.validate(origin)?;
    Ok(config)
}

fn invalid(origin: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.to_owned(),
        message: message.trim_end().to_owned(),
    }
}

/// All dotted keys a config may hold.
pub fn known_keys() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    if let Ok(toml::Value::Table(table)) = toml::Value::try_from(Config::default()) {
        collect_keys(&table, "", &mut keys);
    }
    keys.extend(OPTIONAL_KEYS.iter().map(|k| (*k).to_owned()));
    keys
}

fn collect_keys(table: &toml::Table, prefix: &str, keys: &mut BTreeSet<String>) {
    for (name, value) in table {
        let dotted = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            toml::Value::Table(inner) => collect_keys(inner, &dotted, keys),
            _ => {
                keys.insert(dotted);
            }
        }
    }
}

/// `server.listen` → `OPENTRANSCRIBE_SERVER_LISTEN`.
pub fn env_name_for_key(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "_").to_uppercase())
}

fn apply_env(merged: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    let keys = known_keys();
    let defaults = toml::Value::try_from(Config::default()).ok();
    for (name, raw) in env {
        if !name.starts_with(ENV_PREFIX) || ENV_NOT_KEYS.contains(&name.as_str()) {
            continue;
        }
        let Some(key) = keys.iter().find(|key| env_name_for_key(key) == *name) else {
            return Err(invalid(
                "environment",
                format!("unknown variable `{name}` (no such config key)"),
            ));
        };
        let default = defaults.as_ref().and_then(|d| lookup(d, key));
        let value = match default {
            Some(toml::Value::Integer(_)) => {
                raw.parse::<i64>().map(toml::Value::Integer).map_err(|_| {
                    invalid(
                        "environment",
                        format!("`{name}`: expected an integer, got `{raw}`"),
                    )
                })?
            }
            Some(toml::Value::Float(_)) => {
                raw.parse::<f64>().map(toml::Value::Float).map_err(|_| {
                    invalid(
                        "environment",
                        format!("`{name}`: expected a number, got `{raw}`"),
                    )
                })?
            }
            Some(toml::Value::Boolean(_)) => match raw.as_str() {
                "true" | "1" | "yes" => toml::Value::Boolean(true),
                "false" | "0" | "no" => toml::Value::Boolean(false),
                _ => {
                    return Err(invalid(
                        "environment",
                        format!("`{name}`: expected true or false, got `{raw}`"),
                    ));
                }
            },
            _ => toml::Value::String(raw.clone()),
        };
        insert_dotted(merged, key, value);
    }
    Ok(())
}

fn lookup<'a>(value: &'a toml::Value, dotted: &str) -> Option<&'a toml::Value> {
    dotted
        .split('.')
        .try_fold(value, |current, part| current.as_table()?.get(part))
}

fn insert_dotted(table: &mut toml::Table, dotted: &str, value: toml::Value) {
    let mut parts: Vec<&str> = dotted.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut current = table;
    for part in parts {
        let entry = current
            .entry(part.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let Some(inner) = entry.as_table_mut() else {
            return;
        };
        current = inner;
    }
    current.insert(last.to_owned(), value);
}

mod example;
pub use example::example;
mod policy;
pub use policy::{AuditConfig, RetentionConfig};
mod notify;
pub use notify::{NotifyConfig, SecretFileError};
mod uploads;
pub use uploads::UploadsConfig;
mod llm;
pub use llm::{KeyFileError, LlmConfig};
mod ldap;
pub use ldap::LdapConfig;
mod oidc;
pub use oidc::OidcConfig;

#[cfg(test)]
mod tests;
