//! The job runner: worker threads take queued jobs from redb under a lease, run the pipeline,
//! report progress (renewing the lease), and save the result in one transaction. Jobs whose
//! worker died are taken again after their lease expires; at start-up, all of them.

use std::ops::ControlFlow;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::blobs::BlobStore;
use crate::config::Config;
use crate::pipeline::{BlobSource, Engine, FileOptions, PipelineError, Stage, process_media};
use crate::store::records::{FileRecord, FileStatus, JobRecord};
use crate::store::{JobControl, JobOutcome, RetryPolicy, Store};

/// Something that happened to a user's file, for WebSocket clients.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FileEvent {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip)]
    pub owner_id: String,
    pub file_id: String,
    pub status: String,
    pub stage: String,
    pub progress: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl FileEvent {
    fn of(kind: &'static str, file: &FileRecord, status: &str, stage: &str, progress: f32) -> Self {
        FileEvent {
            kind,
            owner_id: file.owner_id.clone(),
            file_id: file.id.clone(),
            status: status.to_owned(),
            stage: stage.to_owned(),
            progress,
            error: None,
        }
    }

    /// A new file with its job queued.
    pub fn created(file: &FileRecord) -> Self {
        Self::of("file.created", file, file.status.as_str(), "queued", 0.0)
    }

    /// The file and its data are gone.
    pub fn deleted(file: &FileRecord) -> Self {
        Self::of("file.deleted", file, "deleted", "deleted", 0.0)
    }

    /// The transcript or speakers changed (`kind` names what), not the file's status.
    pub fn edited(kind: &'static str, file: &FileRecord) -> Self {
        Self::of(kind, file, file.status.as_str(), "edited", file.progress)
    }

    /// The file's job was queued again (retry, reprocess) and now has `status`.
    pub fn requeued(file: &FileRecord, status: &str) -> Self {
        Self::of("file.status", file, status, "queued", 0.0)
    }

    /// A cancel was asked for; `status` is what the file has now.
    pub fn cancelling(owner_id: &str, file_id: &str, status: &str) -> Self {
        FileEvent {
            kind: "file.status",
            owner_id: owner_id.to_owned(),
            file_id: file_id.to_owned(),
            status: status.to_owned(),
            stage: "cancelling".to_owned(),
            progress: 0.0,
            error: None,
        }
    }

    /// A job ended (or went back to the queue): the event's kind follows from the file's new
    /// status alone, `file.completed`, `file.error`, or `file.status` (queued, cancelled).
    pub fn finished(file: &FileRecord, status: FileStatus, error: Option<String>) -> Self {
        let kind = match status {
            FileStatus::Completed => "file.completed",
            FileStatus::Error => "file.error",
            _ => "file.status",
        };
        let progress = if status == FileStatus::Completed {
            1.0
        } else {
            0.0
        };
        FileEvent {
            error: (status == FileStatus::Error).then_some(error).flatten(),
            ..Self::of(kind, file, status.as_str(), status.as_str(), progress)
        }
    }

    /// A running job's progress through its stages.
    pub fn progress(file: &FileRecord, stage: &str, fraction: f32) -> Self {
        Self::of("file.status", file, "processing", stage, fraction)
    }
}

/// Wakes idle workers when a job is queued, so they need not poll quickly.
#[derive(Debug, Default)]
pub struct Wake {
    generation: Mutex<u64>,
    signal: Condvar,
}

impl Wake {
    pub fn notify(&self) {
        let mut generation = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        *generation += 1;
        self.signal.notify_all();
    }

    fn wait(&self, timeout: Duration) {
        let generation = self.generation.lock().unwrap_or_else(|e| e.into_inner());
        let seen = *generation;
        let _ = self
            .signal
            .wait_timeout_while(generation, timeout, |g| *g == seen);
    }
}

/// What the worker threads share with the rest of the daemon.
#[derive(Clone)]
pub struct Jobs {
    pub events: broadcast::Sender<FileEvent>,
    pub wake: Arc<Wake>,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs").finish_non_exhaustive()
    }
}

impl Default for Jobs {
    fn default() -> Self {
        Self::new()
    }
}

impl Jobs {
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            events,
            wake: Arc::new(Wake::default()),
        }
    }

    pub fn publish(&self, event: FileEvent) {
        // No subscriber is not an error.
        let _ = self.events.send(event);
    }
}

/// Starts the configured number of worker threads; they stop when `shutdown` is cancelled.
pub fn spawn_workers(
    config: Arc<Config>,
    store: Store,
    blobs: BlobStore,
    jobs: Jobs,
    clock: Arc<dyn crate::clock::Clock>,
    shutdown: CancellationToken,
) -> Vec<std::thread::JoinHandle<()>> {
    match store.recover_jobs(u64::MAX) {
        Ok(0) => {}
        Ok(n) => tracing::info!(jobs = n, "requeued jobs interrupted by the last shutdown"),
        Err(e) => tracing::error!(error = %e, "cannot recover interrupted jobs"),
    }
    (0..config.jobs.workers)
        .filter_map(|index| {
            let worker = Worker {
                config: config.clone(),
                store: store.clone(),
                blobs: blobs.clone(),
                jobs: jobs.clone(),
                clock: clock.clone(),
                shutdown: shutdown.clone(),
                engine: None,
                stage_seconds: Vec::new(),
                paused_for_disk: false,
            };
            std::thread::Builder::new()
                .name(format!("transcribe-{index}"))
                .spawn(move || worker.run())
                .map_err(|e| tracing::error!(error = %e, "cannot start a worker thread"))
                .ok()
        })
        .collect()
}

struct Worker {
    config: Arc<Config>,
    store: Store,
    blobs: BlobStore,
    jobs: Jobs,
    clock: Arc<dyn crate::clock::Clock>,
    shutdown: CancellationToken,
    engine: Option<Engine>,
    /// Seconds each stage of the current job took, in order.
    stage_seconds: Vec<(String, f64)>,
    /// Set while jobs wait for disk space (logged once each way).
    paused_for_disk: bool,
}

/// The n-th retry of a failing job waits n × this.
const RETRY_BACKOFF_SECS: u64 = 30;

/// How often progress is written to redb (and the lease renewed) at most.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

impl Worker {
    fn run(mut self) {
        while !self.shutdown.is_cancelled() {
            // Expired leases of other workers (a worker thread that panicked) are retaken.
            if let Err(e) = self.store.recover_jobs(self.clock.now_secs()) {
                tracing::warn!(error = %e, "lease recovery failed");
            }
            // A job writes scratch audio and then its results: with the disk below the
            // configured floor, queued jobs wait (and resume by themselves once space is back)
            // rather than fail half-way.
            let floor = self
                .config
                .storage
                .min_free_disk_mb
                .saturating_mul(1024 * 1024);
            if let Some(free) = crate::fsutil::free_disk_bytes(&self.config.data_dir)
                && free < floor
            {
                if !self.paused_for_disk {
                    tracing::warn!(
                        free_mb = free / (1024 * 1024),
                        "disk almost full: jobs paused until space is freed"
                    );
                    self.paused_for_disk = true;
                }
                self.jobs.wake.wait(Duration::from_secs(2));
                continue;
            }
            if self.paused_for_disk {
                tracing::info!("disk space is back: jobs resume");
                self.paused_for_disk = false;
            }
            match self
                .store
                .claim_job(self.clock.now_secs(), self.config.jobs.lease_secs)
            {
                Ok(Some((job, file))) => self.process(job, file),
                Ok(None) => self.jobs.wake.wait(Duration::from_secs(2)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot take a job");
                    self.jobs.wake.wait(Duration::from_secs(5));
                }
            }
        }
    }

    fn event(
        &self,
        kind: &'static str,
        file: &FileRecord,
        status: &str,
        stage: &str,
        progress: f32,
    ) {
        self.jobs.publish(FileEvent {
            kind,
            owner_id: file.owner_id.clone(),
            file_id: file.id.clone(),
            status: status.to_owned(),
            stage: stage.to_owned(),
            progress,
            error: None,
        });
    }

    fn process(&mut self, job: JobRecord, file: FileRecord) {
        let started = Instant::now();
        tracing::info!(file_id = %file.id, attempt = job.attempts, "job started");
        self.event("file.status", &file, "processing", "starting", 0.0);
        let outcome = self.run_pipeline(&file, &job.reprocess);
        let (outcome, error) = match outcome {
            Ok((transcript, embeddings, waveform)) => match serde_json::to_vec(&transcript) {
                Ok(json) => (
                    JobOutcome::Completed {
                        transcript_json: json,
                        speaker_embeddings: (!embeddings.is_empty())
                            .then(|| serde_json::to_vec(&embeddings).ok())
                            .flatten(),
                        waveform: serde_json::to_vec(&waveform).ok(),
                        stage_seconds: std::mem::take(&mut self.stage_seconds),
                    },
                    None,
                ),
                Err(e) => (
                    JobOutcome::Failed {
                        message: format!("cannot store the transcript: {e}"),
                    },
                    Some(e.to_string()),
                ),
            },
            Err(PipelineError::Cancelled) if self.shutdown.is_cancelled() => (
                // Interrupted by shutdown, not by the user: run again after restart.
                JobOutcome::Interrupted,
                None,
            ),
            Err(PipelineError::Cancelled) => (JobOutcome::Cancelled, None),
            Err(error @ PipelineError::Media(_)) => {
                let message = format!("this file cannot be decoded: {error}");
                (
                    JobOutcome::Failed {
                        message: message.clone(),
                    },
                    Some(message),
                )
            }
            Err(error) => {
                let message = error.to_string();
                tracing::warn!(file_id = %file.id, error = %message, "job failed; will retry");
                if matches!(
                    error,
                    PipelineError::Model { .. } | PipelineError::Runtime(_)
                ) {
                    self.engine = None;
                }
                (
                    JobOutcome::Retry {
                        message: message.clone(),
                    },
                    Some(message),
                )
            }
        };
        match self.store.finish_job(
            &file.id,
            outcome,
            RetryPolicy {
                max_attempts: self.config.jobs.max_attempts,
                backoff_base_secs: RETRY_BACKOFF_SECS,
            },
            !self.config.notify.webhook_url.is_empty(),
            self.clock.now_secs(),
        ) {
            Ok(Some(status)) => {
                self.jobs.publish(FileEvent::finished(&file, status, error));
                crate::metrics::METRICS.job_finished(
                    status.as_str(),
                    file.duration_secs,
                    started.elapsed().as_secs_f64(),
                );
                tracing::info!(
                    file_id = %file.id,
                    %status,
                    seconds = started.elapsed().as_secs_f64(),
                    "job finished"
                );
            }
            Ok(None) => tracing::info!(file_id = %file.id, "job ended after its file was deleted"),
            Err(e) => {
                tracing::error!(file_id = %file.id, error = %e, "cannot save the job's result")
            }
        }
    }

    /// Runs the stages of one file: decode, VAD, transcription, diarization, then matching of
    /// its speakers against the owner's voice profiles. Returns the transcript and the speakers'
    /// embeddings (saved with it, for profile operations later).
    fn run_pipeline(
        &mut self,
        file: &FileRecord,
        reprocess: &[String],
    ) -> Result<
        (
            crate::transcript::Transcript,
            crate::store::profiles::SpeakerEmbeddings,
            crate::media::waveform::Waveform,
        ),
        PipelineError,
    > {
        // The file's own model, else the configured one; a worker keeps one loaded and swaps
        // it when a file asks for another.
        let model = file
            .options
            .model
            .clone()
            .unwrap_or_else(|| self.config.jobs.model.clone());
        let started = Instant::now();
        match self.engine.as_mut() {
            None => {
                let loaded = Engine::load(&self.config, &model, self.config.jobs.int8)?;
                crate::metrics::METRICS.model_load(&model, started.elapsed().as_secs_f64());
                self.engine = Some(loaded);
            }
            Some(engine) => {
                if engine.use_asr_model(&self.config, &model, self.config.jobs.int8)? {
                    crate::metrics::METRICS.model_load(&model, started.elapsed().as_secs_f64());
                }
            }
        }
        let Some(engine) = self.engine.as_mut() else {
            return Err(PipelineError::Cancelled);
        };
        let blobs = self.blobs.clone();
        let sha = file.sha256.clone();
        let mut opener = || -> Result<Box<dyn symphonia::core::io::MediaSource>, PipelineError> {
            let reader = blobs
                .open_read(&sha)
                .map_err(|e| PipelineError::Scratch(std::io::Error::other(e.to_string())))?;
            Ok(Box::new(BlobSource::new(reader)))
        };
        let options = FileOptions {
            model,
            language: file.options.language.clone(),
            translate: file.options.translate,
            quantized: self.config.jobs.int8,
            no_vad: false,
            beam_size: self.config.jobs.beam_size,
            batch_windows: crate::pipeline::batch_windows_for(&self.config),
            initial_prompt: None,
            hotwords: None,
            diarize: file.options.diarize,
            num_speakers: file.options.num_speakers.map(|n| n as usize),
            min_speakers: file.options.min_speakers.map(|n| n as usize),
            max_speakers: file.options.max_speakers.map(|n| n as usize),
        };
        let store = self.store.clone();
        let jobs = self.jobs.clone();
        let shutdown = self.shutdown.clone();
        let lease = self.config.jobs.lease_secs;
        let clock = self.clock.clone();
        let mut last_report = Instant::now() - HEARTBEAT_EVERY;
        let mut last_stage = "";
        let mut stage_started = Instant::now();
        let mut stage_log: Vec<(String, f64)> = Vec::new();
        let mut progress = |stage: Stage| -> ControlFlow<()> {
            if shutdown.is_cancelled() {
                return ControlFlow::Break(());
            }
            // Decoding is cheap and transcription the bulk of the work: weigh them 10 / 90.
            let (name, fraction) = match stage {
                Stage::Decode(f) => ("decode", 0.1 * f),
                Stage::Transcribe(f) => ("transcribe", 0.1 + 0.75 * f),
                Stage::Diarize(f) => ("diarize", 0.85 + 0.15 * f),
            };
            if last_report.elapsed() < HEARTBEAT_EVERY && name == last_stage {
                return ControlFlow::Continue(());
            }
            if name != last_stage {
                if !last_stage.is_empty() {
                    let secs = stage_started.elapsed().as_secs_f64();
                    crate::metrics::METRICS.stage(last_stage, secs);
                    stage_log.push((last_stage.to_owned(), secs));
                }
                stage_started = Instant::now();
            }
            last_report = Instant::now();
            last_stage = name;
            match store.heartbeat(&file.id, name, fraction, clock.now_secs(), lease) {
                Ok(JobControl::Continue) => {
                    jobs.publish(FileEvent::progress(file, name, fraction));
                    ControlFlow::Continue(())
                }
                Ok(JobControl::Stop) => ControlFlow::Break(()),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot record progress");
                    ControlFlow::Continue(())
                }
            }
        };
        let processed = if reprocess.iter().any(|s| s == "diarize") {
            let existing: crate::transcript::Transcript = self
                .store
                .transcript_of(&file.id)
                .map_err(|e| PipelineError::Scratch(std::io::Error::other(e.to_string())))?
                .ok_or_else(|| {
                    PipelineError::Scratch(std::io::Error::other("no transcript to relabel"))
                })?;
            crate::pipeline::rediarize_media(
                engine,
                &mut opener,
                existing,
                &options,
                &mut progress,
            )?
        } else {
            process_media(engine, &mut opener, &options, &mut progress)?
        };
        if !last_stage.is_empty() {
            let secs = stage_started.elapsed().as_secs_f64();
            crate::metrics::METRICS.stage(last_stage, secs);
            stage_log.push((last_stage.to_owned(), secs));
        }
        let mut transcript = processed.transcript;
        let embeddings: crate::store::profiles::SpeakerEmbeddings = processed
            .diarization
            .speakers
            .iter()
            .map(|s| (s.id.clone(), s.centroid.clone()))
            .collect();
        if !embeddings.is_empty() {
            let matching = Instant::now();
            match self.store.list_profiles(&file.owner_id) {
                Ok(profiles) if !profiles.is_empty() => {
                    let thresholds = crate::diarize::profiles::MatchThresholds {
                        auto_assign: self.config.speakers.match_threshold,
                        suggest: self.config.speakers.suggest_threshold,
                    };
                    crate::store::profiles::match_speakers(
                        &mut transcript,
                        &embeddings,
                        &profiles,
                        thresholds,
                    );
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read voice profiles; speakers stay unmatched")
                }
            }
            let secs = matching.elapsed().as_secs_f64();
            crate::metrics::METRICS.stage("match", secs);
            stage_log.push(("match".to_owned(), secs));
        }
        self.stage_seconds = stage_log;
        Ok((transcript, embeddings, processed.waveform))
    }
}
