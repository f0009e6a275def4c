//! Voice profiles: per user, a name and a centroid of speaker embeddings that recognises the
//! same person across files. Each file keeps its speakers' embeddings (`speaker_embeddings`), so
//! a speaker can be turned into a profile, assigned, detached or merged later. Every operation
//! is one transaction over the profile, the transcript and the link tables, so a profile's name
//! is the same everywhere it is used. Similarities stored and shown are true cosines.

use std::collections::BTreeMap;

use redb::{ReadableDatabase, ReadableTable, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::error::{Result, StoreError};
use super::tables::*;
use super::{Store, db_err, decode, encode, now_secs, read_record};
use crate::transcript::{Speaker, Suggestion, Transcript};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileRecord {
    pub id: String,
    pub owner_id: String,
    pub name: String,
    /// Mean of the L2-normalised embeddings added so far, itself normalised.
    pub centroid: Vec<f32>,
    /// How many speaker embeddings the centroid averages.
    pub embeddings: u32,
    pub created_at: u64,
    pub updated_at: u64,
}

/// A profile as listed: without its vector, with the number of files it appears in.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileView {
    pub id: String,
    pub name: String,
    pub embeddings: u32,
    pub files: usize,
    pub created_at: u64,
    pub updated_at: u64,
}

/// speaker id → embedding, per file.
pub type SpeakerEmbeddings = BTreeMap<String, Vec<f32>>;

fn pair(a: &str, b: &str) -> String {
    format!("{a}/{b}")
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    crate::diarize::embedding::cosine(a, b)
}

fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// Adds one embedding to a profile's running mean.
fn absorb(profile: &mut ProfileRecord, embedding: &[f32]) {
    if profile.centroid.len() != embedding.len() || profile.embeddings == 0 {
        profile.centroid = normalise(embedding.to_vec());
        profile.embeddings = 1;
        return;
    }
    let n = profile.embeddings as f32;
    let mean: Vec<f32> = profile
        .centroid
        .iter()
        .zip(embedding)
        .map(|(c, e)| (c * n + e) / (n + 1.0))
        .collect();
    profile.centroid = normalise(mean);
    profile.embeddings += 1;
}

fn not_ready() -> StoreError {
    StoreError::TranscriptNotReady("the file has no transcript yet")
}

fn no_voice() -> StoreError {
    StoreError::NoVoice
}

/// The open tables one profile operation needs.
struct Tx<'t> {
    txn: &'t WriteTransaction,
}

impl Tx<'_> {
    fn transcript(&self, file_id: &str) -> Result<Transcript> {
        let table = self.txn.open_table(TRANSCRIPTS).map_err(db_err)?;
        read_record(&table, file_id)?.ok_or_else(not_ready)
    }

    fn save_transcript(&self, file_id: &str, transcript: &Transcript) -> Result<()> {
        let mut table = self.txn.open_table(TRANSCRIPTS).map_err(db_err)?;
        table
            .insert(file_id, encode(transcript)?.as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    fn embeddings(&self, file_id: &str) -> Result<SpeakerEmbeddings> {
        let table = self.txn.open_table(SPEAKER_EMBEDDINGS).map_err(db_err)?;
        Ok(read_record(&table, file_id)?.unwrap_or_default())
    }

    fn save_embeddings(&self, file_id: &str, embeddings: &SpeakerEmbeddings) -> Result<()> {
        let mut table = self.txn.open_table(SPEAKER_EMBEDDINGS).map_err(db_err)?;
        table
            .insert(file_id, encode(embeddings)?.as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    fn profile(&self, owner_id: &str, profile_id: &str) -> Result<ProfileRecord> {
        let table = self.txn.open_table(PROFILES).map_err(db_err)?;
        read_record::<ProfileRecord>(&table, profile_id)?
            .filter(|p| p.owner_id == owner_id)
            .ok_or(StoreError::NotFound("profile"))
    }

    fn save_profile(&self, profile: &ProfileRecord) -> Result<()> {
        let mut table = self.txn.open_table(PROFILES).map_err(db_err)?;
        table
            .insert(profile.id.as_str(), encode(profile)?.as_slice())
            .map_err(db_err)?;
        let mut owners = self.txn.open_table(USER_PROFILES).map_err(db_err)?;
        owners
            .insert(
                pair(&profile.owner_id, &profile.id).as_str(),
                profile.created_at,
            )
            .map_err(db_err)?;
        Ok(())
    }

    /// Keeps `profile_files` in step with the profiles a transcript's speakers use.
    fn relink(
        &self,
        file_id: &str,
        before: &[Option<String>],
        transcript: &Transcript,
    ) -> Result<()> {
        let mut links = self.txn.open_table(PROFILE_FILES).map_err(db_err)?;
        for old in before.iter().flatten() {
            if !transcript
                .speakers
                .iter()
                .any(|s| s.profile_id.as_ref() == Some(old))
            {
                links.remove(pair(old, file_id).as_str()).map_err(db_err)?;
            }
        }
        for speaker in &transcript.speakers {
            if let Some(profile_id) = &speaker.profile_id {
                links
                    .insert(pair(profile_id, file_id).as_str(), now_secs())
                    .map_err(db_err)?;
            }
        }
        Ok(())
    }
}

fn speaker_mut<'a>(transcript: &'a mut Transcript, speaker_id: &str) -> Result<&'a mut Speaker> {
    transcript
        .speakers
        .iter_mut()
        .find(|s| s.id == speaker_id)
        .ok_or(StoreError::NotFound("speaker"))
}

fn profile_ids(transcript: &Transcript) -> Vec<Option<String>> {
    transcript
        .speakers
        .iter()
        .map(|s| s.profile_id.clone())
        .collect()
}

impl Store {
    /// Runs `work` in one write transaction over a file's transcript; saves the transcript and
    /// its profile links when `work` succeeds.
    fn with_transcript<R>(
        &self,
        file_id: &str,
        work: impl FnOnce(&Tx, &mut Transcript) -> Result<R>,
    ) -> Result<(Transcript, R)> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let outcome = {
            let tx = Tx { txn: &txn };
            let mut transcript = tx.transcript(file_id)?;
            let before = profile_ids(&transcript);
            let result = work(&tx, &mut transcript)?;
            tx.save_transcript(file_id, &transcript)?;
            tx.relink(file_id, &before, &transcript)?;
            (transcript, result)
        };
        txn.commit().map_err(db_err)?;
        Ok(outcome)
    }

    pub fn list_profiles(&self, owner_id: &str) -> Result<Vec<ProfileRecord>> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let owners = txn.open_table(USER_PROFILES).map_err(db_err)?;
        let profiles = txn.open_table(PROFILES).map_err(db_err)?;
        let start = format!("{owner_id}/");
        let end = format!("{owner_id}0");
        let mut out = Vec::new();
        for entry in owners.range(start.as_str()..end.as_str()).map_err(db_err)? {
            let (key, _) = entry.map_err(db_err)?;
            if let Some((_, id)) = key.value().split_once('/')
                && let Some(profile) = read_record::<ProfileRecord>(&profiles, id)?
            {
                out.push(profile);
            }
        }
        out.sort_by_key(|p| p.name.to_lowercase());
        Ok(out)
    }

    pub fn profile_views(&self, owner_id: &str) -> Result<Vec<ProfileView>> {
        let profiles = self.list_profiles(owner_id)?;
        let txn = self.db.begin_read().map_err(db_err)?;
        let links = txn.open_table(PROFILE_FILES).map_err(db_err)?;
        let mut out = Vec::new();
        for p in profiles {
            let start = format!("{}/", p.id);
            let end = format!("{}0", p.id);
            let files = links
                .range(start.as_str()..end.as_str())
                .map_err(db_err)?
                .count();
            out.push(ProfileView {
                id: p.id,
                name: p.name,
                embeddings: p.embeddings,
                files,
                created_at: p.created_at,
                updated_at: p.updated_at,
            });
        }
        Ok(out)
    }

    /// A new profile named `name` from a file's speaker; the speaker is assigned to it.
    pub fn create_profile_from_speaker(
        &self,
        owner_id: &str,
        file_id: &str,
        speaker_id: &str,
        name: &str,
    ) -> Result<(Transcript, ProfileRecord)> {
        self.with_transcript(file_id, |tx, transcript| {
            let embedding = tx
                .embeddings(file_id)?
                .remove(speaker_id)
                .ok_or_else(no_voice)?;
            speaker_mut(transcript, speaker_id)?;
            let now = now_secs();
            let mut profile = ProfileRecord {
                id: uuid::Uuid::now_v7().to_string(),
                owner_id: owner_id.to_owned(),
                name: name.to_owned(),
                centroid: Vec::new(),
                embeddings: 0,
                created_at: now,
                updated_at: now,
            };
            absorb(&mut profile, &embedding);
            tx.save_profile(&profile)?;
            let speaker = speaker_mut(transcript, speaker_id)?;
            speaker.profile_id = Some(profile.id.clone());
            speaker.name = Some(profile.name.clone());
            speaker.similarity = Some(cosine(&embedding, &profile.centroid));
            speaker.suggestion = None;
            Ok(profile)
        })
    }

    /// Assigns a file's speaker to one of the owner's profiles; the speaker's voice joins the
    /// profile's centroid.
    pub fn assign_profile(
        &self,
        owner_id: &str,
        file_id: &str,
        speaker_id: &str,
        profile_id: &str,
    ) -> Result<Transcript> {
        self.with_transcript(file_id, |tx, transcript| {
            let mut profile = tx.profile(owner_id, profile_id)?;
            let embedding = tx
                .embeddings(file_id)?
                .remove(speaker_id)
                .ok_or_else(no_voice)?;
            speaker_mut(transcript, speaker_id)?;
            // Two speakers of one file are two people: the other one lets go.
            for other in transcript.speakers.iter_mut() {
                if other.id != speaker_id && other.profile_id.as_deref() == Some(profile_id) {
                    other.profile_id = None;
                    other.similarity = None;
                }
            }
            let similarity = cosine(&embedding, &profile.centroid);
            absorb(&mut profile, &embedding);
            profile.updated_at = now_secs();
            tx.save_profile(&profile)?;
            let speaker = speaker_mut(transcript, speaker_id)?;
            speaker.profile_id = Some(profile.id.clone());
            speaker.name = Some(profile.name.clone());
            speaker.similarity = Some(similarity);
            speaker.suggestion = None;
            Ok(())
        })
        .map(|(t, _)| t)
    }

    /// Unlinks a speaker from its profile; the speaker keeps the name as its own.
    pub fn detach_profile(&self, file_id: &str, speaker_id: &str) -> Result<Transcript> {
        self.with_transcript(file_id, |_, transcript| {
            let speaker = speaker_mut(transcript, speaker_id)?;
            if speaker.profile_id.take().is_none() {
                return Err(StoreError::NotAssigned);
            }
            speaker.similarity = None;
            Ok(())
        })
        .map(|(t, _)| t)
    }

    /// Accepts (assigns) or rejects (forgets) a speaker's profile suggestion.
    pub fn answer_suggestion(
        &self,
        owner_id: &str,
        file_id: &str,
        speaker_id: &str,
        accept: bool,
    ) -> Result<Transcript> {
        let transcript: Transcript = self.transcript_of(file_id)?.ok_or_else(not_ready)?;
        let speaker = transcript
            .speakers
            .iter()
            .find(|s| s.id == speaker_id)
            .ok_or(StoreError::NotFound("speaker"))?;
        let Some(suggestion) = speaker.suggestion.clone() else {
            return Err(StoreError::NoSuggestion);
        };
        if accept {
            self.assign_profile(owner_id, file_id, speaker_id, &suggestion.profile_id)
        } else {
            self.with_transcript(file_id, |_, transcript| {
                speaker_mut(transcript, speaker_id)?.suggestion = None;
                Ok(())
            })
            .map(|(t, _)| t)
        }
    }

    /// Merges speaker `from` into `into`: its segments and words are relabelled, it leaves the
    /// speaker list, and the voice of `into` becomes the mean of both.
    pub fn merge_speakers(&self, file_id: &str, from: &str, into: &str) -> Result<Transcript> {
        if from == into {
            return Err(StoreError::Invalid("cannot merge a speaker into itself"));
        }
        self.with_transcript(file_id, |tx, transcript| {
            speaker_mut(transcript, from)?;
            speaker_mut(transcript, into)?;
            for segment in transcript.segments.iter_mut() {
                if segment.speaker.as_deref() == Some(from) {
                    segment.speaker = Some(into.to_owned());
                }
                for word in segment.words.iter_mut() {
                    if word.speaker.as_deref() == Some(from) {
                        word.speaker = Some(into.to_owned());
                    }
                }
            }
            transcript.speakers.retain(|s| s.id != from);
            let mut embeddings = tx.embeddings(file_id)?;
            if let Some(gone) = embeddings.remove(from) {
                let merged = match embeddings.get(into) {
                    Some(kept) if kept.len() == gone.len() => {
                        normalise(kept.iter().zip(&gone).map(|(a, b)| a + b).collect())
                    }
                    _ => gone,
                };
                embeddings.insert(into.to_owned(), merged);
                tx.save_embeddings(file_id, &embeddings)?;
            }
            Ok(())
        })
        .map(|(t, _)| t)
    }

    /// Renames a profile and, in the same transaction, every speaker assigned to it.
    pub fn rename_profile(
        &self,
        owner_id: &str,
        profile_id: &str,
        name: &str,
    ) -> Result<Vec<String>> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let files = {
            let tx = Tx { txn: &txn };
            let mut profile = tx.profile(owner_id, profile_id)?;
            profile.name = name.to_owned();
            profile.updated_at = now_secs();
            tx.save_profile(&profile)?;
            let files = linked_files(&txn, profile_id)?;
            for file_id in &files {
                if let Ok(mut transcript) = tx.transcript(file_id) {
                    for speaker in transcript.speakers.iter_mut() {
                        if speaker.profile_id.as_deref() == Some(profile_id) {
                            speaker.name = Some(name.to_owned());
                        }
                        if let Some(s) = speaker.suggestion.as_mut()
                            && s.profile_id == profile_id
                        {
                            s.name = name.to_owned();
                        }
                    }
                    tx.save_transcript(file_id, &transcript)?;
                }
            }
            files
        };
        txn.commit().map_err(db_err)?;
        Ok(files)
    }

    /// Deletes a profile; its speakers keep their names but lose the link.
    pub fn delete_profile(&self, owner_id: &str, profile_id: &str) -> Result<Vec<String>> {
        let txn = self.db.begin_write().map_err(db_err)?;
        let files = {
            let tx = Tx { txn: &txn };
            let profile = tx.profile(owner_id, profile_id)?;
            let files = linked_files(&txn, profile_id)?;
            for file_id in &files {
                if let Ok(mut transcript) = tx.transcript(file_id) {
                    for speaker in transcript.speakers.iter_mut() {
                        if speaker.profile_id.as_deref() == Some(profile_id) {
                            speaker.profile_id = None;
                            speaker.similarity = None;
                        }
                        if speaker
                            .suggestion
                            .as_ref()
                            .is_some_and(|s| s.profile_id == profile_id)
                        {
                            speaker.suggestion = None;
                        }
                    }
                    tx.save_transcript(file_id, &transcript)?;
                }
            }
            let mut links = txn.open_table(PROFILE_FILES).map_err(db_err)?;
            for file_id in &files {
                links
                    .remove(pair(profile_id, file_id).as_str())
                    .map_err(db_err)?;
            }
            let mut profiles = txn.open_table(PROFILES).map_err(db_err)?;
            profiles.remove(profile_id).map_err(db_err)?;
            let mut owners = txn.open_table(USER_PROFILES).map_err(db_err)?;
            owners
                .remove(pair(&profile.owner_id, profile_id).as_str())
                .map_err(db_err)?;
            files
        };
        txn.commit().map_err(db_err)?;
        Ok(files)
    }
}

fn linked_files(txn: &WriteTransaction, profile_id: &str) -> Result<Vec<String>> {
    let links = txn.open_table(PROFILE_FILES).map_err(db_err)?;
    let start = format!("{profile_id}/");
    let end = format!("{profile_id}0");
    let mut out = Vec::new();
    for entry in links.range(start.as_str()..end.as_str()).map_err(db_err)? {
        let (key, _) = entry.map_err(db_err)?;
        if let Some((_, file)) = key.value().split_once('/') {
            out.push(file.to_owned());
        }
    }
    Ok(out)
}

/// Matches a new transcript's speakers against the owner's profiles (in place): assigned ones
/// take the profile's name, near ones get a suggestion. Returns nothing to store separately:
/// the links are written with the transcript by [`save_speaker_data`].
pub fn match_speakers(
    transcript: &mut Transcript,
    embeddings: &SpeakerEmbeddings,
    profiles: &[ProfileRecord],
    thresholds: crate::diarize::profiles::MatchThresholds,
) {
    use crate::diarize::profiles::{MatchDecision, match_profiles};
    let order: Vec<usize> = (0..transcript.speakers.len())
        .filter(|&i| embeddings.contains_key(&transcript.speakers[i].id))
        .collect();
    let vectors: Vec<Vec<f32>> = order
        .iter()
        .map(|&i| embeddings[&transcript.speakers[i].id].clone())
        .collect();
    let candidates: Vec<(String, Vec<f32>)> = profiles
        .iter()
        .map(|p| (p.id.clone(), p.centroid.clone()))
        .collect();
    for found in match_profiles(&vectors, &candidates, thresholds) {
        let Some(profile_id) = found.profile_id else {
            continue;
        };
        let Some(profile) = profiles.iter().find(|p| p.id == profile_id) else {
            continue;
        };
        let speaker = &mut transcript.speakers[order[found.speaker]];
        match found.decision {
            MatchDecision::Assigned => {
                speaker.profile_id = Some(profile.id.clone());
                speaker.name = Some(profile.name.clone());
                speaker.similarity = Some(found.cosine);
            }
            MatchDecision::Suggested => {
                speaker.suggestion = Some(Suggestion {
                    profile_id: profile.id.clone(),
                    name: profile.name.clone(),
                    similarity: found.cosine,
                });
            }
            MatchDecision::None => {}
        }
    }
}

/// Inside the transaction that saves a finished job's transcript: its speakers' embeddings and
/// the links of auto-assigned speakers to their profiles.
pub(crate) fn save_speaker_data(
    txn: &WriteTransaction,
    file_id: &str,
    transcript_json: &[u8],
    embeddings_json: Option<&[u8]>,
) -> Result<()> {
    if let Some(bytes) = embeddings_json {
        let mut table = txn.open_table(SPEAKER_EMBEDDINGS).map_err(db_err)?;
        table.insert(file_id, bytes).map_err(db_err)?;
    }
    let transcript: Transcript = decode(transcript_json)?;
    let mut links = txn.open_table(PROFILE_FILES).map_err(db_err)?;
    for speaker in &transcript.speakers {
        if let Some(profile_id) = &speaker.profile_id {
            links
                .insert(pair(profile_id, file_id).as_str(), now_secs())
                .map_err(db_err)?;
        }
    }
    Ok(())
}

/// Inside the transaction that deletes a file: its embeddings and profile links.
pub(crate) fn forget_file(
    txn: &WriteTransaction,
    file_id: &str,
    transcript: Option<&Transcript>,
) -> Result<()> {
    let mut table = txn.open_table(SPEAKER_EMBEDDINGS).map_err(db_err)?;
    table.remove(file_id).map_err(db_err)?;
    if let Some(transcript) = transcript {
        let mut links = txn.open_table(PROFILE_FILES).map_err(db_err)?;
        for speaker in &transcript.speakers {
            if let Some(profile_id) = &speaker.profile_id {
                links
                    .remove(pair(profile_id, file_id).as_str())
                    .map_err(db_err)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(i: usize) -> Vec<f32> {
        let mut v = vec![0.0; 4];
        v[i] = 1.0;
        v
    }

    /// A stored file with two speakers, their embeddings, and one profile.
    fn setup() -> (tempfile::TempDir, Store, ProfileRecord) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb")).unwrap();
        let profile = ProfileRecord {
            id: "p1".into(),
            owner_id: "alice".into(),
            name: "Vera".into(),
            centroid: normalise(vec![1.0, 0.2, 0.0, 0.0]),
            embeddings: 1,
            created_at: 1,
            updated_at: 1,
        };
        let mut transcript = Transcript {
            language: "en".into(),
            duration: 1.0,
            speakers: vec![
                Speaker {
                    id: "S0".into(),
                    label: "S0".into(),
                    ..Speaker::default()
                },
                Speaker {
                    id: "S1".into(),
                    label: "S1".into(),
                    ..Speaker::default()
                },
            ],
            segments: Vec::new(),
        };
        let embeddings: SpeakerEmbeddings =
            [("S0".to_owned(), unit(0)), ("S1".to_owned(), unit(1))].into();
        let thresholds = crate::diarize::profiles::MatchThresholds {
            auto_assign: 0.99,
            suggest: 0.5,
        };
        match_speakers(
            &mut transcript,
            &embeddings,
            std::slice::from_ref(&profile),
            thresholds,
        );
        let txn = store.db.begin_write().unwrap();
        {
            let tx = Tx { txn: &txn };
            tx.save_profile(&profile).unwrap();
            tx.save_transcript("f1", &transcript).unwrap();
            tx.save_embeddings("f1", &embeddings).unwrap();
        }
        txn.commit().unwrap();
        (dir, store, profile)
    }

    #[test]
    fn a_near_voice_is_suggested_and_accepting_assigns_it() {
        let (_dir, store, profile) = setup();
        let t: Transcript = store.transcript_of("f1").unwrap().unwrap();
        let suggestion = t.speakers[0]
            .suggestion
            .clone()
            .expect("S0 is near the profile");
        let expected = cosine(&unit(0), &profile.centroid);
        assert!(
            (suggestion.similarity - expected).abs() < 1e-6,
            "the true cosine"
        );
        assert!(
            t.speakers[0].profile_id.is_none(),
            "below the threshold: not assigned"
        );
        assert!(
            t.speakers[1].suggestion.is_none(),
            "S1 is orthogonal to the profile"
        );

        let t = store.answer_suggestion("alice", "f1", "S0", true).unwrap();
        assert_eq!(t.speakers[0].profile_id.as_deref(), Some("p1"));
        assert_eq!(t.speakers[0].name.as_deref(), Some("Vera"));
        assert!(t.speakers[0].suggestion.is_none());
        let views = store.profile_views("alice").unwrap();
        assert_eq!(views[0].files, 1);
        assert_eq!(
            views[0].embeddings, 2,
            "the accepted voice joined the centroid"
        );
        assert!(matches!(
            store.answer_suggestion("alice", "f1", "S1", true),
            Err(StoreError::NoSuggestion)
        ));
        assert!(
            matches!(
                store.assign_profile("bob", "f1", "S1", "p1"),
                Err(StoreError::NotFound("profile"))
            ),
            "another user's profile does not exist for them"
        );
    }

    #[test]
    fn rejecting_forgets_the_suggestion_only() {
        let (_dir, store, _) = setup();
        let t = store.answer_suggestion("alice", "f1", "S0", false).unwrap();
        assert!(t.speakers[0].suggestion.is_none());
        assert!(t.speakers[0].profile_id.is_none());
        assert_eq!(store.profile_views("alice").unwrap()[0].files, 0);
    }
}
