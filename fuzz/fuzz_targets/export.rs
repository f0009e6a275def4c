//! Export writers: a structured transcript built from the input (any text, any float, NaN and
//! infinities included) through every format, with and without speaker names.
//!
//! SRT and WebVTT are read back the way players read them (CR, LF and CRLF all end a line):
//! one cue per segment, in order, and no line of cue text that reads as a timing line. CSV is
//! read back with RFC 4180 quoting: a header and one four-field record per segment, with no
//! text field that a spreadsheet would run as a formula. JSON must parse, and round-trip when
//! every number is finite.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use opentranscribe::transcript::export::{Format, render};
use opentranscribe::transcript::{Segment, Speaker, Transcript, Word};

#[derive(Arbitrary, Debug)]
struct Input {
    with_speakers: bool,
    language: String,
    duration: f64,
    speakers: Vec<InSpeaker>,
    segments: Vec<InSegment>,
}

#[derive(Arbitrary, Debug)]
struct InSpeaker {
    id: String,
    label: String,
    name: Option<String>,
}

#[derive(Arbitrary, Debug)]
enum SpeakerRef {
    Listed(u8),
    Unlisted(String),
}

#[derive(Arbitrary, Debug)]
struct InSegment {
    start: f64,
    end: f64,
    speaker: Option<SpeakerRef>,
    text: String,
    words: Vec<(f64, f64, String, f32)>,
    edited: bool,
}

fn build(input: &Input) -> Transcript {
    let speakers: Vec<Speaker> = input
        .speakers
        .iter()
        .map(|s| Speaker {
            id: s.id.clone(),
            label: s.label.clone(),
            name: s.name.clone(),
            ..Speaker::default()
        })
        .collect();
    let segments = input
        .segments
        .iter()
        .enumerate()
        .map(|(id, s)| Segment {
            id,
            start: s.start,
            end: s.end,
            speaker: match &s.speaker {
                None => None,
                Some(SpeakerRef::Listed(i)) if !speakers.is_empty() => {
                    Some(speakers[usize::from(*i) % speakers.len()].id.clone())
                }
                Some(SpeakerRef::Listed(i)) => Some(format!("S{i}")),
                Some(SpeakerRef::Unlisted(id)) => Some(id.clone()),
            },
            text: s.text.clone(),
            words: s
                .words
                .iter()
                .map(|(start, end, text, probability)| Word {
                    start: *start,
                    end: *end,
                    text: text.clone(),
                    probability: *probability,
                    speaker: None,
                })
                .collect(),
            edited: s.edited,
            original_text: None,
        })
        .collect();
    Transcript {
        language: input.language.clone(),
        duration: input.duration,
        speakers,
        segments,
    }
}

/// Lines as a WebVTT parser splits them (and most SRT parsers: CRLF, CR or LF).
fn subtitle_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(['\r', '\n']) {
        lines.push(&rest[..at]);
        let skip = if rest[at..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[at + skip..];
    }
    lines.push(rest);
    lines
}

fn is_timing(line: &str, separator: char) -> bool {
    fn is_clock(text: &str, separator: char) -> bool {
        let Some((hms, ms)) = text.split_once(separator) else {
            return false;
        };
        let parts: Vec<&str> = hms.split(':').collect();
        parts.len() == 3
            && parts[0].len() >= 2
            && parts[1].len() == 2
            && parts[2].len() == 2
            && ms.len() == 3
            && parts
                .iter()
                .chain([&ms])
                .all(|p| p.bytes().all(|b| b.is_ascii_digit()))
    }
    line.split_once(" --> ")
        .is_some_and(|(a, b)| is_clock(a, separator) && is_clock(b, separator))
}

/// Blocks separated by one or more blank lines, as players read them.
fn blocks<'a>(lines: &[&'a str]) -> Vec<Vec<&'a str>> {
    let mut out = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in lines {
        if line.is_empty() {
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        } else {
            current.push(line);
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn check_srt(srt: &str, transcript: &Transcript) {
    let cues = blocks(&subtitle_lines(srt));
    assert_eq!(
        cues.len(),
        transcript.segments.len(),
        "SRT cue count:\n{srt:?}"
    );
    for (index, cue) in cues.iter().enumerate() {
        assert_eq!(cue[0], (index + 1).to_string(), "SRT cue number:\n{srt:?}");
        assert!(
            cue.len() >= 2 && is_timing(cue[1], ','),
            "SRT timing line:\n{srt:?}"
        );
        for line in &cue[2..] {
            assert!(!line.contains("-->"), "SRT text holds an arrow: {line:?}");
        }
    }
}

fn check_vtt(vtt: &str, transcript: &Transcript) {
    let lines = subtitle_lines(vtt);
    assert_eq!(lines[0], "WEBVTT");
    let cues = blocks(&lines[1..]);
    assert_eq!(
        cues.len(),
        transcript.segments.len(),
        "VTT cue count:\n{vtt:?}"
    );
    for cue in &cues {
        assert!(is_timing(cue[0], '.'), "VTT timing line:\n{vtt:?}");
        for line in &cue[1..] {
            assert!(!line.contains("-->"), "VTT text holds an arrow: {line:?}");
        }
    }
}

/// RFC 4180 records: quoted fields may hold commas, quotes (doubled) and line breaks.
fn csv_records(csv: &str) -> Vec<Vec<String>> {
    let mut records = Vec::new();
    let mut record = Vec::new();
    let mut field = String::new();
    let mut chars = csv.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => record.push(std::mem::take(&mut field)),
            (false, '\n') => {
                record.push(std::mem::take(&mut field));
                records.push(std::mem::take(&mut record));
            }
            (false, c) => field.push(c),
        }
    }
    assert!(!quoted, "CSV ends inside a quoted field");
    assert!(
        field.is_empty() && record.is_empty(),
        "CSV does not end with a line break"
    );
    records
}

fn check_csv(csv: &str, transcript: &Transcript) {
    let records = csv_records(csv);
    assert_eq!(
        records.len(),
        transcript.segments.len() + 1,
        "CSV records:\n{csv:?}"
    );
    for record in &records {
        assert_eq!(record.len(), 4, "CSV fields: {record:?}");
        for text in &record[2..] {
            assert!(
                !text.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "CSV field runs as a formula: {text:?}"
            );
        }
    }
}

fn check_json(json: &str, transcript: &Transcript) {
    serde_json::from_str::<serde_json::Value>(json).expect("JSON export parses");
    let finite = transcript.duration.is_finite()
        && transcript.segments.iter().all(|s| {
            s.start.is_finite()
                && s.end.is_finite()
                && s.words
                    .iter()
                    .all(|w| w.start.is_finite() && w.end.is_finite() && w.probability.is_finite())
        });
    if finite {
        let back: Transcript = serde_json::from_str(json).expect("JSON export reads back");
        // serde_json's default float parser may be one unit in the last place off.
        let close = |a: f64, b: f64| a == b || (a - b).abs() <= 1e-12 * a.abs().max(b.abs());
        assert_eq!(back.language, transcript.language);
        assert!(close(back.duration, transcript.duration));
        assert_eq!(back.speakers, transcript.speakers);
        assert_eq!(back.segments.len(), transcript.segments.len());
        for (a, b) in back.segments.iter().zip(&transcript.segments) {
            assert_eq!(
                (a.id, &a.speaker, &a.text, a.edited),
                (b.id, &b.speaker, &b.text, b.edited)
            );
            assert!(
                close(a.start, b.start) && close(a.end, b.end),
                "{a:?} {b:?}"
            );
            assert_eq!(a.words.len(), b.words.len());
            for (x, y) in a.words.iter().zip(&b.words) {
                assert_eq!(x.text, y.text);
                assert!(close(x.start, y.start) && close(x.end, y.end));
                assert!(
                    close(f64::from(x.probability), f64::from(y.probability))
                        || (x.probability - y.probability).abs()
                            <= f32::EPSILON * x.probability.abs().max(y.probability.abs())
                );
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let transcript = build(&input);
    for with_speakers in [input.with_speakers, !input.with_speakers] {
        check_srt(
            &render(&transcript, Format::Srt, with_speakers),
            &transcript,
        );
        check_vtt(
            &render(&transcript, Format::Vtt, with_speakers),
            &transcript,
        );
        check_csv(
            &render(&transcript, Format::Csv, with_speakers),
            &transcript,
        );
        check_json(
            &render(&transcript, Format::Json, with_speakers),
            &transcript,
        );
        let _ = render(&transcript, Format::Txt, with_speakers);
        let _ = render(&transcript, Format::Markdown, with_speakers);
    }
});
