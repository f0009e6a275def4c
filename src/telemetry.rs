//! Logging: to the systemd journal when started by systemd, to stderr otherwise.

use tracing_subscriber::EnvFilter;

/// Installs the global logger once. `level` comes from config; `OPENTRANSCRIBE_LOG` may give
/// a full tracing filter instead. Secrets and tokens are never logged by any module.
pub fn init(level: &str) {
    let filter = std::env::var("OPENTRANSCRIBE_LOG").unwrap_or_else(|_| {
        format!("{level},hyper=warn,rustls=warn,tower_http=info,h2=warn,axum_server=warn")
    });
    if running_under_journald() {
        // tracing's `log` feature forwards events to the `log` facade when no tracing
        // subscriber is set, and the journal logger takes them from there.
        if let Ok(logger) = systemd_journal_logger::JournalLog::new() {
            let logger = logger.with_syslog_identifier("opentranscribe".to_owned());
            if logger.install().is_ok() {
                log::set_max_level(level_filter(level));
                return;
            }
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// systemd sets `JOURNAL_STREAM` to the device and inode of stderr when it is the journal.
fn running_under_journald() -> bool {
    systemd_journal_logger::connected_to_journal()
}

fn level_filter(level: &str) -> log::LevelFilter {
    match level {
        "error" => log::LevelFilter::Error,
        "warn" => log::LevelFilter::Warn,
        "debug" => log::LevelFilter::Debug,
        "trace" => log::LevelFilter::Trace,
        _ => log::LevelFilter::Info,
    }
}
