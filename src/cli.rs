//! Subcommands of the `opentranscribe` binary.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::config::{Config, FlagOverrides};

#[derive(Debug, Parser)]
#[command(
    name = "opentranscribe",
    version,
    about = "Self-hosted transcription appliance"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (HTTPS API and web UI).
    Serve(ServeArgs),
    /// Validate a config file or print a commented example.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage user accounts offline (the daemon must not be running on the same data dir).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// The offline model cache: list, verify, import and export bundles, remove.
    Models {
        #[command(flatten)]
        common: CommonArgs,
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Check runtime, GPU, models, disk and config; exit non-zero if the daemon could not work.
    Doctor(CommonArgs),
    /// Transcribe a media file and print the transcript to standard output.
    Transcribe(TranscribeArgs),
    /// Back up the database, media and (optionally) secrets: online from the running daemon,
    /// else from the idle data dir.
    Backup(BackupArgs),
    /// Restore a backup into an empty data dir, verifying every checksum.
    Restore(RestoreArgs),
    /// Ask the running daemon for its version, uptime, readiness, jobs, disk, models, provider.
    Status(StatusArgs),
    /// Prepare a data dir (TLS certificate, secrets) without starting; used by the package.
    #[command(hide = true)]
    Init(CommonArgs),
    /// Rebuild the search index from the database (the daemon must be stopped).
    Reindex(CommonArgs),
    /// Diarize a media file (no transcription) and print RTTM; for benchmarks.
    #[command(hide = true)]
    Diarize(DiarizeArgs),
    /// Score an RTTM hypothesis against a reference: DER as JSON; for benchmarks.
    #[command(hide = true)]
    DiarizeScore {
        reference: PathBuf,
        hypothesis: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// New (or empty) directory to write the backup to; with --keep, the directory that holds
    /// dated backups.
    pub dest: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
    /// Also copy the secrets (TLS key, blob encryption key) and the config file.
    #[arg(long)]
    pub include_secrets: bool,
    /// Write DEST/opentranscribe-<UTC time> and keep only the newest N such backups.
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A directory written by `opentranscribe backup`.
    pub source: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Print the daemon's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DiarizeArgs {
    pub file: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub speakers: SpeakerArgs,
    /// Seconds between 10 s segmentation windows.
    #[arg(long)]
    pub step: Option<f64>,
    /// Clustering cut, as a share of the file's median within-window speaker distance (default 0.55).
    #[arg(long)]
    pub threshold: Option<f32>,
    /// Activity at which a speaker turn starts.
    #[arg(long)]
    pub onset: Option<f32>,
    /// Activity below which it ends.
    #[arg(long)]
    pub offset: Option<f32>,
    /// Pauses shorter than this (seconds) inside one speaker's speech are filled.
    #[arg(long)]
    pub min_off: Option<f64>,
    /// Print one JSON line per speaker with its centroid to standard error.
    #[arg(long)]
    pub centroids: bool,
}

#[derive(Debug, Args)]
pub struct SpeakerArgs {
    /// Number of speakers, when known.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=20))]
    pub speakers: Option<u32>,
    /// At least this many speakers.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=20))]
    pub min_speakers: Option<u32>,
    /// At most this many speakers.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=20))]
    pub max_speakers: Option<u32>,
}

#[derive(Debug, Args)]
pub struct TranscribeArgs {
    /// Audio or video file.
    pub file: PathBuf,
    #[command(flatten)]
    pub common: CommonArgs,
    /// ASR model from the cache.
    #[arg(long, default_value = "whisper-base")]
    pub model: String,
    /// Output format.
    #[arg(long, default_value = "json", value_parser = ["json", "srt", "vtt", "txt", "csv", "md", "rttm"])]
    pub format: String,
    /// Language code (e.g. `en`); detected when absent.
    #[arg(long)]
    pub language: Option<String>,
    /// Translate to English instead of transcribing.
    #[arg(long)]
    pub translate: bool,
    /// Use the int8-quantized encoder and decoder.
    #[arg(long)]
    pub int8: bool,
    /// Beam size (1 = greedy).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub beam: u32,
    /// Windows transcribed together (throughput mode: batched greedy decoding of independent
    /// windows); 1 keeps Whisper's sequential windows, each conditioned on the last.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub batch: u32,
    /// Text to condition the first window on (names, spelling, style).
    #[arg(long)]
    pub initial_prompt: Option<String>,
    /// Words to favour throughout.
    #[arg(long)]
    pub hotwords: Option<String>,
    /// Do not label speakers.
    #[arg(long)]
    pub no_diarize: bool,
    /// Transcribe everything, silence included, without voice activity detection.
    #[arg(long)]
    pub no_vad: bool,
    #[command(flatten)]
    pub speakers: SpeakerArgs,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Table of cached models: name, kind, size, whether files match the manifest's sizes.
    List,
    /// Re-hash every file of one model (or all) against its manifest.
    Verify { name: Option<String> },
    /// Import a bundle (tar or tar.zst); verified before it becomes visible.
    Import { bundle: PathBuf },
    /// Write models into a tar.zst bundle to carry to an air-gapped site.
    Export {
        #[arg(required = true)]
        names: Vec<String>,
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
    },
    /// Remove a model from the cache.
    Remove { name: String },
}

#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Config file (TOML). Default: $OPENTRANSCRIBE_CONFIG, else built-in defaults.
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Data directory (database, media, certificates, secrets).
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Model cache directory. Global: `models --models-dir DIR list` and
    /// `models list --models-dir DIR` both work.
    #[arg(long, value_name = "DIR", global = true)]
    pub models_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// HTTPS listen address.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Plain HTTP listener that redirects to HTTPS, or `off`.
    #[arg(long, value_name = "ADDR:PORT|off")]
    pub http_listen: Option<String>,
    /// PEM certificate chain (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (with --tls-cert).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check a config file (and the environment overrides); exit non-zero naming the problem.
    Check {
        #[arg(value_name = "FILE")]
        file: Option<PathBuf>,
        #[arg(long = "config", value_name = "FILE", conflicts_with = "file")]
        config: Option<PathBuf>,
    },
    /// Print a commented example config with every key and its default.
    Example,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; the password is read from standard input.
    Create {
        username: String,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
        /// Read the password from standard input (required: passwords never go on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
}

/// Entry point: prints one clear line on failure and returns a non-zero status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("error: {}", chain.join(": "));
            ExitCode::FAILURE
        }
    }
}

fn load_config(common: &CommonArgs, extra: FlagOverrides) -> anyhow::Result<Config> {
    let flags = FlagOverrides {
        data_dir: common.data_dir.clone(),
        models_dir: common.models_dir.clone(),
        ..extra
    };
    let file = common.config.clone().or_else(packaged_config);
    Ok(Config::load(file.as_deref(), &flags)?)
}

/// The installed binary (`/usr/bin/opentranscribe`) reads the packaged config when no config is
/// named (`--config`, `OPENTRANSCRIBE_CONFIG`) and the caller may read it, so `status`, `backup`
/// or `models import` run by an admin see the service's data dir.
pub const PACKAGED_BINARY: &str = "/usr/bin/opentranscribe";
pub const PACKAGED_CONFIG: &str = "/etc/opentranscribe/opentranscribe.toml";

fn packaged_config() -> Option<PathBuf> {
    if std::env::var_os("OPENTRANSCRIBE_CONFIG").is_some() {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    let config = PathBuf::from(PACKAGED_CONFIG);
    (exe == std::path::Path::new(PACKAGED_BINARY) && std::fs::File::open(&config).is_ok())
        .then_some(config)
}

/// The config file in force for these arguments, if any.
fn config_file_in_force(common: &CommonArgs) -> Option<PathBuf> {
    common
        .config
        .clone()
        .or_else(|| std::env::var_os("OPENTRANSCRIBE_CONFIG").map(PathBuf::from))
        .or_else(packaged_config)
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let config = load_config(
                &args.common,
                FlagOverrides {
                    listen: args.listen,
                    http_listen: args.http_listen.clone(),
                    tls_cert: args.tls_cert.clone(),
                    tls_key: args.tls_key.clone(),
                    ..FlagOverrides::default()
                },
            )?;
            crate::telemetry::init(&config.log.level);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("opentranscribe")
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(crate::daemon::serve(config))
        }
        Command::Config { command } => match command {
            ConfigCommand::Example => {
                print!("{}", crate::config::example());
                Ok(())
            }
            ConfigCommand::Check { file, config } => {
                let file = file.or(config);
                let config = Config::load(file.as_deref(), &FlagOverrides::default())?;
                match file {
                    Some(path) => println!("{}: ok", path.display()),
                    None => println!("defaults and environment: ok"),
                }
                println!("data_dir = {}", config.data_dir.display());
                Ok(())
            }
        },
        Command::Models { common, command } => {
            let config = load_config(&common, FlagOverrides::default())?;
            crate::models::cli::run(&config, command)
        }
        Command::Transcribe(args) => {
            let config = load_config(&args.common, FlagOverrides::default())?;
            crate::telemetry::init("warn");
            run_transcribe(&config, &args)
        }
        Command::Diarize(args) => {
            let config = load_config(&args.common, FlagOverrides::default())?;
            crate::telemetry::init("warn");
            run_diarize(&config, &args)
        }
        Command::DiarizeScore {
            reference,
            hypothesis,
        } => {
            use crate::diarize::metrics::{der, parse_rttm};
            let read = |p: &PathBuf| -> anyhow::Result<_> {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read {}", p.display()))?;
                parse_rttm(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
            };
            let (r, h) = (read(&reference)?, read(&hypothesis)?);
            let plain = der(&r, &h, 0.0);
            let collared = der(&r, &h, 0.25);
            println!(
                "{}",
                serde_json::json!({
                    "der": plain.der,
                    "der_collar": collared.der,
                    "missed": plain.missed,
                    "false_alarm": plain.false_alarm,
                    "confusion": plain.confusion,
                    "reference_speech": plain.reference_speech,
                    "hypothesis_speakers": h.iter().map(|t| t.speaker.as_str()).collect::<std::collections::BTreeSet<_>>().len(),
                    "mapping": plain.mapping,
                })
            );
            Ok(())
        }
        Command::Doctor(common) => {
            let config = load_config(&common, FlagOverrides::default());
            crate::models::cli::doctor(config)
        }
        Command::Backup(args) => run_backup(&args),
        Command::Restore(args) => run_restore(&args),
        Command::Status(args) => run_status(&args),
        Command::Reindex(common) => {
            let config = load_config(&common, FlagOverrides::default())?;
            run_reindex(&config)
        }
        Command::Init(common) => {
            let config = load_config(&common, FlagOverrides::default())?;
            run_init(&config)
        }
        Command::User { command } => match command {
            UserCommand::Create {
                username,
                admin,
                password_stdin,
                common,
            } => {
                if !password_stdin {
                    bail!("--password-stdin is required");
                }
                let config = load_config(&common, FlagOverrides::default())?;
                let mut password = String::new();
                std::io::stdin()
                    .take(4096)
                    .read_to_string(&mut password)
                    .context("cannot read the password from standard input")?;
                let password = password.trim_end_matches(['\n', '\r']).to_owned();
                create_user_offline(&config, &username, &password, admin)?;
                println!("created user {username}");
                Ok(())
            }
        },
    }
}

fn run_transcribe(config: &Config, args: &TranscribeArgs) -> anyhow::Result<()> {
    use crate::pipeline::{Engine, FileOptions, process_file};
    use crate::transcript::export::{Format, render};
    if !args.file.is_file() {
        bail!("{}: no such file", args.file.display());
    }
    let rttm = args.format == "rttm";
    if rttm && args.no_diarize {
        bail!("--format rttm needs diarization; drop --no-diarize");
    }
    let format = if rttm {
        Format::Json
    } else {
        Format::parse(&args.format).context("unknown format")?
    };
    let mut engine = Engine::load(config, &args.model, args.int8)?;
    let options = FileOptions {
        model: args.model.clone(),
        language: args.language.clone(),
        translate: args.translate,
        quantized: args.int8,
        no_vad: args.no_vad,
        beam_size: args.beam as usize,
        batch_windows: args.batch as usize,
        initial_prompt: args.initial_prompt.clone(),
        hotwords: args.hotwords.clone(),
        diarize: !args.no_diarize,
        num_speakers: args.speakers.speakers.map(|n| n as usize),
        min_speakers: args.speakers.min_speakers.map(|n| n as usize),
        max_speakers: args.speakers.max_speakers.map(|n| n as usize),
    };
    options
        .diarize_options()
        .validate()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let bar = progress_bar();
    let processed = process_file(&mut engine, &args.file, &options, &mut |stage| {
        show_stage(&bar, stage, options.diarize)
    });
    bar.finish_and_clear();
    let processed = processed?;
    if rttm {
        print!("{}", rttm_of(&args.file, &processed.diarization));
    } else {
        print!(
            "{}",
            render(&processed.transcript, format, !args.no_diarize)
        );
    }
    Ok(())
}

fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(1000);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg:12} [{bar:30}] {percent}% {elapsed}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Decoding takes the first 10 %, transcription the next 75 % (90 % without diarization).
fn show_stage(
    bar: &indicatif::ProgressBar,
    stage: crate::pipeline::Stage,
    diarize: bool,
) -> std::ops::ControlFlow<()> {
    use crate::pipeline::Stage;
    let transcribe_share = if diarize { 750.0 } else { 900.0 };
    let (message, position) = match stage {
        Stage::Decode(f) => ("decoding", f * 100.0),
        Stage::Transcribe(f) => ("transcribing", 100.0 + f * transcribe_share),
        Stage::Diarize(f) => ("speakers", 850.0 + f * 150.0),
    };
    bar.set_message(message);
    bar.set_position(position as u64);
    std::ops::ControlFlow::Continue(())
}

fn rttm_of(file: &std::path::Path, diarization: &crate::diarize::Diarization) -> String {
    let id = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_owned());
    crate::diarize::metrics::write_rttm(&id, &diarization.turns)
}

fn run_diarize(config: &Config, args: &DiarizeArgs) -> anyhow::Result<()> {
    if !args.file.is_file() {
        bail!("{}: no such file", args.file.display());
    }
    let mut options = crate::diarize::DiarizeOptions {
        num_speakers: args.speakers.speakers.map(|n| n as usize),
        min_speakers: args.speakers.min_speakers.map(|n| n as usize),
        max_speakers: args.speakers.max_speakers.map(|n| n as usize),
        ..crate::diarize::DiarizeOptions::default()
    };
    if let Some(step) = args.step {
        options.step_seconds = step;
    }
    if let Some(threshold) = args.threshold {
        options.threshold = threshold;
    }
    if let Some(onset) = args.onset {
        options.binarisation.onset = onset;
    }
    if let Some(offset) = args.offset {
        options.binarisation.offset = offset;
    }
    if let Some(min_off) = args.min_off {
        options.binarisation.min_duration_off = min_off;
    }
    options.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut diarizer = crate::pipeline::load_diarizer(config)?;
    let bar = progress_bar();
    let diarization =
        crate::pipeline::diarize_file(&mut diarizer, &args.file, &options, &mut |stage| {
            show_stage(&bar, stage, true)
        });
    bar.finish_and_clear();
    let diarization = diarization?;
    if args.centroids {
        for speaker in &diarization.speakers {
            eprintln!(
                "{}",
                serde_json::json!({"speaker": speaker.id, "speech_seconds": speaker.speech_seconds, "centroid": speaker.centroid})
            );
        }
    }
    print!("{}", rttm_of(&args.file, &diarization));
    Ok(())
}

fn run_reindex(config: &Config) -> anyhow::Result<()> {
    let store = crate::store::Store::open(&config.db_path()).map_err(|e| {
        anyhow::anyhow!("{e} (is the daemon running on this data dir? stop it first; it also reindexes what differs at start-up)")
    })?;
    let search =
        crate::indexer::open(config).map_err(|e| anyhow::anyhow!("{}", e.message_for_log()))?;
    let bar = progress_bar();
    bar.set_message("reindexing");
    let started = std::time::Instant::now();
    let count = crate::indexer::rebuild(&store, &search, |done, total| {
        bar.set_length(total.max(1) as u64);
        bar.set_position(done as u64);
    })
    .map_err(|e| anyhow::anyhow!("{}", e.message_for_log()))?;
    bar.finish_and_clear();
    let semantic = if search.has_embedder() {
        "with"
    } else {
        "WITHOUT (sentence model missing)"
    };
    eprintln!(
        "indexed {count} transcripts {semantic} semantic vectors in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn create_user_offline(
    config: &Config,
    username: &str,
    password: &str,
    admin: bool,
) -> anyhow::Result<()> {
    crate::auth::validate_username(username)?;
    crate::auth::validate_password(password, config.auth.min_password_length)?;
    crate::fsutil::create_private_dir(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    let store = crate::store::Store::open(&config.db_path()).map_err(|e| {
        anyhow::anyhow!("{e} (is the daemon running on this data dir? use the admin API instead)")
    })?;
    let hash = crate::auth::password::hash_password(password)?;
    let role = if admin {
        crate::store::records::Role::Admin
    } else {
        crate::store::records::Role::User
    };
    store.create_user(&uuid::Uuid::now_v7().to_string(), username, &hash, role)?;
    Ok(())
}

fn run_backup(args: &BackupArgs) -> anyhow::Result<()> {
    let config = load_config(&args.common, FlagOverrides::default())?;
    let options = crate::ops::backup::BackupOptions {
        dest: args.dest.clone(),
        include_secrets: args.include_secrets,
        keep: args.keep,
        config_file: config_file_in_force(&args.common),
    };
    let summary = crate::ops::backup::run_backup(&config, &options)?;
    let manifest = &summary.manifest;
    println!(
        "backup written to {} ({}, schema v{}, {} files, {} blobs, {} MiB{})",
        summary.path.display(),
        if manifest.online {
            "online, from the running daemon"
        } else {
            "from the idle data dir"
        },
        manifest.schema_version,
        manifest.file_records,
        manifest.blobs,
        summary.bytes / (1024 * 1024),
        if manifest.includes_secrets {
            ", with secrets and config"
        } else {
            ""
        }
    );
    for path in &summary.pruned {
        println!("removed old backup {}", path.display());
    }
    for warning in &summary.warnings {
        eprintln!("warning: {warning}");
    }
    Ok(())
}

fn run_restore(args: &RestoreArgs) -> anyhow::Result<()> {
    let config = load_config(&args.common, FlagOverrides::default())?;
    let summary = crate::ops::backup::run_restore(&config, &args.source)?;
    println!(
        "restored {} files ({} MiB) from {} (taken {}, schema v{}) into {}: {} users, {} media files",
        summary.files_restored,
        summary.bytes / (1024 * 1024),
        args.source.display(),
        summary.manifest.created_at,
        summary.manifest.schema_version,
        config.data_dir.display(),
        summary.users,
        summary.manifest.file_records
    );
    for note in &summary.notes {
        println!("note: {note}");
    }
    println!("start the daemon; the search index is rebuilt from the restored transcripts");
    Ok(())
}

fn run_status(args: &StatusArgs) -> anyhow::Result<()> {
    let config = load_config(&args.common, FlagOverrides::default())?;
    let answer = crate::ops::admin::request(
        &config.data_dir,
        &crate::ops::admin::Request::Status,
        std::time::Duration::from_secs(30),
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    } else {
        print!("{}", crate::ops::status::render(&answer));
    }
    Ok(())
}

/// Creates the data dir, the self-signed certificate (unless one is configured) and the blob
/// key, keeping whatever exists already.
fn run_init(config: &Config) -> anyhow::Result<()> {
    crate::fsutil::create_private_dir(&config.data_dir)
        .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    if config.server.tls_cert.is_none() {
        let (cert, _) = crate::http::tls::ensure_self_signed(&config.data_dir)?;
        let fingerprint = crate::http::tls::cert_fingerprint_sha256(&cert)?;
        println!("certificate: {} (SHA-256 {fingerprint})", cert.display());
    }
    let key = config.secrets_dir().join("blob.key");
    crate::blobs::BlobStore::open(&config.blob_dir(), Some(&key))?;
    println!("blob key: {}", key.display());
    Ok(())
}
