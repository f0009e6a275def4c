//! Transcripts as users see them: segments, words, speakers, and the export formats.

pub mod analytics;
pub mod docx;
pub mod export;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Word {
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub probability: f32,
    /// Set by diarization; absent from older transcripts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    pub id: usize,
    pub start: f64,
    pub end: f64,
    pub speaker: Option<String>,
    pub text: String,
    pub words: Vec<Word>,
    /// Set once a person changed the text; the words keep the recognised timing.
    #[serde(default)]
    pub edited: bool,
    /// The recognised text before the first edit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_text: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Speaker {
    pub id: String,
    pub label: String,
    pub name: Option<String>,
    /// The voice profile this speaker is assigned to; its name is the speaker's name.
    #[serde(default)]
    pub profile_id: Option<String>,
    /// True cosine similarity of this speaker's voice to the assigned profile.
    #[serde(default)]
    pub similarity: Option<f32>,
    /// A profile that sounds similar but not enough to assign without asking.
    #[serde(default)]
    pub suggestion: Option<Suggestion>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suggestion {
    pub profile_id: String,
    pub name: String,
    /// True cosine similarity.
    pub similarity: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transcript {
    pub language: String,
    pub duration: f64,
    pub speakers: Vec<Speaker>,
    pub segments: Vec<Segment>,
}

impl From<crate::asr::transcribe::Transcript> for Transcript {
    fn from(asr: crate::asr::transcribe::Transcript) -> Self {
        Self {
            language: asr.language,
            duration: asr.duration,
            speakers: Vec::new(),
            segments: asr
                .segments
                .into_iter()
                .enumerate()
                .map(|(id, s)| Segment {
                    id,
                    start: s.start,
                    end: s.end,
                    speaker: None,
                    text: s.text,
                    words: s
                        .words
                        .into_iter()
                        .map(|w| Word {
                            start: w.start,
                            end: w.end,
                            text: w.text,
                            probability: w.probability,
                            speaker: None,
                        })
                        .collect(),
                    edited: false,
                    original_text: None,
                })
                .collect(),
        }
    }
}
