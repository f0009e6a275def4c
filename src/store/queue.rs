//! The job queue: claim under a lease, heartbeat, finish (the one place that decides a job's
//! outcome), recovery at start-up, cancel, retry, reprocess, history purge.

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};

use super::error::{Result, StoreError};
use super::profiles;
use super::records::{self, FileRecord, FileStatus, JobRecord, JobState};
use super::tables::*;
use super::webhooks;
use super::{Store, db_err, decode, encode, read_record};

/// A fresh queued job for a file. The queue key orders by priority, then creation time.
pub(crate) fn new_job(file: &FileRecord, priority: u8) -> JobRecord {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    JobRecord {
        file_id: file.id.clone(),
        owner_id: file.owner_id.clone(),
        state: JobState::Queued,
        attempts: 0,
        lease_until: 0,
        not_before: 0,
        stage: "queued".to_owned(),
        progress: 0.0,
        created_at: file.created_at,
        updated_at: file.created_at,
        error: None,
        cancel_requested: false,
        queue_key: format!("{priority:03}/{now_ms:020}/{}", file.id),
        priority,
        reprocess: Vec::new(),
        stage_seconds: Vec::new(),
    }
}

/// Queues a new job for a file that ended (retry, reprocess) at the file's own priority, and
/// marks the file queued; inside the caller's transaction.
fn requeue(
    txn: &WriteTransaction,
    jobs: &mut redb::Table<&str, &[u8]>,
    files: &mut redb::Table<&str, &[u8]>,
    file: &mut FileRecord,
    reprocess: Vec<String>,
    now: u64,
) -> Result<()> {
    let mut job = new_job(file, file.options.priority);
    job.reprocess = reprocess;
    job.created_at = now;
    job.updated_at = now;
    let mut queue = txn.open_table(QUEUE).map_err(db_err)?;
    queue
        .insert(job.queue_key.as_str(), file.id.as_str())
        .map_err(db_err)?;
    jobs.insert(file.id.as_str(), encode(&job)?.as_slice())
        .map_err(db_err)?;
    file.status = FileStatus::Queued;
    file.progress = 0.0;
    file.error = None;
    file.updated_at = now;
    files
        .insert(file.id.as_str(), encode(&*file)?.as_slice())
        .map_err(db_err)?;
    Ok(())
}

/// What a running job's worker learns when it reports progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobControl {
    Continue,
    /// Cancelled by the user, or the file was deleted: stop now.
    Stop,
}

/// How a job ended, for [`Store::finish_job`].
#[derive(Debug, Clone)]
pub enum JobOutcome {
    Completed {
        transcript_json: Vec<u8>,
        /// JSON speaker id → embedding, when the file was diarized.
        speaker_embeddings: Option<Vec<u8>>,
        /// JSON waveform peaks.
        waveform: Option<Vec<u8>>,
        /// Seconds per stage, kept on the job record.
        stage_seconds: Vec<(String, f64)>,
    },
    /// A failure that will not go away by retrying (bad media): the file ends in `error`.
    Failed {
        message: String,
    },
    /// A failure worth another attempt (model, runtime, I/O), within the [`RetryPolicy`].
    Retry {
        message: String,
    },
    /// Stopped by the daemon's shutdown, not by the user: runs again after the restart, and
    /// does not count against the attempts.
    Interrupted,
    Cancelled,
}

/// How often a failing job is tried and how long it waits between tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    /// The n-th retry waits n × this.
    pub backoff_base_secs: u64,
}

/// What [`Store::finish_job`] does with a running job: the one place that decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Complete,
    Fail { message: String },
    Requeue { message: String, delay_secs: u64 },
    Cancel,
}

/// The queue's policy in one function: a cancel the user asked for wins over any outcome; a
/// bad-media failure ends the job; a retryable failure is queued again after a backoff that
/// grows with the attempts, until `max_attempts`; a shutdown interruption is queued again at
/// once without using an attempt.
pub fn decide(job: &JobRecord, outcome: &JobOutcome, policy: RetryPolicy) -> Decision {
    if job.cancel_requested {
        return Decision::Cancel;
    }
    match outcome {
        JobOutcome::Completed { .. } => Decision::Complete,
        JobOutcome::Failed { message } => Decision::Fail {
            message: message.clone(),
        },
        JobOutcome::Retry { message } if job.attempts >= policy.max_attempts => Decision::Fail {
            message: message.clone(),
        },
        JobOutcome::Retry { message } => Decision::Requeue {
            message: message.clone(),
            delay_secs: policy.backoff_base_secs * u64::from(job.attempts.max(1)),
        },
        JobOutcome::Interrupted => Decision::Requeue {
            message: "interrupted by shutdown".to_owned(),
            delay_secs: 0,
        },
        JobOutcome::Cancelled => Decision::Cancel,
    }
}

impl Store {
    // ---- jobs ----

    /// Takes the next queued job that may run now: it becomes `running` under a lease, and its
    /// file `processing`, in one transaction.
    pub fn claim_job(&self, now: u64, lease_secs: u64) -> Result<Option<(JobRecord, FileRecord)>> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let claimed = {
            let mut queue = txn.open_table(QUEUE).map_err(db_err)?;
            let mut jobs = txn.open_table(JOBS).map_err(db_err)?;
            let mut files = txn.open_table(FILES).map_err(db_err)?;
            let mut found: Option<(String, JobRecord)> = None;
            let mut stale = Vec::new();
            for entry in queue.iter().map_err(db_err)? {
                let (key, file_id) = entry.map_err(db_err)?;
                let job: Option<JobRecord> = read_record(&jobs, file_id.value())?;
                match job {
                    Some(job) if job.state == JobState::Queued => {
                        if job.not_before <= now {
                            found = Some((key.value().to_owned(), job));
                            break;
                        }
                    }
                    _ => stale.push(key.value().to_owned()),
                }
            }
            for key in &stale {
                queue.remove(key.as_str()).map_err(db_err)?;
            }
            match found {
                None => None,
                Some((key, mut job)) => {
                    queue.remove(key.as_str()).map_err(db_err)?;
                    let file: Option<FileRecord> = read_record(&files, job.file_id.as_str())?;
                    match file {
                        None => {
                            jobs.remove(job.file_id.as_str()).map_err(db_err)?;
                            None
                        }
                        Some(mut file) => {
                            job.set_state(&mut file, JobState::Running);
                            job.attempts += 1;
                            job.lease_until = now + lease_secs;
                            job.stage = "starting".to_owned();
                            job.progress = 0.0;
                            job.updated_at = now;
                            jobs.insert(job.file_id.as_str(), encode(&job)?.as_slice())
                                .map_err(db_err)?;
                            file.progress = 0.0;
                            file.error = None;
                            file.updated_at = now;
                            files
                                .insert(file.id.as_str(), encode(&file)?.as_slice())
                                .map_err(db_err)?;
                            Some((job, file))
                        }
                    }
                }
            }
        };
        txn.commit().map_err(db_err)?;
        Ok(claimed)
    }

    /// Records progress and renews the lease; tells the worker whether to go on.
    pub fn heartbeat(
        &self,
        file_id: &str,
        stage: &str,
        progress: f32,
        now: u64,
        lease_secs: u64,
    ) -> Result<JobControl> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let control = {
            let mut jobs = txn.open_table(JOBS).map_err(db_err)?;
            let job: Option<JobRecord> = read_record(&jobs, file_id)?;
            match job {
                Some(mut job) if job.state == JobState::Running && !job.cancel_requested => {
                    job.stage = stage.to_owned();
                    job.progress = progress;
                    job.lease_until = now + lease_secs;
                    job.updated_at = now;
                    jobs.insert(file_id, encode(&job)?.as_slice())
                        .map_err(db_err)?;
                    let mut files = txn.open_table(FILES).map_err(db_err)?;
                    let file: Option<FileRecord> = read_record(&files, file_id)?;
                    if let Some(mut file) = file {
                        file.progress = progress;
                        file.updated_at = now;
                        files
                            .insert(file_id, encode(&file)?.as_slice())
                            .map_err(db_err)?;
                    }
                    JobControl::Continue
                }
                _ => JobControl::Stop,
            }
        };
        txn.commit().map_err(db_err)?;
        Ok(control)
    }

    /// Ends a running job and updates its file in one transaction. A job that is no longer
    /// running (deleted, or already finished by another attempt) is left alone, so a result is
    /// saved at most once. A job that ends completed or failed gets its webhook deliveries
    /// (the owner's, and the site's when `site_webhook`) in the same transaction.
    pub fn finish_job(
        &self,
        file_id: &str,
        outcome: JobOutcome,
        policy: RetryPolicy,
        site_webhook: bool,
        now: u64,
    ) -> Result<Option<FileStatus>> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let status = {
            let mut jobs = txn.open_table(JOBS).map_err(db_err)?;
            let mut files = txn.open_table(FILES).map_err(db_err)?;
            let job: Option<JobRecord> = read_record(&jobs, file_id)?;
            let file: Option<FileRecord> = read_record(&files, file_id)?;
            match (job, file) {
                (Some(mut job), Some(mut file)) if job.state == JobState::Running => {
                    let decision = decide(&job, &outcome, policy);
                    match (decision, outcome) {
                        (
                            Decision::Complete,
                            JobOutcome::Completed {
                                transcript_json,
                                speaker_embeddings,
                                waveform,
                                stage_seconds,
                            },
                        ) => {
                            job.stage_seconds = stage_seconds;
                            if let Some(waveform) = &waveform {
                                let mut table = txn.open_table(WAVEFORMS).map_err(db_err)?;
                                table.insert(file_id, waveform.as_slice()).map_err(db_err)?;
                            }
                            let mut transcripts = txn.open_table(TRANSCRIPTS).map_err(db_err)?;
                            transcripts
                                .insert(file_id, transcript_json.as_slice())
                                .map_err(db_err)?;
                            profiles::save_speaker_data(
                                &txn,
                                file_id,
                                &transcript_json,
                                speaker_embeddings.as_deref(),
                            )?;
                            if file.duration_secs.is_none() {
                                // A stream whose header has no duration (a browser recording's
                                // live WebM) gets the one decoding found.
                                file.duration_secs =
                                    serde_json::from_slice::<serde_json::Value>(&transcript_json)
                                        .ok()
                                        .and_then(|t| t["duration"].as_f64())
                                        .filter(|d| d.is_finite() && *d > 0.0);
                            }
                            job.set_state(&mut file, JobState::Done);
                            job.stage = "done".to_owned();
                            job.progress = 1.0;
                            file.progress = 1.0;
                            file.error = None;
                        }
                        (Decision::Fail { message }, _) => {
                            job.set_state(&mut file, JobState::Failed);
                            job.error = Some(message.clone());
                            file.error = Some(message);
                        }
                        (
                            Decision::Requeue {
                                message,
                                delay_secs,
                            },
                            _,
                        ) => {
                            job.set_state(&mut file, JobState::Queued);
                            job.error = Some(message);
                            job.not_before = now + delay_secs;
                            job.stage = "queued".to_owned();
                            let mut queue = txn.open_table(QUEUE).map_err(db_err)?;
                            queue
                                .insert(job.queue_key.as_str(), file_id)
                                .map_err(db_err)?;
                            file.progress = 0.0;
                        }
                        (Decision::Cancel, _) => {
                            job.set_state(&mut file, JobState::Cancelled);
                            job.cancel_requested = false;
                        }
                        (Decision::Complete, _) => {
                            return Err(StoreError::Invariant(
                                "a completion decided for an outcome that is not one",
                            ));
                        }
                    }
                    job.updated_at = now;
                    file.updated_at = now;
                    if matches!(job.state, JobState::Done | JobState::Failed) {
                        webhooks::enqueue_job_end(
                            &txn,
                            &file,
                            job.state == JobState::Done,
                            site_webhook,
                            now,
                        )?;
                    }
                    jobs.insert(file_id, encode(&job)?.as_slice())
                        .map_err(db_err)?;
                    files
                        .insert(file_id, encode(&file)?.as_slice())
                        .map_err(db_err)?;
                    Some(file.status)
                }
                _ => None,
            }
        };
        txn.commit().map_err(db_err)?;
        Ok(status)
    }

    /// Puts running jobs whose lease ran out (their worker died) back in the queue.
    pub fn recover_jobs(&self, now: u64) -> Result<usize> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let recovered = {
            let mut jobs = txn.open_table(JOBS).map_err(db_err)?;
            let mut queue = txn.open_table(QUEUE).map_err(db_err)?;
            let mut files = txn.open_table(FILES).map_err(db_err)?;
            let mut expired = Vec::new();
            for entry in jobs.iter().map_err(db_err)? {
                let (_, value) = entry.map_err(db_err)?;
                let job: JobRecord = decode(value.value())?;
                if job.state == JobState::Running && job.lease_until <= now {
                    expired.push(job);
                }
            }
            for mut job in expired.iter().cloned() {
                job.state = if job.cancel_requested {
                    JobState::Cancelled
                } else {
                    JobState::Queued
                };
                job.stage = job.state.to_string();
                job.progress = 0.0;
                job.updated_at = now;
                if job.state == JobState::Queued {
                    queue
                        .insert(job.queue_key.as_str(), job.file_id.as_str())
                        .map_err(db_err)?;
                }
                jobs.insert(job.file_id.as_str(), encode(&job)?.as_slice())
                    .map_err(db_err)?;
                let file: Option<FileRecord> = read_record(&files, job.file_id.as_str())?;
                if let Some(mut file) = file {
                    file.status = job.state.file_status();
                    file.progress = 0.0;
                    files
                        .insert(file.id.as_str(), encode(&file)?.as_slice())
                        .map_err(db_err)?;
                }
            }
            expired.len()
        };
        txn.commit().map_err(db_err)?;
        Ok(recovered)
    }

    /// Cancels a user's queued or running job. Returns the file's new status, `None` if the
    /// file is not the user's, and an error if there is nothing to cancel.
    pub fn cancel_job(
        &self,
        owner_id: &str,
        file_id: &str,
        now: u64,
    ) -> Result<Option<FileStatus>> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let status = {
            let mut jobs = txn.open_table(JOBS).map_err(db_err)?;
            let mut files = txn.open_table(FILES).map_err(db_err)?;
            let file: Option<FileRecord> = read_record(&files, file_id)?;
            let Some(mut file) = file.filter(|f| f.owner_id == owner_id) else {
                return Ok(None);
            };
            let job: Option<JobRecord> = read_record(&jobs, file_id)?;
            let Some(mut job) = job else {
                return Err(StoreError::NotCancellable(
                    "this file has no job to cancel".to_owned(),
                ));
            };
            match job.state {
                JobState::Queued => {
                    let mut queue = txn.open_table(QUEUE).map_err(db_err)?;
                    queue.remove(job.queue_key.as_str()).map_err(db_err)?;
                    job.set_state(&mut file, JobState::Cancelled);
                }
                JobState::Running => {
                    // The worker sees this at its next progress report and stops.
                    job.cancel_requested = true;
                }
                _ => {
                    return Err(StoreError::NotCancellable(format!(
                        "the file is {}, not queued or processing",
                        file.status
                    )));
                }
            }
            job.updated_at = now;
            file.updated_at = now;
            jobs.insert(file_id, encode(&job)?.as_slice())
                .map_err(db_err)?;
            files
                .insert(file_id, encode(&file)?.as_slice())
                .map_err(db_err)?;
            file.status
        };
        txn.commit().map_err(db_err)?;
        Ok(Some(status))
    }

    /// Queues chosen stages of a finished file again with new options (e.g. another speaker
    /// count). `stages` empty runs everything; `["diarize"]` keeps the transcript's text.
    pub fn reprocess_job(
        &self,
        owner_id: &str,
        file_id: &str,
        stages: Vec<String>,
        options: records::UploadOptions,
        now: u64,
    ) -> Result<Option<FileStatus>> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let status = {
            let mut jobs = txn.open_table(JOBS).map_err(db_err)?;
            let mut files = txn.open_table(FILES).map_err(db_err)?;
            let file: Option<FileRecord> = read_record(&files, file_id)?;
            let Some(mut file) = file.filter(|f| f.owner_id == owner_id) else {
                return Ok(None);
            };
            if file.media_deleted_at.is_some() {
                return Err(StoreError::MediaDeleted);
            }
            if matches!(file.status, FileStatus::Queued | FileStatus::Processing) {
                return Err(StoreError::NotRetryable(format!(
                    "the file is {}; wait until it ends",
                    file.status
                )));
            }
            if !stages.is_empty() {
                let transcripts = txn.open_table(TRANSCRIPTS).map_err(db_err)?;
                if transcripts.get(file_id).map_err(db_err)?.is_none() {
                    return Err(StoreError::TranscriptNotReady(
                        "the file has no transcript to relabel; reprocess everything instead",
                    ));
                }
            }
            file.options = options;
            requeue(&txn, &mut jobs, &mut files, &mut file, stages, now)?;
            file.status
        };
        txn.commit().map_err(db_err)?;
        Ok(Some(status))
    }

    /// Queues a failed or cancelled file again.
    pub fn retry_job(&self, owner_id: &str, file_id: &str, now: u64) -> Result<Option<FileStatus>> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let status = {
            let mut jobs = txn.open_table(JOBS).map_err(db_err)?;
            let mut files = txn.open_table(FILES).map_err(db_err)?;
            let file: Option<FileRecord> = read_record(&files, file_id)?;
            let Some(mut file) = file.filter(|f| f.owner_id == owner_id) else {
                return Ok(None);
            };
            if file.media_deleted_at.is_some() {
                return Err(StoreError::MediaDeleted);
            }
            if !matches!(file.status, FileStatus::Error | FileStatus::Cancelled) {
                return Err(StoreError::NotRetryable(format!(
                    "the file is {}; only failed or cancelled files can be retried",
                    file.status
                )));
            }
            requeue(&txn, &mut jobs, &mut files, &mut file, Vec::new(), now)?;
            file.status
        };
        txn.commit().map_err(db_err)?;
        Ok(Some(status))
    }

    /// Removes the records of jobs that ended (`done`, `failed`, `cancelled`) before `cutoff`;
    /// their files keep their status and transcript. Returns how many went.
    pub fn purge_job_history(&self, cutoff: u64) -> Result<usize> {
        self.remove_where(JOBS, |_, job: &JobRecord| {
            job.state.is_final() && job.updated_at < cutoff
        })
    }

    pub fn get_job(&self, file_id: &str) -> Result<Option<JobRecord>> {
        self.get_json(JOBS, file_id)
    }

    pub fn list_jobs(&self) -> Result<Vec<JobRecord>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let jobs = txn.open_table(JOBS).map_err(db_err)?;
        let mut out = Vec::new();
        for entry in jobs.iter().map_err(db_err)? {
            let (_, value) = entry.map_err(db_err)?;
            out.push(decode(value.value())?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(attempts: u32, cancel_requested: bool) -> JobRecord {
        let file = FileRecord {
            id: "f".into(),
            owner_id: "o".into(),
            filename: "a.wav".into(),
            size: 1,
            sha256: "s".into(),
            media_type: "audio/wav".into(),
            status: FileStatus::Processing,
            progress: 0.0,
            created_at: 1,
            updated_at: 1,
            options: records::UploadOptions::default(),
            error: None,
            duration_secs: None,
            container: None,
            codec: None,
            tags: Vec::new(),
            media_deleted_at: None,
        };
        let mut job = new_job(&file, 5);
        job.state = JobState::Running;
        job.attempts = attempts;
        job.cancel_requested = cancel_requested;
        job
    }

    /// The whole retry/attempt/cancel policy, case by case.
    #[test]
    fn one_policy_decides_every_outcome() {
        let policy = RetryPolicy {
            max_attempts: 3,
            backoff_base_secs: 30,
        };
        let retry = || JobOutcome::Retry {
            message: "model failed".into(),
        };
        let requeue = |delay_secs| Decision::Requeue {
            message: "model failed".into(),
            delay_secs,
        };
        assert_eq!(decide(&job(1, false), &retry(), policy), requeue(30));
        assert_eq!(decide(&job(2, false), &retry(), policy), requeue(60));
        assert_eq!(
            decide(&job(3, false), &retry(), policy),
            Decision::Fail {
                message: "model failed".into()
            }
        );
        // A user's cancel wins over every outcome.
        assert_eq!(decide(&job(1, true), &retry(), policy), Decision::Cancel);
        assert_eq!(
            decide(&job(1, true), &JobOutcome::Interrupted, policy),
            Decision::Cancel
        );
        // A shutdown interruption is queued again at once, whatever the attempts.
        assert_eq!(
            decide(&job(3, false), &JobOutcome::Interrupted, policy),
            Decision::Requeue {
                message: "interrupted by shutdown".into(),
                delay_secs: 0
            }
        );
        assert_eq!(
            decide(
                &job(1, false),
                &JobOutcome::Failed {
                    message: "bad media".into()
                },
                policy
            ),
            Decision::Fail {
                message: "bad media".into()
            }
        );
        assert_eq!(
            decide(&job(1, false), &JobOutcome::Cancelled, policy),
            Decision::Cancel
        );
    }
}
