//! Conversation analytics of one transcript: talk time and share per speaker, words, pace,
//! turns, interruptions, questions, and how much of the recording is silence.
//!
//! Definitions (documented for users in the API reference):
//! - talk time: the union of a speaker's segment intervals, in seconds;
//! - a turn: a maximal run of consecutive segments by the same speaker;
//! - an interruption: a turn that starts before the previous speaker's last segment ended
//!   (overlap), counted for the speaker who cut in;
//! - a question: a segment whose text ends with `?`;
//! - silence ratio: the part of the duration covered by no segment.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Transcript;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpeakerStats {
    /// Speaker id, or `unknown` for segments without a speaker.
    pub speaker: String,
    pub name: Option<String>,
    pub talk_time: f64,
    /// Share of all talk time, 0..1.
    pub share: f64,
    pub words: usize,
    pub words_per_minute: f64,
    pub turns: usize,
    pub interruptions: usize,
    pub questions: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analytics {
    pub duration: f64,
    pub talk_time: f64,
    pub words: usize,
    pub words_per_minute: f64,
    pub turns: usize,
    pub interruptions: usize,
    pub questions: usize,
    pub silence_ratio: f64,
    pub speakers: Vec<SpeakerStats>,
}

/// Length of the union of intervals.
fn covered(mut intervals: Vec<(f64, f64)>) -> f64 {
    intervals.retain(|(s, e)| e > s);
    intervals.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut total = 0.0;
    let mut current: Option<(f64, f64)> = None;
    for (start, end) in intervals {
        match current {
            Some((s, e)) if start <= e => current = Some((s, e.max(end))),
            Some((s, e)) => {
                total += e - s;
                current = Some((start, end));
            }
            None => current = Some((start, end)),
        }
    }
    if let Some((s, e)) = current {
        total += e - s;
    }
    total
}

fn word_count(text: &str) -> usize {
    text.split_whitespace()
        .filter(|w| w.chars().any(char::is_alphanumeric))
        .count()
}

fn per_minute(words: usize, seconds: f64) -> f64 {
    if seconds > 0.0 {
        words as f64 * 60.0 / seconds
    } else {
        0.0
    }
}

pub fn analyze(transcript: &Transcript) -> Analytics {
    let mut segments: Vec<&super::Segment> = transcript.segments.iter().collect();
    segments.sort_by(|a, b| a.start.total_cmp(&b.start));
    let key = |s: &super::Segment| s.speaker.clone().unwrap_or_else(|| "unknown".to_owned());

    let mut intervals: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut stats: BTreeMap<String, SpeakerStats> = BTreeMap::new();
    let mut previous: Option<(String, f64)> = None; // speaker of the last turn, its end
    let mut turns = 0;
    let mut interruptions = 0;
    let mut questions = 0;
    let mut words = 0;
    for segment in &segments {
        let speaker = key(segment);
        let entry = stats
            .entry(speaker.clone())
            .or_insert_with(|| SpeakerStats {
                speaker: speaker.clone(),
                name: transcript
                    .speakers
                    .iter()
                    .find(|s| s.id == speaker)
                    .and_then(|s| s.name.clone()),
                talk_time: 0.0,
                share: 0.0,
                words: 0,
                words_per_minute: 0.0,
                turns: 0,
                interruptions: 0,
                questions: 0,
            });
        let count = word_count(&segment.text);
        entry.words += count;
        words += count;
        if segment.text.trim_end().ends_with('?') {
            entry.questions += 1;
            questions += 1;
        }
        intervals
            .entry(speaker.clone())
            .or_default()
            .push((segment.start, segment.end));
        match &mut previous {
            Some((last, end)) if *last == speaker => *end = end.max(segment.end),
            _ => {
                entry.turns += 1;
                turns += 1;
                if let Some((_, end)) = &previous
                    && segment.start < *end - 1e-3
                {
                    entry.interruptions += 1;
                    interruptions += 1;
                }
                previous = Some((speaker.clone(), segment.end));
            }
        }
    }
    let all: Vec<(f64, f64)> = segments.iter().map(|s| (s.start, s.end)).collect();
    let speech = covered(all);
    let mut total_talk = 0.0;
    for (speaker, spans) in intervals {
        let talk = covered(spans);
        total_talk += talk;
        if let Some(entry) = stats.get_mut(&speaker) {
            entry.talk_time = talk;
            entry.words_per_minute = per_minute(entry.words, talk);
        }
    }
    let mut speakers: Vec<SpeakerStats> = stats.into_values().collect();
    for s in &mut speakers {
        s.share = if total_talk > 0.0 {
            s.talk_time / total_talk
        } else {
            0.0
        };
    }
    speakers.sort_by(|a, b| b.talk_time.total_cmp(&a.talk_time));
    let duration = transcript.duration.max(speech);
    Analytics {
        duration,
        talk_time: total_talk,
        words,
        words_per_minute: per_minute(words, speech),
        turns,
        interruptions,
        questions,
        silence_ratio: if duration > 0.0 {
            (1.0 - speech / duration).clamp(0.0, 1.0)
        } else {
            0.0
        },
        speakers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::{Segment, Speaker};

    fn segment(id: usize, start: f64, end: f64, speaker: &str, text: &str) -> Segment {
        Segment {
            id,
            start,
            end,
            speaker: Some(speaker.to_owned()),
            text: text.to_owned(),
            words: Vec::new(),
            edited: false,
            original_text: None,
        }
    }

    #[test]
    fn counts_turns_interruptions_questions_and_silence() {
        let transcript = Transcript {
            language: "en".into(),
            duration: 20.0,
            speakers: vec![Speaker {
                id: "A".into(),
                label: "A".into(),
                name: Some("Ann".into()),
                ..Default::default()
            }],
            segments: vec![
                segment(0, 0.0, 4.0, "A", "Hello, how are you today?"),
                segment(1, 4.0, 6.0, "A", "Fine weather."),
                // B cuts in before A's turn ended at 6.0.
                segment(2, 5.0, 8.0, "B", "I am well, thanks."),
                segment(3, 10.0, 12.0, "A", "Good."),
            ],
        };
        let a = analyze(&transcript);
        assert_eq!(a.turns, 3);
        assert_eq!(a.interruptions, 1);
        assert_eq!(a.questions, 1);
        assert_eq!(a.words, 5 + 2 + 4 + 1);
        // Speech covers 0..8 and 10..12: 10 of 20 seconds.
        assert!((a.silence_ratio - 0.5).abs() < 1e-9, "{}", a.silence_ratio);
        let ann = &a.speakers[0];
        assert_eq!(ann.speaker, "A");
        assert_eq!(ann.name.as_deref(), Some("Ann"));
        assert!((ann.talk_time - 8.0).abs() < 1e-9);
        assert_eq!(ann.turns, 2);
        let b = &a.speakers[1];
        assert_eq!(b.interruptions, 1);
        assert!((b.talk_time - 3.0).abs() < 1e-9);
        assert!((ann.share + b.share - 1.0).abs() < 1e-9);
        assert!((b.words_per_minute - 80.0).abs() < 1e-9);
    }

    #[test]
    fn an_empty_transcript_is_all_silence() {
        let transcript = Transcript {
            language: "en".into(),
            duration: 3.0,
            speakers: Vec::new(),
            segments: Vec::new(),
        };
        let a = analyze(&transcript);
        assert_eq!(a.words, 0);
        assert_eq!(a.silence_ratio, 1.0);
        assert!(a.speakers.is_empty());
    }
}
