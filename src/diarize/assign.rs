//! Speakers for words and segments from the diarization turns; segments split where the
//! speaker changes.

use super::metrics::Turn;
use crate::transcript::{Segment, Transcript, Word};

fn overlap(a: (f64, f64), b: (f64, f64)) -> f64 {
    (a.1.min(b.1) - a.0.max(b.0)).max(0.0)
}

/// The speaker of the span: most overlapping speech wins; a near tie (within 20 %, which is
/// what overlapped speech looks like) keeps `previous`. With no overlap, the nearest turn within
/// `reach` seconds; otherwise `previous`.
pub fn speaker_for_span(
    span: (f64, f64),
    turns: &[Turn],
    previous: Option<&str>,
    reach: f64,
) -> Option<String> {
    let mut totals: Vec<(&str, f64)> = Vec::new();
    for t in turns {
        let o = overlap(span, (t.start, t.end));
        if o > 0.0 {
            match totals.iter_mut().find(|(s, _)| *s == t.speaker) {
                Some(entry) => entry.1 += o,
                None => totals.push((&t.speaker, o)),
            }
        }
    }
    if let Some(&(best, best_overlap)) = totals.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
        if let Some(prev) = previous
            && totals
                .iter()
                .any(|(s, o)| *s == prev && *o >= 0.8 * best_overlap)
        {
            return Some(prev.to_owned());
        }
        return Some(best.to_owned());
    }
    let nearest = turns
        .iter()
        .map(|t| {
            let gap = if span.1 < t.start {
                t.start - span.1
            } else {
                span.0 - t.end
            };
            (t, gap.max(0.0))
        })
        .filter(|(_, gap)| *gap <= reach)
        .min_by(|a, b| a.1.total_cmp(&b.1));
    nearest
        .map(|(t, _)| t.speaker.clone())
        .or_else(|| previous.map(str::to_owned))
}

fn piece(
    source: &Segment,
    words: Vec<Word>,
    start: f64,
    end: f64,
    speaker: Option<String>,
) -> Segment {
    // A segment that is not split keeps its own text. Pieces are rebuilt from their words:
    // words carry their punctuation and may or may not carry their leading space, so each one is
    // trimmed and they are joined with single spaces.
    let whole = words.len() == source.words.len();
    let text = words
        .iter()
        .map(|w| w.text.trim())
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    Segment {
        id: 0,
        start,
        end,
        speaker,
        text: if words.is_empty() || whole {
            source.text.trim().to_owned()
        } else {
            text
        },
        words,
        edited: false,
        original_text: None,
    }
}

/// Labels every word and segment with a speaker and splits segments at speaker changes.
pub fn label_transcript(transcript: &mut Transcript, turns: &[Turn]) {
    let mut previous: Option<String> = None;
    let mut out: Vec<Segment> = Vec::with_capacity(transcript.segments.len());
    for segment in std::mem::take(&mut transcript.segments) {
        if segment.words.is_empty() {
            let speaker = speaker_for_span(
                (segment.start, segment.end),
                turns,
                previous.as_deref(),
                2.0,
            );
            previous = speaker.clone().or(previous);
            out.push(Segment { speaker, ..segment });
            continue;
        }
        let mut current: Vec<Word> = Vec::new();
        let mut current_speaker: Option<String> = None;
        let mut piece_start = segment.start;
        let count = segment.words.len();
        for (index, mut word) in segment.words.clone().into_iter().enumerate() {
            let speaker = speaker_for_span((word.start, word.end), turns, previous.as_deref(), 2.0);
            word.speaker = speaker.clone();
            if !current.is_empty() && speaker != current_speaker {
                let end = current.last().map_or(piece_start, |w| w.end);
                out.push(piece(
                    &segment,
                    std::mem::take(&mut current),
                    piece_start,
                    end,
                    current_speaker.take(),
                ));
                piece_start = word.start;
            }
            current_speaker = speaker.clone();
            previous = speaker.or(previous);
            current.push(word);
            if index + 1 == count {
                let end = segment.end.max(piece_start);
                out.push(piece(
                    &segment,
                    std::mem::take(&mut current),
                    piece_start,
                    end,
                    current_speaker.take(),
                ));
            }
        }
    }
    for (id, segment) in out.iter_mut().enumerate() {
        segment.id = id;
    }
    transcript.segments = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(start: f64, end: f64, speaker: &str) -> Turn {
        Turn {
            start,
            end,
            speaker: speaker.to_owned(),
        }
    }

    fn word(start: f64, end: f64, text: &str) -> Word {
        Word {
            start,
            end,
            text: text.to_owned(),
            probability: 0.9,
            speaker: None,
        }
    }

    #[test]
    fn a_segment_spanning_a_speaker_change_is_split_at_the_word() {
        let turns = vec![turn(0.0, 2.1, "A"), turn(2.2, 5.0, "B")];
        let mut transcript = Transcript {
            language: "en".into(),
            duration: 5.0,
            speakers: Vec::new(),
            segments: vec![Segment {
                id: 0,
                start: 0.0,
                end: 4.0,
                speaker: None,
                text: " Hello there. Yes hi.".into(),
                words: vec![
                    word(0.1, 0.8, " Hello"),
                    word(0.9, 2.0, " there."),
                    word(2.15, 2.9, " Yes"),
                    word(3.0, 3.8, " hi."),
                ],
                edited: false,
                original_text: None,
            }],
        };
        label_transcript(&mut transcript, &turns);
        let s = &transcript.segments;
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].speaker.as_deref(), s[0].text.as_str()),
            (Some("A"), "Hello there.")
        );
        assert_eq!(
            (s[1].speaker.as_deref(), s[1].text.as_str()),
            (Some("B"), "Yes hi.")
        );
        assert_eq!(
            (s[0].start, s[0].end, s[1].start, s[1].end),
            (0.0, 2.0, 2.15, 4.0)
        );
        assert_eq!((s[0].id, s[1].id), (0, 1));
        assert_eq!(s[1].words[0].speaker.as_deref(), Some("B"));
    }

    #[test]
    fn pieces_keep_spaces_between_words_stored_without_them() {
        let segment = |words: Vec<Word>| Segment {
            id: 0,
            start: 0.0,
            end: 4.0,
            speaker: None,
            text: " Mr. Dashwood spoke. Yes, sir.".into(),
            words,
            edited: false,
            original_text: None,
        };
        let words = vec![
            word(0.1, 0.5, "Mr."),
            word(0.6, 1.4, "Dashwood"),
            word(1.5, 2.0, "spoke."),
            word(2.3, 2.8, "Yes,"),
            word(2.9, 3.5, "sir."),
        ];
        let mut split = Transcript {
            language: "en".into(),
            duration: 4.0,
            speakers: Vec::new(),
            segments: vec![segment(words.clone())],
        };
        label_transcript(&mut split, &[turn(0.0, 2.1, "A"), turn(2.2, 4.0, "B")]);
        let texts: Vec<&str> = split.segments.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, vec!["Mr. Dashwood spoke.", "Yes, sir."]);
        // One speaker throughout: the segment keeps its own text.
        let mut whole = Transcript {
            language: "en".into(),
            duration: 4.0,
            speakers: Vec::new(),
            segments: vec![segment(words)],
        };
        label_transcript(&mut whole, &[turn(0.0, 4.0, "A")]);
        assert_eq!(whole.segments[0].text, "Mr. Dashwood spoke. Yes, sir.");
    }

    #[test]
    fn overlap_ties_keep_the_current_speaker_and_gaps_take_the_nearest_turn() {
        let turns = vec![
            turn(0.0, 4.0, "A"),
            turn(2.0, 3.0, "B"),
            turn(6.0, 8.0, "C"),
        ];
        // Inside the overlap both cover the word fully: A keeps talking.
        assert_eq!(
            speaker_for_span((2.2, 2.6), &turns, Some("A"), 2.0).as_deref(),
            Some("A")
        );
        // Without a previous speaker, the one covering most of the word.
        assert_eq!(
            speaker_for_span((2.8, 3.6), &turns, None, 2.0).as_deref(),
            Some("A")
        );
        assert_eq!(
            speaker_for_span((1.9, 3.0), &turns, Some("C"), 2.0).as_deref(),
            Some("A")
        );
        // In silence, the nearest turn within reach.
        assert_eq!(
            speaker_for_span((5.0, 5.5), &turns, Some("A"), 2.0).as_deref(),
            Some("C")
        );
        assert_eq!(
            speaker_for_span((12.0, 12.5), &turns, Some("A"), 2.0).as_deref(),
            Some("A")
        );
        assert_eq!(speaker_for_span((12.0, 12.5), &turns, None, 2.0), None);
    }
}
