//! DOCX export: a minimal WordprocessingML package (content types, one relationship, the
//! document) written with the `zip` crate, one paragraph per speaker turn with the speaker in
//! bold and the turn's start time, so any word processor opens it.

use std::io::Write;

use super::Transcript;
use super::export::clock;

const CONTENT_TYPES: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"><Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/><Override PartName="/word/document.xml" ContentType="application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/></Types>"#;

const RELATIONSHIPS: &str = r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" Target="word/document.xml"/></Relationships>"#;

/// Text as XML character data: markup escaped, characters XML 1.0 forbids dropped.
fn xml_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if (c as u32) < 0x20 || matches!(c, '\u{FFFE}' | '\u{FFFF}') => {}
            c => out.push(c),
        }
    }
    out
}

fn run(text: &str, bold: bool) -> String {
    let properties = if bold { "<w:rPr><w:b/></w:rPr>" } else { "" };
    format!(
        r#"<w:r>{properties}<w:t xml:space="preserve">{}</w:t></w:r>"#,
        xml_text(text)
    )
}

/// The `word/document.xml` of a transcript: per turn (consecutive segments of one speaker) a
/// heading paragraph (speaker in bold, when shown, and the start time) and a text paragraph.
pub fn document_xml(transcript: &Transcript, with_speakers: bool) -> String {
    let mut body = String::new();
    let mut current: Option<Option<&str>> = None;
    let mut paragraph = String::new();
    let flush = |body: &mut String, paragraph: &mut String| {
        if !paragraph.is_empty() {
            body.push_str(&format!("<w:p>{}</w:p>", run(paragraph.trim(), false)));
            paragraph.clear();
        }
    };
    for segment in &transcript.segments {
        let text = segment.text.trim();
        if text.is_empty() {
            continue;
        }
        let speaker = if with_speakers {
            segment.speaker.as_deref()
        } else {
            None
        };
        if current != Some(speaker) {
            flush(&mut body, &mut paragraph);
            let time = clock(segment.start, '.');
            let time = time.split('.').next().unwrap_or_default().to_owned();
            let name = speaker.map(|id| {
                transcript
                    .speakers
                    .iter()
                    .find(|s| s.id == id)
                    .map(|s| s.name.clone().unwrap_or_else(|| s.label.clone()))
                    .unwrap_or_else(|| id.to_owned())
            });
            let heading = match name {
                Some(name) => format!("{}{}", run(&name, true), run(&format!("  {time}"), false)),
                None => run(&time, false),
            };
            body.push_str(&format!("<w:p>{heading}</w:p>"));
            current = Some(speaker);
        }
        paragraph.push(' ');
        paragraph.push_str(text);
    }
    flush(&mut body, &mut paragraph);
    format!(
        r#"<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>{body}<w:sectPr/></w:body></w:document>"#
    )
}

/// The whole `.docx` file.
pub fn render_docx(transcript: &Transcript, with_speakers: bool) -> std::io::Result<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, content) in [
        ("[Content_Types].xml", CONTENT_TYPES.to_owned()),
        ("_rels/.rels", RELATIONSHIPS.to_owned()),
        ("word/document.xml", document_xml(transcript, with_speakers)),
    ] {
        zip.start_file(name, options)
            .map_err(std::io::Error::other)?;
        zip.write_all(content.as_bytes())?;
    }
    let cursor = zip.finish().map_err(std::io::Error::other)?;
    Ok(cursor.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_forbidden_characters_dropped() {
        assert_eq!(
            xml_text("a < b & \"c\"\u{1}\u{b}\tend"),
            "a &lt; b &amp; &quot;c&quot; end"
        );
        let transcript: Transcript = serde_json::from_value(serde_json::json!({
            "language": "en", "duration": 3.0,
            "speakers": [{"id": "S0", "label": "SPEAKER_00", "name": "Ann <b>"}],
            "segments": [
                {"id": 0, "start": 1.2, "end": 2.0, "text": " x</w:t>", "speaker": "S0", "words": []}
            ]
        }))
        .unwrap();
        let xml = document_xml(&transcript, true);
        assert!(xml.contains("Ann &lt;b&gt;"), "{xml}");
        assert!(xml.contains("x&lt;/w:t&gt;"), "{xml}");
        assert!(xml.contains("00:00:01"), "{xml}");
        let package = render_docx(&transcript, true).unwrap();
        let archive = zip::ZipArchive::new(std::io::Cursor::new(package)).unwrap();
        let names: Vec<String> = archive
            .file_names()
            .map(|name| name.unwrap().into_owned())
            .collect();
        for part in ["[Content_Types].xml", "_rels/.rels", "word/document.xml"] {
            assert!(names.iter().any(|n| n == part), "{names:?}");
        }
    }
}
