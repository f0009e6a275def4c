//! Export formats: SRT, WebVTT, plain text, JSON and CSV, with or without speaker names.

use super::Transcript;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Srt,
    Vtt,
    Txt,
    Csv,
    /// Speaker-labelled paragraphs with their start times, for notes and wikis.
    Markdown,
    /// A Word document (binary: [`render_bytes`]), one paragraph per speaker turn.
    Docx,
}

impl Format {
    /// File name extension of an export in this format.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Srt => "srt",
            Format::Vtt => "vtt",
            Format::Txt => "txt",
            Format::Csv => "csv",
            Format::Markdown => "md",
            Format::Docx => "docx",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "json" => Some(Format::Json),
            "srt" => Some(Format::Srt),
            "vtt" => Some(Format::Vtt),
            "txt" | "text" => Some(Format::Txt),
            "csv" => Some(Format::Csv),
            "md" | "markdown" => Some(Format::Markdown),
            "docx" => Some(Format::Docx),
            _ => None,
        }
    }

    pub fn media_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Srt => "application/x-subrip",
            Format::Vtt => "text/vtt",
            Format::Txt => "text/plain; charset=utf-8",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Markdown => "text/markdown; charset=utf-8",
            Format::Docx => {
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            }
        }
    }
}

/// `HH:MM:SS` + separator + milliseconds, rounding to the nearest millisecond.
pub fn clock(seconds: f64, separator: char) -> String {
    let total_ms = (seconds.max(0.0) * 1000.0).round() as u64;
    let (hours, rest) = (total_ms / 3_600_000, total_ms % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    let (secs, ms) = (rest / 1000, rest % 1000);
    format!("{hours:02}:{minutes:02}:{secs:02}{separator}{ms:03}")
}

fn speaker_name(transcript: &Transcript, speaker: Option<&str>) -> Option<String> {
    let id = speaker?;
    transcript
        .speakers
        .iter()
        .find(|s| s.id == id)
        .map(|s| s.name.clone().unwrap_or_else(|| s.label.clone()))
        .or_else(|| Some(id.to_owned()))
}

/// Subtitle text must not end a cue early: blank lines inside a cue are removed. A lone CR
/// ends a line too (WebVTT says so, and many SRT readers agree), so it splits lines here.
fn cue_text(text: &str) -> String {
    text.split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// SRT has no escapes: a line holding `-->` inside a cue reads as a new cue's timing to many
/// parsers, so each arrow is broken with a space (`-- >`). One pass: replacing `-->` with
/// `->` would turn `--->` into a new arrow.
fn break_arrows(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '>' && out.ends_with("--") {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// A WebVTT voice name (`<v NAME>`): one line, no `>` (it would end the tag), `&` and `<`
/// escaped as in cue text, and never ending in `-`, which the tag's `>` would make an arrow
/// (players strip the space added against that).
fn voice_name(name: &str) -> String {
    let mut name = name
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('>', "")
        .replace('&', "&amp;")
        .replace('<', "&lt;");
    if name.ends_with('-') {
        name.push(' ');
    }
    name
}

/// An export as bytes: the DOCX package for [`Format::Docx`], the UTF-8 text otherwise.
pub fn render_bytes(transcript: &Transcript, format: Format, with_speakers: bool) -> Vec<u8> {
    match format {
        Format::Docx => super::docx::render_docx(transcript, with_speakers).unwrap_or_default(),
        _ => render(transcript, format, with_speakers).into_bytes(),
    }
}

/// An export as text. DOCX is binary: its text here is the plain-text export (use
/// [`render_bytes`] for the document).
pub fn render(transcript: &Transcript, format: Format, with_speakers: bool) -> String {
    let label = |speaker: Option<&str>| -> Option<String> {
        if with_speakers {
            speaker_name(transcript, speaker)
        } else {
            None
        }
    };
    match format {
        Format::Json => serde_json::to_string_pretty(transcript).unwrap_or_else(|_| "{}".into()),
        Format::Srt => {
            let mut out = String::new();
            for (index, segment) in transcript.segments.iter().enumerate() {
                let text = break_arrows(&cue_text(&segment.text));
                let text = match label(segment.speaker.as_deref()) {
                    Some(name) => format!("[{}] {text}", break_arrows(&cue_text(&name))),
                    None => text,
                };
                out.push_str(&format!(
                    "{}\n{} --> {}\n{}\n\n",
                    index + 1,
                    clock(segment.start, ','),
                    clock(segment.end, ','),
                    text
                ));
            }
            out
        }
        Format::Vtt => {
            let mut out = String::from("WEBVTT\n\n");
            for segment in &transcript.segments {
                // WebVTT cue text treats `<` and `&` as markup.
                let text = cue_text(&segment.text)
                    .replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;");
                let text = match label(segment.speaker.as_deref()) {
                    Some(name) => format!("<v {}>{text}", voice_name(&name)),
                    None => text,
                };
                out.push_str(&format!(
                    "{} --> {}\n{}\n\n",
                    clock(segment.start, '.'),
                    clock(segment.end, '.'),
                    text
                ));
            }
            out
        }
        Format::Txt => {
            let mut out = String::new();
            for segment in &transcript.segments {
                match label(segment.speaker.as_deref()) {
                    Some(name) => out.push_str(&format!("{name}: {}\n", segment.text.trim())),
                    None => out.push_str(&format!("{}\n", segment.text.trim())),
                }
            }
            out
        }
        Format::Csv => {
            let mut out = String::from("start,end,speaker,text\n");
            for segment in &transcript.segments {
                let speaker = label(segment.speaker.as_deref()).unwrap_or_default();
                out.push_str(&format!(
                    "{:.3},{:.3},{},{}\n",
                    segment.start,
                    segment.end,
                    csv_field(&speaker),
                    csv_field(segment.text.trim())
                ));
            }
            out
        }
        Format::Docx => render(transcript, Format::Txt, with_speakers),
        Format::Markdown => {
            // Consecutive segments of one speaker make one paragraph, headed by the speaker
            // (when shown) and the paragraph's start time.
            let mut out = String::new();
            let mut current: Option<Option<String>> = None;
            for segment in &transcript.segments {
                let text = markdown_text(&segment.text);
                if text.is_empty() {
                    continue;
                }
                let speaker = label(segment.speaker.as_deref());
                if current.as_ref() != Some(&speaker) {
                    if current.is_some() {
                        out.push_str("\n\n");
                    }
                    let time = clock(segment.start, '.');
                    let time = time.split('.').next().unwrap_or_default();
                    match &speaker {
                        Some(name) => {
                            out.push_str(&format!("**{}** ({time})\n\n", markdown_text(name)))
                        }
                        None => out.push_str(&format!("*{time}*\n\n")),
                    }
                    current = Some(speaker);
                } else {
                    out.push(' ');
                }
                out.push_str(&text);
            }
            if !out.is_empty() {
                out.push('\n');
            }
            out
        }
    }
}

/// Transcript text as Markdown shows it literally: one line, and every character Markdown
/// (or the HTML it may contain) would read as markup escaped with a backslash.
fn markdown_text(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = String::with_capacity(line.len());
    for c in line.chars() {
        if matches!(
            c,
            '\\' | '`'
                | '*'
                | '_'
                | '{'
                | '}'
                | '['
                | ']'
                | '<'
                | '>'
                | '('
                | ')'
                | '#'
                | '+'
                | '-'
                | '.'
                | '!'
                | '|'
                | '~'
                | '&'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Quotes a CSV field, and defuses spreadsheet formulas (a leading =, +, -, @, tab or CR, as
/// OWASP lists them).
pub fn csv_field(text: &str) -> String {
    let defused = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    format!("\"{}\"", defused.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_groups_turns_labels_times_and_escapes_markup() {
        let transcript: Transcript = serde_json::from_value(serde_json::json!({
            "language": "en",
            "duration": 20.0,
            "speakers": [
                {"id": "SPEAKER_00", "label": "SPEAKER_00", "name": "Maria *admin*"},
                {"id": "SPEAKER_01", "label": "SPEAKER_01", "name": null}
            ],
            "segments": [
                {"id": 0, "start": 0.0, "end": 2.0, "text": " Hello,", "speaker": "SPEAKER_00", "words": []},
                {"id": 1, "start": 2.0, "end": 4.0, "text": " this is Maria.", "speaker": "SPEAKER_00", "words": []},
                {"id": 2, "start": 65.5, "end": 70.0, "text": " <script>x</script> # not a heading", "speaker": "SPEAKER_01", "words": []}
            ]
        }))
        .unwrap();
        let md = render(&transcript, Format::Markdown, true);
        assert_eq!(
            md,
            "**Maria \\*admin\\*** (00:00:00)\n\nHello, this is Maria\\.\n\n**SPEAKER\\_01** (00:01:05)\n\n\\<script\\>x\\</script\\> \\# not a heading\n"
        );
        let plain = render(&transcript, Format::Markdown, false);
        assert!(
            plain.starts_with("*00:00:00*\n\nHello, this is Maria\\. \\<script"),
            "{plain}"
        );
        assert_eq!(Format::parse("md"), Some(Format::Markdown));
        assert_eq!(Format::Markdown.extension(), "md");
    }
    use crate::transcript::{Segment, Speaker};

    fn sample() -> Transcript {
        Transcript {
            language: "en".into(),
            duration: 3725.5,
            speakers: vec![Speaker {
                id: "S0".into(),
                label: "SPEAKER_00".into(),
                name: Some("Ada".into()),
                ..Default::default()
            }],
            segments: vec![
                Segment {
                    id: 0,
                    start: 0.0,
                    end: 1.5,
                    speaker: Some("S0".into()),
                    text: "Hello <b>world</b> & \"friends\"".into(),
                    words: vec![],
                    edited: false,
                    original_text: None,
                },
                Segment {
                    id: 1,
                    start: 3723.0014,
                    end: 3725.5,
                    speaker: None,
                    text: "=SUM(A1)\n\nbye".into(),
                    words: vec![],
                    edited: false,
                    original_text: None,
                },
            ],
        }
    }

    #[test]
    fn srt_text_cannot_forge_a_cue() {
        let mut transcript = sample();
        transcript.segments[0].text = "a\n\n2\n00:00:00,000 --> 00:09:00,000\nforged".to_owned();
        let srt = render(&transcript, Format::Srt, true);
        assert_eq!(
            srt.lines().filter(|l| l.contains("-->")).count(),
            transcript.segments.len(),
            "{srt}"
        );
    }

    // Found by `scripts/fuzz` (target `export`): `replace("-->", "->")` made `--->` an arrow.
    #[test]
    fn srt_arrows_with_more_dashes_are_broken_too() {
        let mut transcript = sample();
        transcript.segments[0].text = "a --->b ---->c".to_owned();
        transcript.speakers[0].name = Some("x--->".to_owned());
        let srt = render(&transcript, Format::Srt, true);
        assert_eq!(
            srt.lines().filter(|l| l.contains("-->")).count(),
            transcript.segments.len(),
            "{srt}"
        );
        assert!(srt.contains("[x--- >] a --- >b ---- >c\n"), "{srt}");
    }

    // Found by `scripts/fuzz` (target `export`): a speaker name with blank lines ended the
    // WebVTT cue inside its `<v …>` tag.
    #[test]
    fn vtt_voice_name_is_one_escaped_line() {
        let mut transcript = sample();
        transcript.speakers[0].name =
            Some("Eve\n\n00:00:00.000 --> 00:09:00.000\r\rx & <b>".into());
        let vtt = render(&transcript, Format::Vtt, true);
        assert!(
            vtt.contains("<v Eve 00:00:00.000 -- 00:09:00.000 x &amp; &lt;b>Hello"),
            "{vtt}"
        );
        assert_eq!(
            vtt.matches("-->").count(),
            transcript.segments.len(),
            "{vtt}"
        );
        assert_eq!(
            vtt.matches("\n\n").count(),
            transcript.segments.len() + 1,
            "{vtt}"
        );
    }

    // Found by `scripts/fuzz` (target `export`): a name ending in `--` and the tag's `>`
    // made an arrow.
    #[test]
    fn vtt_voice_name_cannot_end_in_an_arrow() {
        let mut transcript = sample();
        transcript.speakers[0].name = Some("Eve --".into());
        let vtt = render(&transcript, Format::Vtt, true);
        assert!(vtt.contains("<v Eve -- >Hello"), "{vtt}");
        assert_eq!(
            vtt.matches("-->").count(),
            transcript.segments.len(),
            "{vtt}"
        );
    }

    // Found by `scripts/fuzz` (target `export`): a lone CR is a line break to WebVTT (and many
    // SRT readers), so `a\r\rb` held a blank line that ended the cue early.
    #[test]
    fn lone_carriage_returns_split_lines_without_blank_ones() {
        let mut transcript = sample();
        transcript.segments[0].text = "a\r\rb\r\n\r\nc".to_owned();
        for format in [Format::Srt, Format::Vtt] {
            let out = render(&transcript, format, false);
            assert!(!out.contains('\r'), "{out:?}");
            assert!(out.contains("\na\nb\nc\n\n"), "{out:?}");
        }
    }

    #[test]
    fn csv_defuses_leading_tab_and_carriage_return() {
        let mut transcript = sample();
        transcript.speakers[0].name = Some("\t=1+1".to_owned());
        let csv = render(&transcript, Format::Csv, true);
        assert!(csv.contains(",\"'\t=1+1\","), "{csv:?}");
    }

    #[test]
    fn formats() {
        assert_eq!(clock(3723.0014, ','), "01:02:03,001");
        let srt = render(&sample(), Format::Srt, true);
        assert!(srt.starts_with("1\n00:00:00,000 --> 00:00:01,500\n[Ada] Hello"));
        assert!(srt.contains("2\n01:02:03,001 --> 01:02:05,500\n=SUM(A1)\nbye\n\n"));
        let vtt = render(&sample(), Format::Vtt, true);
        assert!(vtt.starts_with(
            "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\n<v Ada>Hello &lt;b&gt;world&lt;/b&gt; &amp;"
        ));
        let txt = render(&sample(), Format::Txt, false);
        assert!(txt.starts_with("Hello <b>world</b>"));
        let csv = render(&sample(), Format::Csv, true);
        assert!(csv.contains("0.000,1.500,\"Ada\",\"Hello <b>world</b> & \"\"friends\"\"\""));
        assert!(csv.contains("\"'=SUM(A1)"));
        let json: serde_json::Value =
            serde_json::from_str(&render(&sample(), Format::Json, true)).unwrap();
        assert_eq!(json["segments"][0]["speaker"], "S0");
        assert_eq!(json["speakers"][0]["name"], "Ada");
    }
}
