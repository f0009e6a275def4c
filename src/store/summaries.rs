//! LLM summaries of files and each user's prompt templates. A summary run is begun and ended by
//! id: each write checks, inside its transaction, that the file still exists and that the run
//! is still the file's current one, so a run that ends after the file was deleted (or after a
//! newer run replaced it) writes nothing: no summary is revived, and none is left `running` by
//! a superseded run.

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use super::error::Result;
use super::tables::*;
use super::{Store, db_err, encode, read_record};

/// One item of a summary (action item, decision, topic), with the time it was said when the
/// model named one that matches a segment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SummaryItem {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default)]
    pub time: Option<f64>,
}

/// A suggested name for a speaker, with what was said that suggests it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NameSuggestion {
    pub speaker: String,
    pub name: String,
    pub evidence: String,
    pub time: f64,
}

/// A file's summary and the state of the run that makes it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SummaryRecord {
    pub file_id: String,
    pub owner_id: String,
    /// The run that owns this record; only it may write its progress and result.
    pub run_id: String,
    /// `running`, `done` or `error`.
    pub status: String,
    /// `map 2/5`, `reduce`, …
    #[serde(default)]
    pub stage: String,
    #[serde(default)]
    pub progress: f32,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub action_items: Vec<SummaryItem>,
    #[serde(default)]
    pub decisions: Vec<SummaryItem>,
    #[serde(default)]
    pub topics: Vec<SummaryItem>,
    #[serde(default)]
    pub speaker_names: Vec<NameSuggestion>,
    pub model: String,
    /// Parts of the transcript summarised separately (map calls).
    #[serde(default)]
    pub chunks: usize,
    pub created_at: u64,
    #[serde(default)]
    pub finished_at: Option<u64>,
    #[serde(default)]
    pub error: Option<String>,
    /// Who started the run (their prompt templates are used); a run started by the daemon
    /// itself (summaries of completed files) names the file's owner.
    #[serde(default)]
    pub requested_by: Option<String>,
}

/// A user's own prompt templates; `None` uses the default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptTemplates {
    #[serde(default)]
    pub map: Option<String>,
    #[serde(default)]
    pub reduce: Option<String>,
}

impl Store {
    pub fn summary_of(&self, file_id: &str) -> Result<Option<SummaryRecord>> {
        self.get_json(SUMMARIES, file_id)
    }

    /// Starts a run: the record replaces any earlier one, if the file still exists (in the
    /// same transaction). Returns false when the file is gone.
    pub fn begin_summary(&self, record: &SummaryRecord) -> Result<bool> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let files = txn.open_table(FILES).map_err(db_err)?;
            if files
                .get(record.file_id.as_str())
                .map_err(db_err)?
                .is_none()
            {
                return Ok(false);
            }
            let mut summaries = txn.open_table(SUMMARIES).map_err(db_err)?;
            summaries
                .insert(record.file_id.as_str(), encode(record)?.as_slice())
                .map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        Ok(true)
    }

    /// Read-modify-write of the run's record in one transaction, only while the file exists
    /// and `run_id` is still the current run. Returns the record written, or `None` (nothing
    /// written: the file was deleted or a newer run took over).
    pub fn update_summary_run(
        &self,
        file_id: &str,
        run_id: &str,
        change: impl FnOnce(&mut SummaryRecord),
    ) -> Result<Option<SummaryRecord>> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let record = {
            let files = txn.open_table(FILES).map_err(db_err)?;
            if files.get(file_id).map_err(db_err)?.is_none() {
                return Ok(None);
            }
            let mut summaries = txn.open_table(SUMMARIES).map_err(db_err)?;
            let Some(mut record) = read_record::<SummaryRecord>(&summaries, file_id)? else {
                return Ok(None);
            };
            if record.run_id != run_id {
                return Ok(None);
            }
            change(&mut record);
            summaries
                .insert(file_id, encode(&record)?.as_slice())
                .map_err(db_err)?;
            record
        };
        txn.commit().map_err(db_err)?;
        Ok(Some(record))
    }

    /// At start-up no run is in flight: every record still `running` ends in `error`.
    /// The runs left `running` (by the last shutdown, when read at start-up).
    pub fn running_summaries(&self) -> Result<Vec<SummaryRecord>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let summaries = txn.open_table(SUMMARIES).map_err(db_err)?;
        let mut running = Vec::new();
        for entry in summaries.iter().map_err(db_err)? {
            let (_, value) = entry.map_err(db_err)?;
            let record: SummaryRecord = super::decode(value.value())?;
            if record.status == "running" {
                running.push(record);
            }
        }
        Ok(running)
    }

    pub fn interrupt_summaries(&self, now: u64) -> Result<usize> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let count = {
            let mut summaries = txn.open_table(SUMMARIES).map_err(db_err)?;
            let mut stuck = Vec::new();
            for entry in summaries.iter().map_err(db_err)? {
                let (key, value) = entry.map_err(db_err)?;
                let record: SummaryRecord = super::decode(value.value())?;
                if record.status == "running" {
                    stuck.push((key.value().to_owned(), record));
                }
            }
            for (key, mut record) in stuck.iter().cloned() {
                record.status = "error".to_owned();
                record.error = Some("interrupted by a restart of the daemon; run it again".into());
                record.finished_at = Some(now);
                summaries
                    .insert(key.as_str(), encode(&record)?.as_slice())
                    .map_err(db_err)?;
            }
            stuck.len()
        };
        txn.commit().map_err(db_err)?;
        Ok(count)
    }

    pub fn prompt_templates(&self, user_id: &str) -> Result<PromptTemplates> {
        Ok(self.get_json(LLM_PROMPTS, user_id)?.unwrap_or_default())
    }

    /// Sets a user's templates (all defaults removes the record).
    pub fn set_prompt_templates(&self, user_id: &str, templates: &PromptTemplates) -> Result<()> {
        if templates == &PromptTemplates::default() {
            self.remove_where::<PromptTemplates>(LLM_PROMPTS, |key, _| key == user_id)?;
            return Ok(());
        }
        self.put_json(LLM_PROMPTS, user_id, templates)
    }
}

/// The file's summary goes with the file (called from `files::remove_file_in`).
pub(crate) fn forget_file(txn: &redb::WriteTransaction, file_id: &str) -> Result<()> {
    let mut summaries = txn.open_table(SUMMARIES).map_err(db_err)?;
    summaries.remove(file_id).map_err(db_err)?;
    Ok(())
}
