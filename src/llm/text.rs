//! The pure parts of working with a language model: transcript lines and their grouping into
//! chunks of whole speaker turns that fit the context, token estimates, the prompts and their
//! templates, and lenient parsing of what the model answers (JSON possibly in code fences,
//! times as seconds or `mm:ss`, citations like `[12.3s]`).

use serde_json::Value;

use crate::transcript::Transcript;

/// A conservative token estimate: one token per 3 bytes (English averages about 4 characters
/// per token; other scripts take more bytes per character), plus one.
pub fn estimate_tokens(text: &str) -> usize {
    text.len().div_ceil(3) + 1
}

/// Tokens set aside for the chat wrapping of each message and for estimate errors.
pub const PROMPT_MARGIN_TOKENS: usize = 64;

/// One transcript segment as the model sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub start: f64,
    pub end: f64,
    pub speaker: String,
    pub text: String,
}

impl Line {
    /// `[12.3s] Maria: text`.
    pub fn render(&self) -> String {
        format!("[{:.1}s] {}: {}", self.start, self.speaker, self.text)
    }
}

/// Display name of a segment's speaker (name, label, id), or `Speaker` without diarization.
pub fn lines_of(transcript: &Transcript) -> Vec<Line> {
    transcript
        .segments
        .iter()
        .filter(|s| !s.text.trim().is_empty())
        .map(|s| {
            let speaker = match &s.speaker {
                Some(id) => match transcript.speakers.iter().find(|p| &p.id == id) {
                    Some(p) => p.name.clone().unwrap_or_else(|| p.label.clone()),
                    None => id.clone(),
                },
                None => "Speaker".to_owned(),
            };
            Line {
                start: s.start,
                end: s.end,
                speaker,
                text: s.text.trim().to_owned(),
            }
        })
        .collect()
}

/// Groups lines into chunks of whole speaker turns whose rendered text fits `budget` tokens.
/// A turn longer than the budget is split between its lines; a single line longer than the
/// budget is cut. Every line lands in exactly one chunk, in order.
pub fn chunk_turns(lines: &[Line], budget: usize) -> Vec<String> {
    let budget = budget.max(16);
    let mut turns: Vec<Vec<String>> = Vec::new();
    let mut last_speaker: Option<&str> = None;
    for line in lines {
        let mut rendered = line.render();
        if estimate_tokens(&rendered) > budget {
            rendered = cut_to_tokens(&rendered, budget);
        }
        if last_speaker == Some(line.speaker.as_str()) {
            if let Some(turn) = turns.last_mut() {
                turn.push(rendered);
            }
        } else {
            turns.push(vec![rendered]);
        }
        last_speaker = Some(line.speaker.as_str());
    }
    let mut chunks = Vec::new();
    let mut current = String::new();
    let push_line = |current: &mut String, chunks: &mut Vec<String>, line: &str| {
        let joined = estimate_tokens(current) + estimate_tokens(line);
        if !current.is_empty() && joined > budget {
            chunks.push(std::mem::take(current));
        }
        current.push_str(line);
        current.push('\n');
    };
    for turn in turns {
        let whole: usize = turn.iter().map(|l| l.len() + 1).sum();
        let turn_tokens = whole.div_ceil(3) + 1;
        if !current.is_empty() && estimate_tokens(&current) + turn_tokens > budget {
            // The turn does not fit with what is gathered: it starts the next chunk.
            chunks.push(std::mem::take(&mut current));
        }
        for line in &turn {
            push_line(&mut current, &mut chunks, line);
        }
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

/// The longest prefix of `text` (on a character boundary) within `tokens`.
pub fn cut_to_tokens(text: &str, tokens: usize) -> String {
    let max_bytes = tokens.saturating_sub(1) * 3;
    if text.len() <= max_bytes {
        return text.to_owned();
    }
    let mut end = max_bytes.saturating_sub(3);
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The output format every summary request asks for; fixed, so a user's template cannot break
/// the parsing.
const JSON_FORMAT: &str = r#"Answer with one JSON object only, no other text, in exactly this form:
{"summary": "a few sentences", "action_items": [{"text": "what is to be done", "owner": "who, or null", "time": 12.3}], "decisions": [{"text": "what was decided", "time": 12.3}], "topics": [{"text": "a topic", "time": 12.3}], "speaker_names": [{"speaker": "the speaker label as written before the colon", "name": "the person's name", "time": 12.3}]}
"time" is the bracketed seconds of the line it comes from. Use empty lists when there is nothing. Suggest a speaker's name only when the transcript itself says it, e.g. someone says "thanks, Maria" to that speaker."#;

pub const MAP_SYSTEM: &str = "You take notes on one part of a meeting transcript. Each line starts with its time in seconds in brackets, then the speaker and a colon.";
pub const REDUCE_SYSTEM: &str = "You combine notes taken from consecutive parts of one meeting into its final summary: merge duplicates, keep the times, keep every action item and decision.";
pub const ASK_SYSTEM: &str = "You answer a question about a transcript using only the excerpts given. Each excerpt line starts with its time in seconds in brackets, like [12.3s]. After each statement, cite the lines it rests on by their bracketed times, e.g. [12.3s]. If the excerpts do not answer the question, say so.";

pub const DEFAULT_MAP_TEMPLATE: &str = "Take notes on part {part} of {parts} of the transcript \"{filename}\" (language: {language}).\n\n{transcript}";
pub const DEFAULT_REDUCE_TEMPLATE: &str = "Here are the notes of the {parts} parts of \"{filename}\" (language: {language}), in order. Write the summary of the whole.\n\n{notes}";

/// Placeholders a map template may use; `{transcript}` is required.
pub const MAP_PLACEHOLDERS: &[&str] = &["transcript", "filename", "language", "part", "parts"];
/// Placeholders a reduce template may use; `{notes}` is required.
pub const REDUCE_PLACEHOLDERS: &[&str] = &["notes", "filename", "language", "parts"];
/// Most characters of one template.
pub const MAX_TEMPLATE_CHARS: usize = 4000;

/// Checks a template: not too long, only known placeholders, the required one present.
pub fn check_template(template: &str, allowed: &[&str], required: &str) -> Result<(), String> {
    if template.chars().count() > MAX_TEMPLATE_CHARS {
        return Err(format!("at most {MAX_TEMPLATE_CHARS} characters"));
    }
    for name in placeholders(template) {
        if !allowed.contains(&name.as_str()) {
            return Err(format!(
                "unknown placeholder {{{name}}}; allowed: {}",
                allowed
                    .iter()
                    .map(|a| format!("{{{a}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    if !template.contains(&format!("{{{required}}}")) {
        return Err(format!("must contain {{{required}}}"));
    }
    Ok(())
}

/// `{name}` placeholders (letters and underscores) in a template.
fn placeholders(template: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close)
                if close > 0
                    && after[..close]
                        .chars()
                        .all(|c| c.is_ascii_alphabetic() || c == '_') =>
            {
                out.push(after[..close].to_owned());
                rest = &after[close + 1..];
            }
            _ => rest = after,
        }
    }
    out
}

/// Fills a template's placeholders; values are inserted once (a value containing `{notes}`
/// is not expanded again).
pub fn render(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let filled = after.find('}').and_then(|close| {
            values
                .iter()
                .find(|(name, _)| *name == &after[..close])
                .map(|(_, value)| (close, *value))
        });
        match filled {
            Some((close, value)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The system message of a summary step with the fixed output format.
pub fn summary_system(stage_system: &str) -> String {
    format!("{stage_system}\n\n{JSON_FORMAT}")
}

/// The JSON object in a model's answer: the whole answer, the inside of a code fence, or the
/// outermost `{…}`. `None` when there is none.
pub fn extract_json(answer: &str) -> Option<Value> {
    let mut candidates = vec![answer.trim().to_owned()];
    if let Some(start) = answer.find("```") {
        let after = &answer[start + 3..];
        let body = after.split_once('\n').map_or(after, |(_, rest)| rest);
        if let Some(end) = body.find("```") {
            candidates.push(body[..end].trim().to_owned());
        }
    }
    if let (Some(open), Some(close)) = (answer.find('{'), answer.rfind('}'))
        && open < close
    {
        candidates.push(answer[open..=close].to_owned());
    }
    candidates
        .into_iter()
        .filter_map(|c| serde_json::from_str::<Value>(&c).ok())
        .find(Value::is_object)
}

/// A time as the model writes it: seconds (number or `"12.3"`, `"12.3s"`), `mm:ss` or
/// `h:mm:ss`, optionally in brackets.
pub fn parse_time(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64().filter(|t| t.is_finite() && *t >= 0.0),
        Value::String(s) => parse_time_str(s),
        _ => None,
    }
}

pub fn parse_time_str(text: &str) -> Option<f64> {
    let t = text
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim();
    let t = t.strip_suffix('s').unwrap_or(t).trim();
    if t.is_empty()
        || !t
            .chars()
            .all(|c| c.is_ascii_digit() || c == '.' || c == ':')
    {
        return None;
    }
    let mut seconds = 0.0;
    let parts: Vec<&str> = t.split(':').collect();
    if parts.len() > 3 {
        return None;
    }
    for (i, part) in parts.iter().enumerate() {
        let value: f64 = part.parse().ok()?;
        if i > 0 && value >= 60.0 {
            return None;
        }
        seconds = seconds * 60.0 + value;
    }
    Some(seconds).filter(|s| s.is_finite())
}

/// Every time cited in brackets in an answer: `[12.3s]`, `[01:05]`, `[12.3s, 40s]`,
/// `[12s–15s]` (the start counts).
pub fn citations(answer: &str) -> Vec<f64> {
    let mut out = Vec::new();
    let mut rest = answer;
    while let Some(open) = rest.find('[') {
        let after = &rest[open + 1..];
        let Some(close) = after.find(']') else { break };
        let inside = &after[..close];
        if inside.len() <= 80 {
            for part in inside.split([',', ';']) {
                let first = part
                    .split(['-', '–', '—'])
                    .next()
                    .unwrap_or("")
                    .trim()
                    .trim_start_matches("at ");
                if let Some(t) = parse_time_str(first) {
                    out.push(t);
                }
            }
        }
        rest = &after[close + 1..];
    }
    out
}

/// A model's notes, read leniently: strings or objects in the lists, missing fields empty.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Notes {
    pub summary: String,
    pub action_items: Vec<RawItem>,
    pub decisions: Vec<RawItem>,
    pub topics: Vec<RawItem>,
    pub speaker_names: Vec<RawName>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawItem {
    pub text: String,
    pub owner: Option<String>,
    pub time: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawName {
    pub speaker: String,
    pub name: String,
    pub time: Option<f64>,
}

const MAX_ITEMS: usize = 50;
const MAX_ITEM_CHARS: usize = 500;
const MAX_SUMMARY_CHARS: usize = 4000;

fn clip(text: &str, chars: usize) -> String {
    let text = text.trim();
    if text.chars().count() <= chars {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(chars).collect();
        cut.push('…');
        cut
    }
}

fn items(value: &Value) -> Vec<RawItem> {
    let Some(list) = value.as_array() else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|entry| match entry {
            Value::String(s) => Some(RawItem {
                text: clip(s, MAX_ITEM_CHARS),
                ..RawItem::default()
            }),
            Value::Object(map) => {
                let text = ["text", "item", "title", "topic", "decision", "task"]
                    .iter()
                    .find_map(|k| map.get(*k).and_then(Value::as_str))?;
                Some(RawItem {
                    text: clip(text, MAX_ITEM_CHARS),
                    owner: ["owner", "assignee", "who"]
                        .iter()
                        .find_map(|k| map.get(*k).and_then(Value::as_str))
                        .map(|s| clip(s, 100))
                        .filter(|s| !s.is_empty() && s != "null"),
                    time: ["time", "start", "at"]
                        .iter()
                        .find_map(|k| map.get(*k).and_then(parse_time)),
                })
            }
            _ => None,
        })
        .filter(|i| !i.text.is_empty())
        .take(MAX_ITEMS)
        .collect()
}

impl Notes {
    /// The notes in a JSON answer (see [`extract_json`]).
    pub fn from_value(value: &Value) -> Self {
        let summary = match &value["summary"] {
            Value::String(s) => clip(s, MAX_SUMMARY_CHARS),
            Value::Array(list) => clip(
                &list
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" "),
                MAX_SUMMARY_CHARS,
            ),
            _ => String::new(),
        };
        let speaker_names = value["speaker_names"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|entry| {
                        Some(RawName {
                            speaker: clip(entry["speaker"].as_str()?, 100),
                            name: clip(entry["name"].as_str()?, 100),
                            time: parse_time(&entry["time"]),
                        })
                    })
                    .take(MAX_ITEMS)
                    .collect()
            })
            .unwrap_or_default();
        Self {
            summary,
            action_items: items(&value["action_items"]),
            decisions: items(&value["decisions"]),
            topics: items(&value["topics"]),
            speaker_names,
        }
    }

    /// The notes as JSON again, for the reduce step.
    pub fn to_value(&self) -> Value {
        let items = |list: &[RawItem]| -> Value {
            list.iter()
                .map(|i| serde_json::json!({"text": i.text, "owner": i.owner, "time": i.time}))
                .collect()
        };
        serde_json::json!({
            "summary": self.summary,
            "action_items": items(&self.action_items),
            "decisions": items(&self.decisions),
            "topics": items(&self.topics),
            "speaker_names": self.speaker_names.iter()
                .map(|n| serde_json::json!({"speaker": n.speaker, "name": n.name, "time": n.time}))
                .collect::<Vec<_>>(),
        })
    }
}

/// Words of a question worth matching: lower-cased, at least three characters, not common.
pub fn keywords(text: &str) -> Vec<String> {
    const COMMON: &[&str] = &[
        "the", "and", "for", "are", "was", "were", "what", "who", "whom", "when", "where", "why",
        "how", "did", "does", "this", "that", "with", "from", "they", "them", "their", "there",
        "about", "which", "have", "has", "had", "you", "your", "our", "but", "not", "any", "all",
        "can", "could", "would", "should", "will", "into", "than", "then", "been", "being", "said",
        "say", "says", "tell",
    ];
    let mut out: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
        .filter(|w| w.chars().count() >= 3 && !COMMON.contains(&w.as_str()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The lines most relevant to a question that fit `budget` tokens, in transcript order:
/// ranked by how many of the question's keywords they share (a word matches when one starts
/// with the other, so "budget" finds "budgets"); without any overlap, the first lines.
pub fn select_lines(lines: &[Line], question: &str, budget: usize) -> Vec<usize> {
    let words = keywords(question);
    let mut scored: Vec<(usize, usize)> = lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            let own = keywords(&line.text);
            let score = words
                .iter()
                .filter(|w| {
                    own.iter()
                        .any(|o| o.starts_with(w.as_str()) || w.starts_with(o.as_str()))
                })
                .count();
            (i, score)
        })
        .collect();
    let any = scored.iter().any(|(_, s)| *s > 0);
    if any {
        scored.retain(|(_, s)| *s > 0);
        scored.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    }
    let mut used = 0;
    let mut chosen = Vec::new();
    for (i, _) in scored {
        let cost = estimate_tokens(&lines[i].render());
        if used + cost > budget {
            if any {
                continue;
            }
            break;
        }
        used += cost;
        chosen.push(i);
    }
    chosen.sort_unstable();
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(start: f64, speaker: &str, text: &str) -> Line {
        Line {
            start,
            end: start + 1.0,
            speaker: speaker.to_owned(),
            text: text.to_owned(),
        }
    }

    #[test]
    fn chunks_keep_turns_whole_and_fit_the_budget() {
        let mut lines = Vec::new();
        for i in 0..60 {
            let speaker = if (i / 3) % 2 == 0 { "A" } else { "B" };
            lines.push(line(
                i as f64,
                speaker,
                "some words said in the meeting here",
            ));
        }
        let budget = 100;
        let chunks = chunk_turns(&lines, budget);
        assert!(chunks.len() > 3, "{}", chunks.len());
        let total: usize = chunks.iter().map(|c| c.lines().count()).sum();
        assert_eq!(total, 60);
        for chunk in &chunks {
            assert!(estimate_tokens(chunk) <= budget + 2, "{chunk}");
            // Each chunk starts at a turn boundary (turns are 3 lines long and fit).
            let first: f64 = chunk[1..].split('s').next().unwrap().parse().unwrap();
            assert_eq!(first as usize % 3, 0, "{chunk}");
        }
    }

    #[test]
    fn json_is_found_in_fences_and_prose() {
        let fenced = "Sure!\n```json\n{\"summary\": \"x\"}\n```\nDone.";
        assert_eq!(extract_json(fenced).unwrap()["summary"], "x");
        let prose = "Here it is: {\"summary\": \"y\", \"topics\": [\"a\"]} hope it helps";
        assert_eq!(extract_json(prose).unwrap()["summary"], "y");
        assert!(extract_json("no json here").is_none());
        assert!(extract_json("[1, 2]").is_none());
    }

    #[test]
    fn times_and_citations_parse() {
        assert_eq!(parse_time_str("12.5s"), Some(12.5));
        assert_eq!(parse_time_str("[01:05]"), Some(65.0));
        assert_eq!(parse_time_str("1:01:05"), Some(3665.0));
        assert_eq!(parse_time_str("1:75"), None);
        assert_eq!(parse_time_str("soon"), None);
        assert_eq!(
            citations("It was agreed [12.3s] and later [01:05, 70s] but [note] [2s–4s]."),
            vec![12.3, 65.0, 70.0, 2.0]
        );
    }

    #[test]
    fn templates_are_checked_and_rendered_once() {
        assert!(check_template(DEFAULT_MAP_TEMPLATE, MAP_PLACEHOLDERS, "transcript").is_ok());
        assert!(check_template(DEFAULT_REDUCE_TEMPLATE, REDUCE_PLACEHOLDERS, "notes").is_ok());
        let err = check_template("{transcript} {secret}", MAP_PLACEHOLDERS, "transcript");
        assert!(err.unwrap_err().contains("{secret}"));
        assert!(check_template("no placeholder", MAP_PLACEHOLDERS, "transcript").is_err());
        assert!(
            check_template(
                "JSON {\"a\": 1} {transcript}",
                MAP_PLACEHOLDERS,
                "transcript"
            )
            .is_ok()
        );
        let out = render("{a} and {b} {c}", &[("a", "{b}"), ("b", "B")]);
        assert_eq!(out, "{b} and B {c}");
    }

    #[test]
    fn lines_are_selected_by_keyword_overlap() {
        let lines = vec![
            line(0.0, "A", "Welcome everyone"),
            line(5.0, "B", "The budget for next year is tight"),
            line(9.0, "A", "Lunch is at noon"),
            line(12.0, "B", "We cut the travel budget"),
        ];
        assert_eq!(
            select_lines(&lines, "What about the budgets?", 1000),
            vec![1, 3]
        );
        assert_eq!(select_lines(&lines, "zzz", 1000), vec![0, 1, 2, 3]);
    }

    #[test]
    fn notes_are_read_leniently() {
        let value = serde_json::json!({
            "summary": ["One.", "Two."],
            "action_items": ["call Bob", {"task": "send notes", "owner": "Ann", "time": "00:12"}],
            "topics": [{"title": "budget", "time": 3}],
            "speaker_names": [{"speaker": "SPEAKER_00", "name": "Maria", "time": "4.5s"}, {"name": "x"}],
        });
        let notes = Notes::from_value(&value);
        assert_eq!(notes.summary, "One. Two.");
        assert_eq!(notes.action_items.len(), 2);
        assert_eq!(notes.action_items[1].owner.as_deref(), Some("Ann"));
        assert_eq!(notes.action_items[1].time, Some(12.0));
        assert_eq!(notes.topics[0].text, "budget");
        assert_eq!(notes.speaker_names.len(), 1);
        assert_eq!(notes.speaker_names[0].time, Some(4.5));
    }
}
