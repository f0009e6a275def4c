//! Webhooks and their durable outbox: each user's webhook, and one delivery record per target
//! for every job that completes or fails, written in the transaction that ends the job.

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::error::Result;
use super::records::FileRecord;
use super::tables::{DELIVERIES, DELIVERY_DUE, USER_DELIVERIES, WEBHOOKS};
use super::{Store, db_err, encode, read_record};

/// A user's webhook. The secret is what deliveries are signed with, so it is kept as given
/// (it cannot be hashed); it is never sent back to a client after the request that set it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookRecord {
    pub url: String,
    pub secret: String,
    pub created_at: u64,
    pub updated_at: u64,
}

/// Where a delivery goes: the file owner's webhook, or the site's (`[notify]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryTarget {
    User,
    Site,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Waiting for its next attempt (or in flight).
    Pending,
    /// A 2xx answer was received.
    Delivered,
    /// Every attempt failed.
    Failed,
    /// The user's webhook was removed before it was delivered.
    Cancelled,
}

/// One try at a delivery: the HTTP status received, or why none was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub at: u64,
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// One notification for one target, from the job's end until its history is purged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// UUIDv7; sent in the payload so a receiver can drop repeats.
    pub id: String,
    pub target: DeliveryTarget,
    pub owner_id: String,
    /// `job.completed` or `job.failed`.
    pub event: String,
    pub file_id: String,
    pub filename: String,
    /// The file's status: `completed` or `error`.
    pub status: String,
    pub error: Option<String>,
    pub occurred_at: u64,
    pub state: DeliveryState,
    pub attempts: Vec<AttemptRecord>,
    /// When the next attempt is due (while pending).
    pub next_attempt_at: u64,
    pub updated_at: u64,
}

/// Waits after the 1st, 2nd, … failed attempt; the last one repeats.
pub const RETRY_SCHEDULE_SECS: [u64; 5] = [30, 120, 600, 3600, 6 * 3600];

/// What an attempt came to, for [`Store::record_delivery_attempt`].
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptResult {
    pub at: u64,
    pub status: Option<u16>,
    pub error: Option<String>,
}

impl AttemptResult {
    fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// A due delivery and where to send it (`None` for the site: the caller holds its URL).
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub delivery: DeliveryRecord,
    pub webhook: Option<WebhookRecord>,
}

fn due_key(at: u64, id: &str) -> String {
    format!("{at:020}/{id}")
}

fn user_delivery_key(owner_id: &str, id: &str) -> String {
    format!("{owner_id}/{id}")
}

/// Writes, inside the transaction that ends a job, one pending delivery per target: the
/// owner's webhook if they have one, and the site's if `site_webhook`. Called only for jobs
/// that end `completed` or `error`.
pub(crate) fn enqueue_job_end(
    txn: &WriteTransaction,
    file: &FileRecord,
    completed: bool,
    site_webhook: bool,
    now: u64,
) -> Result<()> {
    let user_webhook = {
        let webhooks = txn.open_table(WEBHOOKS).map_err(db_err)?;
        read_record::<WebhookRecord>(&webhooks, &file.owner_id)?.is_some()
    };
    let mut targets = Vec::new();
    if user_webhook {
        targets.push(DeliveryTarget::User);
    }
    if site_webhook {
        targets.push(DeliveryTarget::Site);
    }
    if targets.is_empty() {
        return Ok(());
    }
    let mut deliveries = txn.open_table(DELIVERIES).map_err(db_err)?;
    let mut due = txn.open_table(DELIVERY_DUE).map_err(db_err)?;
    let mut by_user = txn.open_table(USER_DELIVERIES).map_err(db_err)?;
    for target in targets {
        let record = DeliveryRecord {
            id: uuid::Uuid::now_v7().to_string(),
            target,
            owner_id: file.owner_id.clone(),
            event: if completed {
                "job.completed"
            } else {
                "job.failed"
            }
            .to_owned(),
            file_id: file.id.clone(),
            filename: file.filename.clone(),
            status: file.status.as_str().to_owned(),
            error: file.error.clone(),
            occurred_at: now,
            state: DeliveryState::Pending,
            attempts: Vec::new(),
            next_attempt_at: now,
            updated_at: now,
        };
        deliveries
            .insert(record.id.as_str(), encode(&record)?.as_slice())
            .map_err(db_err)?;
        due.insert(due_key(now, &record.id).as_str(), record.id.as_str())
            .map_err(db_err)?;
        if target == DeliveryTarget::User {
            by_user
                .insert(user_delivery_key(&file.owner_id, &record.id).as_str(), now)
                .map_err(db_err)?;
        }
    }
    Ok(())
}

impl Store {
    pub fn get_webhook(&self, user_id: &str) -> Result<Option<WebhookRecord>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let table = txn.open_table(WEBHOOKS).map_err(db_err)?;
        read_record(&table, user_id)
    }

    /// Sets a user's webhook URL, and its secret when one is given; without one, an existing
    /// webhook keeps its secret and a new one gets `new_secret`. Returns the record as stored
    /// and whether `new_secret` was used; one transaction, so a racing delete cannot leave a
    /// webhook without a secret.
    pub fn put_webhook(
        &self,
        user_id: &str,
        url: &str,
        secret: Option<&str>,
        new_secret: &str,
        now: u64,
    ) -> Result<(WebhookRecord, bool)> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let stored = {
            let mut table = txn.open_table(WEBHOOKS).map_err(db_err)?;
            let old: Option<WebhookRecord> = read_record(&table, user_id)?;
            let generated = secret.is_none() && old.is_none();
            let secret = match (secret, &old) {
                (Some(given), _) => given.to_owned(),
                (None, Some(old)) => old.secret.clone(),
                (None, None) => new_secret.to_owned(),
            };
            let record = WebhookRecord {
                url: url.to_owned(),
                secret,
                created_at: old.as_ref().map_or(now, |o| o.created_at),
                updated_at: now,
            };
            table
                .insert(user_id, encode(&record)?.as_slice())
                .map_err(db_err)?;
            (record, generated)
        };
        txn.commit().map_err(db_err)?;
        Ok(stored)
    }

    /// Removes a user's webhook and cancels its pending deliveries in one transaction, so a
    /// removed webhook receives nothing more. Returns whether there was one.
    pub fn delete_webhook(&self, user_id: &str, now: u64) -> Result<bool> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let existed = {
            let mut table = txn.open_table(WEBHOOKS).map_err(db_err)?;
            let existed = table.remove(user_id).map_err(db_err)?.is_some();
            let ids = user_delivery_ids(&txn, user_id)?;
            let mut deliveries = txn.open_table(DELIVERIES).map_err(db_err)?;
            let mut due = txn.open_table(DELIVERY_DUE).map_err(db_err)?;
            for id in ids {
                let record: Option<DeliveryRecord> = read_record(&deliveries, &id)?;
                let Some(mut record) = record else { continue };
                if record.state != DeliveryState::Pending {
                    continue;
                }
                due.remove(due_key(record.next_attempt_at, &id).as_str())
                    .map_err(db_err)?;
                record.state = DeliveryState::Cancelled;
                record.updated_at = now;
                deliveries
                    .insert(id.as_str(), encode(&record)?.as_slice())
                    .map_err(db_err)?;
            }
            existed
        };
        txn.commit().map_err(db_err)?;
        Ok(existed)
    }

    /// A user's most recent deliveries, newest first.
    pub fn list_deliveries(&self, user_id: &str, limit: usize) -> Result<Vec<DeliveryRecord>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let index = txn.open_table(USER_DELIVERIES).map_err(db_err)?;
        let deliveries = txn.open_table(DELIVERIES).map_err(db_err)?;
        let (start, end) = (format!("{user_id}/"), format!("{user_id}0"));
        let mut out = Vec::new();
        for entry in index
            .range(start.as_str()..end.as_str())
            .map_err(db_err)?
            .rev()
        {
            if out.len() >= limit {
                break;
            }
            let (key, _) = entry.map_err(db_err)?;
            let Some((_, id)) = key.value().split_once('/') else {
                continue;
            };
            if let Some(record) = read_record::<DeliveryRecord>(&deliveries, id)? {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Takes up to `limit` deliveries due at `now`: each is moved `lease_secs` ahead in the due
    /// index (so it is not taken twice, and is tried again if the daemon dies mid-attempt),
    /// and returned with the user's current webhook. A user delivery whose webhook is gone is
    /// cancelled instead.
    pub fn claim_due_deliveries(
        &self,
        now: u64,
        lease_secs: u64,
        limit: usize,
    ) -> Result<Vec<DueDelivery>> {
        // The delivery task asks twice a second: look first in a read transaction, so an idle
        // daemon never writes (or syncs) for nothing.
        let end = due_key(now, "~");
        {
            let read = self.db.begin_read().map_err(db_err)?;
            let due = read.open_table(DELIVERY_DUE).map_err(db_err)?;
            if due.range(..end.as_str()).map_err(db_err)?.next().is_none() {
                return Ok(Vec::new());
            }
        }
        let txn = self.db.begin_write().map_err(db_err)?;
        let claimed = {
            let mut due = txn.open_table(DELIVERY_DUE).map_err(db_err)?;
            let mut deliveries = txn.open_table(DELIVERIES).map_err(db_err)?;
            let webhooks = txn.open_table(WEBHOOKS).map_err(db_err)?;
            let mut keys = Vec::new();
            for entry in due.range(..end.as_str()).map_err(db_err)? {
                if keys.len() >= limit {
                    break;
                }
                let (key, id) = entry.map_err(db_err)?;
                keys.push((key.value().to_owned(), id.value().to_owned()));
            }
            let mut claimed = Vec::new();
            for (key, id) in keys {
                due.remove(key.as_str()).map_err(db_err)?;
                let record: Option<DeliveryRecord> = read_record(&deliveries, &id)?;
                let Some(mut record) = record else { continue };
                if record.state != DeliveryState::Pending {
                    continue;
                }
                let webhook = match record.target {
                    DeliveryTarget::Site => None,
                    DeliveryTarget::User => {
                        match read_record::<WebhookRecord>(&webhooks, &record.owner_id)? {
                            Some(webhook) => Some(webhook),
                            None => {
                                record.state = DeliveryState::Cancelled;
                                record.updated_at = now;
                                deliveries
                                    .insert(id.as_str(), encode(&record)?.as_slice())
                                    .map_err(db_err)?;
                                continue;
                            }
                        }
                    }
                };
                record.next_attempt_at = now + lease_secs;
                due.insert(due_key(record.next_attempt_at, &id).as_str(), id.as_str())
                    .map_err(db_err)?;
                deliveries
                    .insert(id.as_str(), encode(&record)?.as_slice())
                    .map_err(db_err)?;
                claimed.push(DueDelivery {
                    delivery: record,
                    webhook,
                });
            }
            claimed
        };
        txn.commit().map_err(db_err)?;
        Ok(claimed)
    }

    /// Records one attempt: a 2xx ends the delivery; otherwise it waits its turn in
    /// [`RETRY_SCHEDULE_SECS`] until `max_attempts`. A delivery no longer pending (cancelled
    /// meanwhile) is left as it is. Returns the delivery's new state.
    pub fn record_delivery_attempt(
        &self,
        id: &str,
        result: AttemptResult,
        max_attempts: u32,
    ) -> Result<Option<DeliveryState>> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let state = {
            let mut deliveries = txn.open_table(DELIVERIES).map_err(db_err)?;
            let mut due = txn.open_table(DELIVERY_DUE).map_err(db_err)?;
            let record: Option<DeliveryRecord> = read_record(&deliveries, id)?;
            match record {
                Some(mut record) if record.state == DeliveryState::Pending => {
                    due.remove(due_key(record.next_attempt_at, id).as_str())
                        .map_err(db_err)?;
                    let succeeded = result.succeeded();
                    let now = result.at;
                    record.attempts.push(AttemptRecord {
                        at: result.at,
                        status: result.status,
                        error: result.error,
                    });
                    record.updated_at = now;
                    let tries = record.attempts.len();
                    if succeeded {
                        record.state = DeliveryState::Delivered;
                    } else if tries >= max_attempts as usize {
                        record.state = DeliveryState::Failed;
                    } else {
                        let wait =
                            RETRY_SCHEDULE_SECS[(tries - 1).min(RETRY_SCHEDULE_SECS.len() - 1)];
                        record.next_attempt_at = now + wait;
                        due.insert(due_key(record.next_attempt_at, id).as_str(), id)
                            .map_err(db_err)?;
                    }
                    deliveries
                        .insert(id, encode(&record)?.as_slice())
                        .map_err(db_err)?;
                    Some(record.state)
                }
                Some(record) => Some(record.state),
                None => None,
            }
        };
        txn.commit().map_err(db_err)?;
        Ok(state)
    }

    /// Removes delivery records that ended (delivered, failed, cancelled) before `cutoff`.
    pub fn purge_deliveries(&self, cutoff: u64) -> Result<usize> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let removed = {
            let mut deliveries = txn.open_table(DELIVERIES).map_err(db_err)?;
            let mut by_user = txn.open_table(USER_DELIVERIES).map_err(db_err)?;
            let mut doomed = Vec::new();
            for entry in deliveries.iter().map_err(db_err)? {
                let (_, value) = entry.map_err(db_err)?;
                let record: DeliveryRecord = super::decode(value.value())?;
                if record.state != DeliveryState::Pending && record.updated_at < cutoff {
                    doomed.push(record);
                }
            }
            for record in &doomed {
                deliveries.remove(record.id.as_str()).map_err(db_err)?;
                by_user
                    .remove(user_delivery_key(&record.owner_id, &record.id).as_str())
                    .map_err(db_err)?;
            }
            doomed.len()
        };
        txn.commit().map_err(db_err)?;
        Ok(removed)
    }
}

fn user_delivery_ids(txn: &WriteTransaction, user_id: &str) -> Result<Vec<String>> {
    let index = txn.open_table(USER_DELIVERIES).map_err(db_err)?;
    let (start, end) = (format!("{user_id}/"), format!("{user_id}0"));
    let mut ids = Vec::new();
    for entry in index.range(start.as_str()..end.as_str()).map_err(db_err)? {
        let (key, _) = entry.map_err(db_err)?;
        if let Some((_, id)) = key.value().split_once('/') {
            ids.push(id.to_owned());
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::{FileStatus, UploadOptions};
    use crate::store::{JobOutcome, RetryPolicy};

    fn file(id: &str, owner: &str) -> FileRecord {
        FileRecord {
            id: id.to_owned(),
            owner_id: owner.to_owned(),
            filename: format!("{id}.wav"),
            size: 1,
            sha256: format!("sha-{id}"),
            media_type: "audio/wav".to_owned(),
            status: FileStatus::Queued,
            progress: 0.0,
            created_at: 1,
            updated_at: 1,
            options: UploadOptions::default(),
            error: None,
            duration_secs: None,
            container: None,
            codec: None,
            tags: Vec::new(),
            media_deleted_at: None,
        }
    }

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 1,
        backoff_base_secs: 30,
    };

    fn failed(status: u16, at: u64) -> AttemptResult {
        AttemptResult {
            at,
            status: Some(status),
            error: None,
        }
    }

    #[test]
    fn a_finished_job_writes_one_delivery_per_target_with_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        store
            .put_webhook(
                "alice",
                "http://127.0.0.1:9/h",
                Some("0123456789abcdef"),
                "x",
                5,
            )
            .unwrap();
        for id in ["a1", "a2"] {
            store.insert_file(&file(id, "alice")).unwrap();
        }
        store.insert_file(&file("b1", "bob")).unwrap();
        for _ in 0..3 {
            store.claim_job(10, 60).unwrap().unwrap();
        }
        let failure = |m: &str| JobOutcome::Failed { message: m.into() };
        // A user webhook only: alice's failure is queued, bob (no webhook) gets nothing.
        store
            .finish_job("a1", failure("bad"), POLICY, false, 100)
            .unwrap();
        store
            .finish_job("b1", failure("bad"), POLICY, false, 100)
            .unwrap();
        // With the site webhook on, alice's second file goes to both.
        store
            .finish_job("a2", failure("worse"), POLICY, true, 101)
            .unwrap();
        // A job that is no longer running writes nothing more.
        store
            .finish_job("a2", failure("again"), POLICY, true, 102)
            .unwrap();
        let listed = store.list_deliveries("alice", 10).unwrap();
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert_eq!(listed[0].file_id, "a2");
        assert_eq!(listed[0].event, "job.failed");
        assert_eq!(listed[0].status, "error");
        assert_eq!(listed[0].error.as_deref(), Some("worse"));
        assert!(store.list_deliveries("bob", 10).unwrap().is_empty());
        let due = store.claim_due_deliveries(101, 60, 10).unwrap();
        let mut targets: Vec<_> = due
            .iter()
            .map(|d| (d.delivery.file_id.clone(), d.delivery.target))
            .collect();
        targets.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(targets.len(), 3, "{targets:?}");
        assert!(targets.contains(&("a2".to_owned(), DeliveryTarget::Site)));
        // Claimed deliveries are leased: not handed out again until the lease ends.
        assert!(store.claim_due_deliveries(150, 60, 10).unwrap().is_empty());
        assert_eq!(store.claim_due_deliveries(161, 60, 10).unwrap().len(), 3);
    }

    #[test]
    fn retries_follow_the_schedule_then_give_up_and_delete_cancels() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        store
            .put_webhook("alice", "http://127.0.0.1:9/h", None, "generated-secret", 5)
            .unwrap();
        for id in ["f1", "f2"] {
            store.insert_file(&file(id, "alice")).unwrap();
            store.claim_job(10, 60).unwrap().unwrap();
            store
                .finish_job(id, JobOutcome::Cancelled, POLICY, false, 20)
                .unwrap();
        }
        // Cancelled jobs notify nobody.
        assert!(store.list_deliveries("alice", 10).unwrap().is_empty());
        store.retry_job("alice", "f1", 30).unwrap();
        store.claim_job(40, 60).unwrap().unwrap();
        store
            .finish_job(
                "f1",
                JobOutcome::Failed {
                    message: "m".into(),
                },
                POLICY,
                false,
                100,
            )
            .unwrap();
        let id = store.list_deliveries("alice", 1).unwrap()[0].id.clone();
        let mut now = 100;
        for (attempt, wait) in RETRY_SCHEDULE_SECS.iter().take(3).enumerate() {
            let due = store.claim_due_deliveries(now, 60, 10).unwrap();
            assert_eq!(due.len(), 1, "attempt {attempt}");
            assert_eq!(due[0].webhook.as_ref().unwrap().secret, "generated-secret");
            let state = store
                .record_delivery_attempt(&id, failed(500, now), 4)
                .unwrap();
            assert_eq!(state, Some(DeliveryState::Pending));
            assert!(
                store
                    .claim_due_deliveries(now + wait - 1, 60, 10)
                    .unwrap()
                    .is_empty()
            );
            now += wait;
        }
        store.claim_due_deliveries(now, 60, 10).unwrap();
        let state = store
            .record_delivery_attempt(&id, failed(502, now), 4)
            .unwrap();
        assert_eq!(state, Some(DeliveryState::Failed));
        assert_eq!(
            store.list_deliveries("alice", 1).unwrap()[0].attempts.len(),
            4
        );
        // A pending delivery is cancelled with its webhook, and a late answer changes nothing.
        store.retry_job("alice", "f2", now).unwrap();
        store.claim_job(now, 60).unwrap().unwrap();
        store
            .finish_job(
                "f2",
                JobOutcome::Failed {
                    message: "m".into(),
                },
                POLICY,
                false,
                now,
            )
            .unwrap();
        let pending = store.claim_due_deliveries(now, 60, 10).unwrap();
        assert_eq!(pending.len(), 1);
        assert!(store.delete_webhook("alice", now).unwrap());
        let late = store
            .record_delivery_attempt(&pending[0].delivery.id, failed(200, now), 4)
            .unwrap();
        assert_eq!(late, Some(DeliveryState::Cancelled));
        assert!(
            store
                .claim_due_deliveries(now + 86_400, 60, 10)
                .unwrap()
                .is_empty()
        );
        // Ended deliveries are purged after their history time, pending ones never.
        assert_eq!(store.purge_deliveries(now + 1).unwrap(), 2);
        assert!(store.list_deliveries("alice", 10).unwrap().is_empty());
    }
}
