//! The commented example config (`config example`), kept equal to the defaults by a test.

use std::path::Path;

use super::Config;

/// A commented example configuration; a test keeps it equal to the defaults.
pub fn example() -> String {
    let defaults = Config::default();
    format!(
        r#"# OpenTranscribe configuration. Every key is optional; shown values are the defaults.
# Precedence: defaults < this file < OPENTRANSCRIBE_<SECTION>_<KEY> environment < command-line flags.
# Unknown keys are errors.

# Where the database, blobs, TLS certificate and secrets live.
data_dir = {data_dir}
# The model cache filled by scripts/fetch-models or `opentranscribe models import`.
models_dir = {models_dir}

[server]
# HTTPS listener.
listen = "{listen}"
# Plain HTTP listener that only redirects to HTTPS (and answers /api/health), or "off".
http_listen = "{http_listen}"
# PEM certificate chain and private key. Without them a self-signed certificate is generated
# into data_dir/tls and its SHA-256 fingerprint is logged.
# tls_cert = "/etc/opentranscribe/tls/cert.pem"
# tls_key = "/etc/opentranscribe/tls/key.pem"
# Largest accepted upload in bytes (10 GiB).
max_upload_bytes = {max_upload}
# Seconds in-flight requests get to finish on shutdown.
shutdown_grace_secs = {grace}
# Seconds a client has to send its request headers.
header_timeout_secs = {header_timeout}
# Seconds a client has to send a whole request body (uploads are not limited by this: they are
# dropped after 120 s without data instead).
body_timeout_secs = {body_timeout}

[auth]
# "closed": only the first user (who becomes admin) may register; admins create the others.
# "open": anyone who reaches the page may register.
registration = "{registration}"
# A session ends after this long without use, and after the absolute limit in any case.
session_idle_timeout_secs = {idle}
session_absolute_timeout_secs = {absolute}
# Failed logins before an account is locked, and per client address.
login_max_failures = {max_failures}
login_ip_max_failures = {ip_failures}
# How long a lockout lasts.
login_lockout_secs = {lockout}
min_password_length = {min_pw}
# Password hashes computed at once (each takes 19 MiB for a moment); 0 = one per core.
# Sign-ins beyond it wait up to 2 s, then get 429 with Retry-After.
password_hash_concurrency = {hash_slots}
# Require a TOTP second factor (an authenticator app) for local accounts: a user without one
# must set it up right after signing in. LDAP and OIDC accounts are left to their directory.
require_totp = {require_totp}
# The name authenticator apps show for this site.
totp_issuer = "{totp_issuer}"

[storage]
# Encrypt new media at rest with AES-256-GCM (key generated into data_dir/secrets, mode 0600).
encrypt_at_rest = {encrypt}
# /api/ready fails when free disk in data_dir falls below this many MiB.
min_free_disk_mb = {min_free}

[runtime]
# ONNX Runtime execution provider: "auto" (CUDA when its provider library and a GPU are
# present, else CPU; the choice and the reason are logged), "cpu" or "cuda" (fail if unusable).
device = "{device}"
device_id = {device_id}
# Inference threads; 0 means one per physical core.
threads = {threads}
# Let idle inference threads spin: slightly lower latency on a dedicated machine, much slower
# when other work shares the CPU (measured on 2 cores under load: 5.2-5.7 s vs 4.2-4.9 s).
spin = {spin}
# Path of libonnxruntime.so. Default: $ORT_DYLIB_PATH, then models_dir/onnxruntime,
# then /usr/lib/opentranscribe.
# library = "/usr/lib/opentranscribe/libonnxruntime.so.1.31.1"

[jobs]
# Transcription workers (each loads its own models; one per GPU, or one or two on a CPU).
# 0 disables processing: uploads stay queued.
workers = {workers}
# ASR model for uploads, by its name in the model cache.
model = "{jobs_model}"
# Use the int8-quantized Whisper encoder and decoder (faster on CPUs).
int8 = {int8}
# Beam size: 5 is Whisper's default; 1 (greedy) is about twice as fast.
beam_size = {beam}
# Windows transcribed together in one batch (throughput mode, greedy, no conditioning on earlier
# text): 0 chooses 8 with CUDA and 1 on the CPU; 1 keeps Whisper's sequential windows.
batch_windows = {batch_windows}
# A job whose worker has not reported progress for this long is taken again.
lease_secs = {lease}
# Attempts before a job that keeps failing for a transient reason ends in error.
max_attempts = {attempts}
# Days the records of finished jobs (stage durations, errors) are kept; 0 = for ever.
history_days = {history_days}

[speakers]
# A speaker whose true cosine similarity to one of the user's voice profiles reaches
# match_threshold is assigned to it; from suggest_threshold up it is offered as a suggestion.
match_threshold = {match_threshold}
suggest_threshold = {suggest_threshold}

[watch]
# A folder whose new media files are imported for one user ("" = off). A file is taken once
# its size and modification time stop changing between two scans.
dir = "{watch_dir}"
user = "{watch_user}"
interval_secs = {watch_interval}
# "move": imported files go to imported/ (refused ones to failed/ with a .reason.txt);
# "mark": files stay and get a .imported (or .failed) marker next to them.
after = "{watch_after}"

[metrics]
# Who may read the Prometheus text at /metrics: "admins" (signed in), "localhost" (no sign-in,
# from 127.0.0.1 or ::1 only), "admins-and-localhost", or "off".
allow = "{metrics_allow}"

[audit]
# Days the audit log (sign-ins, account, file, sharing and settings changes, retention
# deletions) is kept; 0 keeps it for ever.
keep_days = {audit_keep_days}

[retention]
# Site-wide retention, counted from each file's upload; 0 turns a rule off. media_days deletes
# the media and keeps the transcript; transcript_days deletes the whole file. A user's own rule
# applies where it is stricter; files in a collection marked retention_exempt are kept.
media_days = {retention_media_days}
transcript_days = {retention_transcript_days}
[notify]
# A site-wide webhook: every job that completes or fails is POSTed there as JSON, signed with
# HMAC-SHA256 in the X-OpenTranscribe-Signature header (see docs/webhooks.md); "" = off.
# Users add their own webhook in the web UI or through /api/account/webhook.
webhook_url = "{webhook_url}"
# File holding the signing secret on its first line; it must have mode 0600.
webhook_secret_file = "{webhook_secret_file}"
# Seconds one delivery attempt may take.
webhook_timeout_secs = {webhook_timeout}
# Attempts per delivery, the first included; retries wait 30 s, 2 min, 10 min, 1 h, then 6 h.
webhook_max_attempts = {webhook_attempts}
# Days delivery records (for the deliveries list) are kept.
webhook_history_days = {webhook_history}

[uploads]
# Resumable uploads (/api/uploads, what the web UI uses): hours an unfinished upload is kept
# after its last chunk before housekeeping removes it and its partial data.
session_expiry_hours = {upload_expiry}
# Seconds without a chunk after which a browser recording is completed with what arrived
# (the tab was closed or the connection lost).
recording_idle_secs = {recording_idle}

[llm]
# The site's own OpenAI-compatible model server (llama.cpp server, Ollama, vLLM) for summaries,
# action items and questions about a transcript (see docs/llm.md). Nothing leaves the site.
enabled = {llm_enabled}
# Up to /v1: requests go to <base_url>/chat/completions.
base_url = "{llm_base_url}"
model = "{llm_model}"
# Optional file holding the API key on its first line (mode 0600); "" sends no key.
key_file = "{llm_key_file}"
# Seconds one request may take.
timeout_secs = {llm_timeout}
# The model's context window; long transcripts are summarised in parts that fit it.
context_tokens = {llm_context}
# Most tokens asked for in one answer (at most half of context_tokens).
max_output_tokens = {llm_max_output}
# Summarise every file when its transcription completes (a follow-on stage of the job, run as the
# file's owner); false: summaries only when someone asks for one.
summarize_completed = {llm_summarize_completed}

[ldap]
# Sign-in through an LDAP directory or Active Directory, beside local accounts (a local account
# of the same name is tried first). A directory user gets a local account record on first
# sign-in; its role follows its groups at every sign-in. See docs/auth.md.
enabled = false
# ldaps://host:636, or ldap://host:389 with starttls = true.
url = ""
starttls = true
# PEM file with the CA that signed the directory's certificate; "" = the system's CAs.
ca_file = ""
# ldap:// without StartTLS sends passwords in the clear; only for a directory on localhost.
allow_plaintext = false
# Search-then-bind: a service account finds the user under user_base with user_filter.
bind_dn = ""
# First line is the service account's password; the file must have mode 0600.
bind_password_file = ""
user_base = ""
user_filter = "(uid={{username}})"
# Or bind directly as a DN built from the name (no service account), e.g.
# "uid={{username}},ou=people,dc=example,dc=org".
user_dn_template = ""
# Groups: an attribute of the user listing group DNs (Active Directory: "memberOf"), or a search
# under group_base ({{dn}} = the user's DN, {{username}} = the name).
group_attribute = ""
group_base = ""
group_filter = "(|(member={{dn}})(uniqueMember={{dn}})(memberUid={{username}}))"
# Group DNs or cn values: members of admin_groups are administrators; when allowed_groups is
# not empty, only its members (and admins) may sign in, and others are disabled locally.
admin_groups = []
allowed_groups = []
timeout_secs = 10

[oidc]
# Sign-in through an OpenID Connect provider (authorization code + PKCE). The web UI shows
# "Sign in with <display_name>". Register redirect_url with the provider. See docs/auth.md.
enabled = false
issuer = ""
display_name = "single sign-on"
client_id = ""
# First line is the client secret; the file must have mode 0600.
client_secret_file = ""
redirect_url = ""
scopes = ["openid", "profile", "email"]
username_claim = "preferred_username"
groups_claim = "groups"
admin_groups = []
# When not empty, only members of these groups (and admins) may sign in.
allowed_groups = []
# An http:// issuer is refused unless this is set (only for a provider on this host).
allow_http = false
timeout_secs = 10

[log]
# error, warn, info, debug or trace. OPENTRANSCRIBE_LOG takes a full tracing filter.
level = "{level}"
"#,
        data_dir = toml_string(&defaults.data_dir),
        models_dir = toml_string(&defaults.models_dir),
        listen = defaults.server.listen,
        http_listen = defaults.server.http_listen,
        max_upload = defaults.server.max_upload_bytes,
        grace = defaults.server.shutdown_grace_secs,
        header_timeout = defaults.server.header_timeout_secs,
        body_timeout = defaults.server.body_timeout_secs,
        registration = defaults.auth.registration,
        idle = defaults.auth.session_idle_timeout_secs,
        absolute = defaults.auth.session_absolute_timeout_secs,
        max_failures = defaults.auth.login_max_failures,
        ip_failures = defaults.auth.login_ip_max_failures,
        lockout = defaults.auth.login_lockout_secs,
        min_pw = defaults.auth.min_password_length,
        hash_slots = defaults.auth.password_hash_concurrency,
        require_totp = defaults.auth.require_totp,
        totp_issuer = defaults.auth.totp_issuer,
        encrypt = defaults.storage.encrypt_at_rest,
        min_free = defaults.storage.min_free_disk_mb,
        level = defaults.log.level,
        device = defaults.runtime.device,
        device_id = defaults.runtime.device_id,
        threads = defaults.runtime.threads,
        spin = defaults.runtime.spin,
        workers = defaults.jobs.workers,
        jobs_model = defaults.jobs.model,
        int8 = defaults.jobs.int8,
        beam = defaults.jobs.beam_size,
        batch_windows = defaults.jobs.batch_windows,
        lease = defaults.jobs.lease_secs,
        attempts = defaults.jobs.max_attempts,
        history_days = defaults.jobs.history_days,
        match_threshold = defaults.speakers.match_threshold,
        suggest_threshold = defaults.speakers.suggest_threshold,
        watch_dir = defaults.watch.dir,
        watch_user = defaults.watch.user,
        watch_interval = defaults.watch.interval_secs,
        watch_after = defaults.watch.after,
        metrics_allow = defaults.metrics.allow,
        audit_keep_days = defaults.audit.keep_days,
        retention_media_days = defaults.retention.media_days,
        retention_transcript_days = defaults.retention.transcript_days,
        webhook_url = defaults.notify.webhook_url,
        webhook_secret_file = defaults.notify.webhook_secret_file,
        webhook_timeout = defaults.notify.webhook_timeout_secs,
        webhook_attempts = defaults.notify.webhook_max_attempts,
        webhook_history = defaults.notify.webhook_history_days,
        upload_expiry = defaults.uploads.session_expiry_hours,
        recording_idle = defaults.uploads.recording_idle_secs,
        llm_enabled = defaults.llm.enabled,
        llm_base_url = defaults.llm.base_url,
        llm_model = defaults.llm.model,
        llm_key_file = defaults.llm.key_file,
        llm_timeout = defaults.llm.timeout_secs,
        llm_context = defaults.llm.context_tokens,
        llm_max_output = defaults.llm.max_output_tokens,
        llm_summarize_completed = defaults.llm.summarize_completed,
    )
}

fn toml_string(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}
