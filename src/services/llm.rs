//! Summaries and questions on the site's language model. A summary runs in the background:
//! the transcript's lines are grouped into chunks of whole speaker turns that fit the model's
//! context, each chunk is turned into notes (map), and the notes into the summary (reduce,
//! in rounds when they do not fit at once). Progress goes out as `summary.status` events on
//! the file owner's WebSocket; the record is written only while the run is the file's current
//! one and the file exists (`store::summaries`). A question picks the segments that share the
//! most words with it, within the context, and keeps only the citations that name one of them.

use std::sync::Arc;

use serde::Serialize;

use crate::app::{AppState, blocking};
use crate::error::{Error, Result};
use crate::jobs::FileEvent;
use crate::llm::text::{self, Line, Notes, RawItem};
use crate::llm::{Llm, LlmError, Message};
use crate::store::records::FileRecord;
use crate::store::summaries::{NameSuggestion, PromptTemplates, SummaryItem, SummaryRecord};
use crate::transcript::Transcript;

/// Most characters of a question.
pub const MAX_QUESTION_CHARS: usize = 2000;
/// Reduce rounds before the run gives up (each round at least halves the notes).
const MAX_REDUCE_ROUNDS: usize = 8;

/// The configured model, or the error every LLM route answers without one.
pub fn llm_of(state: &AppState) -> Result<Arc<Llm>> {
    state.llm.clone().ok_or_else(|| {
        Error::new(
            "llm-not-configured",
            "no language model is configured on this server; an administrator can set one up in the [llm] section (docs/llm.md)",
        )
    })
}

fn llm_error(error: LlmError) -> Error {
    Error::new(error.code(), error.to_string())
}

fn publish(state: &AppState, record: &SummaryRecord) {
    state.jobs.publish(FileEvent {
        kind: "summary.status",
        owner_id: record.owner_id.clone(),
        file_id: record.file_id.clone(),
        status: record.status.clone(),
        stage: record.stage.clone(),
        progress: record.progress,
        error: record.error.clone(),
    });
}

/// The map and reduce templates a user's summaries use (their own or the defaults).
pub fn templates_for(templates: &PromptTemplates) -> (String, String) {
    (
        templates
            .map
            .clone()
            .unwrap_or_else(|| text::DEFAULT_MAP_TEMPLATE.to_owned()),
        templates
            .reduce
            .clone()
            .unwrap_or_else(|| text::DEFAULT_REDUCE_TEMPLATE.to_owned()),
    )
}

/// Checks a user's templates; empty strings mean the default.
pub fn check_templates(mut templates: PromptTemplates) -> Result<PromptTemplates> {
    let invalid =
        |which: &str, why: String| Error::new("invalid-prompt", format!("{which}: {why}"));
    templates.map = templates.map.filter(|t| !t.trim().is_empty());
    templates.reduce = templates.reduce.filter(|t| !t.trim().is_empty());
    if let Some(map) = &templates.map {
        text::check_template(map, text::MAP_PLACEHOLDERS, "transcript")
            .map_err(|why| invalid("map", why))?;
    }
    if let Some(reduce) = &templates.reduce {
        text::check_template(reduce, text::REDUCE_PLACEHOLDERS, "notes")
            .map_err(|why| invalid("reduce", why))?;
    }
    Ok(templates)
}

/// Starts (or restarts) the summary of a file: the record is `running` when this returns.
pub async fn start_summary(
    state: &AppState,
    requester_id: &str,
    file: FileRecord,
    transcript: Transcript,
) -> Result<SummaryRecord> {
    let llm = llm_of(state)?;
    let store = state.store.clone();
    let requester = requester_id.to_owned();
    let templates = blocking(move || store.prompt_templates(&requester)).await?;
    let record = SummaryRecord {
        file_id: file.id.clone(),
        owner_id: file.owner_id.clone(),
        run_id: uuid::Uuid::now_v7().to_string(),
        status: "running".to_owned(),
        stage: "queued".to_owned(),
        model: llm.config.model.clone(),
        created_at: state.clock.now_secs(),
        requested_by: Some(requester_id.to_owned()),
        ..SummaryRecord::default()
    };
    let store = state.store.clone();
    let begun = record.clone();
    if !blocking(move || store.begin_summary(&begun)).await? {
        return Err(Error::not_found("file"));
    }
    publish(state, &record);
    let task_state = state.clone();
    let run_id = record.run_id.clone();
    let guard_llm = llm.clone();
    let runner = llm.clone();
    runner.spawn_run(async move {
        let _in_flight = guard_llm.track();
        let outcome = summarise(&task_state, &llm, &file, &transcript, &templates, &run_id).await;
        let now = task_state.clock.now_secs();
        let change = move |r: &mut SummaryRecord| {
            r.finished_at = Some(now);
            r.progress = 1.0;
            match outcome {
                Ok(result) => {
                    r.status = "done".to_owned();
                    r.stage = "done".to_owned();
                    r.summary = result.summary;
                    r.action_items = result.action_items;
                    r.decisions = result.decisions;
                    r.topics = result.topics;
                    r.speaker_names = result.speaker_names;
                    r.chunks = result.chunks;
                    r.error = None;
                }
                Err(e) => {
                    r.status = "error".to_owned();
                    r.stage = "error".to_owned();
                    r.error = Some(e.message);
                }
            }
        };
        let store = task_state.store.clone();
        let file_id = file.id.clone();
        match blocking(move || store.update_summary_run(&file_id, &run_id, change)).await {
            Ok(Some(record)) => {
                publish(&task_state, &record);
                if record.status == "done" {
                    task_state.files_changed(vec![record.file_id.clone()]);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot save a summary"),
        }
    });
    Ok(record)
}

/// Summarises a file as `requester` when its transcript is there: the follow-on stage of a
/// completed job and the restart of an interrupted run. `Ok(None)`: the file is gone.
async fn summarise_stored(
    state: &AppState,
    requester: &str,
    file_id: &str,
) -> Result<Option<SummaryRecord>> {
    let store = state.store.clone();
    let id = file_id.to_owned();
    let loaded = blocking(
        move || -> std::result::Result<_, crate::store::StoreError> {
            let Some(file) = store.get_file(&id)? else {
                return Ok(None);
            };
            let transcript = store.transcript_of::<Transcript>(&id)?;
            Ok(Some((file, transcript)))
        },
    )
    .await?;
    match loaded {
        None => Ok(None),
        Some((_, None)) => Err(Error::new(
            "transcript-not-ready",
            "the file's transcript is not ready",
        )),
        Some((file, Some(transcript))) => {
            match start_summary(state, requester, file, transcript).await {
                Ok(record) => Ok(Some(record)),
                Err(e) if e.code == "not-found" => Ok(None),
                Err(e) => Err(e),
            }
        }
    }
}

/// Summary runs the last shutdown left `running`: started again from the beginning (as whoever
/// started them, with their templates), or, without a model configured now, ended in `error`.
pub async fn resume_interrupted(state: &AppState) {
    let store = state.store.clone();
    let running = match blocking(move || store.running_summaries()).await {
        Ok(running) => running,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read interrupted summary runs");
            return;
        }
    };
    if running.is_empty() {
        return;
    }
    if state.llm.is_none() {
        let store = state.store.clone();
        let now = state.clock.now_secs();
        match blocking(move || store.interrupt_summaries(now)).await {
            Ok(n) => tracing::info!(
                summaries = n,
                "summary runs interrupted by the last shutdown (no model configured now)"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot mark interrupted summary runs"),
        }
        return;
    }
    tracing::info!(
        summaries = running.len(),
        "summary runs interrupted by the last shutdown start again"
    );
    for record in running {
        let requester = record
            .requested_by
            .clone()
            .unwrap_or_else(|| record.owner_id.clone());
        if let Err(e) = summarise_stored(state, &requester, &record.file_id).await {
            tracing::warn!(file_id = %record.file_id, error = %e, "an interrupted summary cannot start again");
            fail_run(state, &record, e.message).await;
        }
    }
}

/// Ends a run in `error` (only while it is still the file's current run).
async fn fail_run(state: &AppState, record: &SummaryRecord, message: String) {
    let store = state.store.clone();
    let (file_id, run_id) = (record.file_id.clone(), record.run_id.clone());
    let now = state.clock.now_secs();
    let change = move |r: &mut SummaryRecord| {
        r.status = "error".to_owned();
        r.stage = "error".to_owned();
        r.error = Some(message);
        r.finished_at = Some(now);
    };
    if let Ok(Some(record)) =
        blocking(move || store.update_summary_run(&file_id, &run_id, change)).await
    {
        publish(state, &record);
    }
}

/// With `llm.summarize_completed`, every file whose job completes is summarised as its owner
/// (a follow-on stage: the transcript is ready and searchable first; the summary's progress
/// goes out as `summary.status`). Runs left by the last shutdown start again first.
pub fn spawn_follow_on(
    state: AppState,
    shutdown: tokio_util::sync::CancellationToken,
    tracker: &tokio_util::task::TaskTracker,
) {
    let mut events = state.jobs.events.subscribe();
    tracker.spawn(async move {
        resume_interrupted(&state).await;
        if state.llm.is_none() || !state.config.llm.summarize_completed {
            return;
        }
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                event = events.recv() => event,
            };
            match event {
                Ok(event) if event.kind == "file.completed" => {
                    match summarise_stored(&state, &event.owner_id, &event.file_id).await {
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(file_id = %event.file_id, error = %e, "cannot summarise a completed file")
                        }
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "summary follow-on missed job events")
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// What a finished run produced.
struct SummaryResult {
    summary: String,
    action_items: Vec<SummaryItem>,
    decisions: Vec<SummaryItem>,
    topics: Vec<SummaryItem>,
    speaker_names: Vec<NameSuggestion>,
    chunks: usize,
}

async fn progress(state: &AppState, file_id: &str, run_id: &str, stage: String, fraction: f32) {
    let store = state.store.clone();
    let (file_id, run_id) = (file_id.to_owned(), run_id.to_owned());
    let change = move |r: &mut SummaryRecord| {
        r.stage = stage;
        r.progress = fraction;
    };
    if let Ok(Some(record)) =
        blocking(move || store.update_summary_run(&file_id, &run_id, change)).await
    {
        publish(state, &record);
    }
}

async fn summarise(
    state: &AppState,
    llm: &Llm,
    file: &FileRecord,
    transcript: &Transcript,
    templates: &PromptTemplates,
    run_id: &str,
) -> Result<SummaryResult> {
    let lines = text::lines_of(transcript);
    if lines.is_empty() {
        return Err(Error::new(
            "transcript-not-ready",
            "the transcript has no text to summarise",
        ));
    }
    let (map_template, reduce_template) = templates_for(templates);
    let config = &llm.config;
    let language = if transcript.language.is_empty() {
        "unknown"
    } else {
        transcript.language.as_str()
    };
    let map_system = text::summary_system(text::MAP_SYSTEM);
    let reduce_system = text::summary_system(text::REDUCE_SYSTEM);
    // What the prompt costs without the transcript (part numbers up to 5 digits).
    let shell = text::render(
        &map_template,
        &[
            ("transcript", ""),
            ("filename", &file.filename),
            ("language", language),
            ("part", "99999"),
            ("parts", "99999"),
        ],
    );
    let overhead = text::estimate_tokens(&map_system)
        + text::estimate_tokens(&shell)
        + text::PROMPT_MARGIN_TOKENS;
    let budget = config
        .context_tokens
        .saturating_sub(config.max_output_tokens + overhead);
    if budget < 32 {
        return Err(Error::new(
            "llm-bad-output",
            "llm.context_tokens is too small for the prompt and llm.max_output_tokens",
        ));
    }
    let chunks = text::chunk_turns(&lines, budget);
    let parts = chunks.len();
    let mut notes = Vec::with_capacity(parts);
    for (i, chunk) in chunks.iter().enumerate() {
        progress(
            state,
            &file.id,
            run_id,
            format!("map {}/{parts}", i + 1),
            i as f32 / (parts + 1) as f32,
        )
        .await;
        let user = text::render(
            &map_template,
            &[
                ("transcript", chunk),
                ("filename", &file.filename),
                ("language", language),
                ("part", &(i + 1).to_string()),
                ("parts", &parts.to_string()),
            ],
        );
        let answer = llm
            .chat(&messages(&map_system, user), config.max_output_tokens)
            .await
            .map_err(llm_error)?;
        // A part whose answer is not JSON still contributes its text, marked as such.
        notes.push(match text::extract_json(&answer) {
            Some(value) => Notes::from_value(&value),
            None => Notes {
                summary: text::cut_to_tokens(answer.trim(), 400),
                ..Notes::default()
            },
        });
    }
    progress(
        state,
        &file.id,
        run_id,
        "reduce".to_owned(),
        parts as f32 / (parts + 1) as f32,
    )
    .await;
    let reduce_shell = text::render(
        &reduce_template,
        &[
            ("notes", ""),
            ("filename", &file.filename),
            ("language", language),
            ("parts", "99999"),
        ],
    );
    let reduce_budget = config.context_tokens.saturating_sub(
        config.max_output_tokens
            + text::estimate_tokens(&reduce_system)
            + text::estimate_tokens(&reduce_shell)
            + text::PROMPT_MARGIN_TOKENS,
    );
    let mut round = 0;
    let final_notes = loop {
        round += 1;
        let rendered: Vec<String> = notes
            .iter()
            .enumerate()
            // Each note at most half the budget, so that any two fit one request.
            .map(|(i, n)| fit_note(i + 1, n, reduce_budget / 2))
            .collect();
        // Batches of notes that fit; each takes at least two (which always fit), so every
        // round shrinks them.
        let mut batches: Vec<Vec<String>> = Vec::new();
        let mut used = 0;
        for note in rendered {
            let cost = text::estimate_tokens(&note);
            match batches.last_mut() {
                Some(batch) if batch.len() < 2 || used + cost <= reduce_budget => {
                    used += cost;
                    batch.push(note);
                }
                _ => {
                    used = cost;
                    batches.push(vec![note]);
                }
            }
        }
        let last_round = batches.len() == 1 || round >= MAX_REDUCE_ROUNDS;
        let mut reduced = Vec::with_capacity(batches.len());
        for batch in &batches {
            let user = text::render(
                &reduce_template,
                &[
                    ("notes", &batch.join("\n")),
                    ("filename", &file.filename),
                    ("language", language),
                    ("parts", &batch.len().to_string()),
                ],
            );
            let answer = llm
                .chat(&messages(&reduce_system, user), config.max_output_tokens)
                .await
                .map_err(llm_error)?;
            let Some(value) = text::extract_json(&answer) else {
                return Err(Error::new(
                    "llm-bad-output",
                    format!(
                        "the model did not answer with the JSON summary asked for; its answer began: {:?}",
                        answer.chars().take(120).collect::<String>()
                    ),
                ));
            };
            reduced.push(Notes::from_value(&value));
        }
        if last_round {
            break reduced.into_iter().next().unwrap_or_default();
        }
        notes = reduced;
    };
    Ok(SummaryResult {
        summary: final_notes.summary.clone(),
        action_items: snap_items(&final_notes.action_items, &lines),
        decisions: snap_items(&final_notes.decisions, &lines),
        topics: snap_items(&final_notes.topics, &lines),
        speaker_names: check_names(&final_notes, transcript),
        chunks: parts,
    })
}

/// A part's notes as one line of the reduce prompt, within `tokens`: the last items of the
/// longest list go first, then the summary is shortened; the line stays valid JSON.
fn fit_note(part: usize, notes: &Notes, tokens: usize) -> String {
    let mut notes = notes.clone();
    loop {
        let line = format!("Part {part}: {}", notes.to_value());
        if text::estimate_tokens(&line) <= tokens {
            return line;
        }
        let lists = [
            notes.action_items.len(),
            notes.decisions.len(),
            notes.topics.len(),
            notes.speaker_names.len(),
        ];
        let longest = (0..4).max_by_key(|&i| lists[i]).unwrap_or(0);
        if lists[longest] > 0 {
            match longest {
                0 => notes.action_items.pop(),
                1 => notes.decisions.pop(),
                2 => notes.topics.pop(),
                _ => notes.speaker_names.pop().map(|_| RawItem::default()),
            };
        } else if notes.summary.chars().count() > 20 {
            let keep = notes.summary.chars().count() / 2;
            notes.summary = notes.summary.chars().take(keep).collect::<String>() + "…";
        } else {
            return text::cut_to_tokens(&line, tokens);
        }
    }
}

fn messages(system: &str, user: String) -> Vec<Message> {
    vec![
        Message {
            role: "system",
            content: system.to_owned(),
        },
        Message {
            role: "user",
            content: user,
        },
    ]
}

/// The line a time falls in (half a second of slack), by its start.
fn line_at(lines: &[Line], time: f64) -> Option<&Line> {
    lines
        .iter()
        .filter(|l| time >= l.start - 0.5 && time <= l.end + 0.5)
        .min_by(|a, b| (a.start - time).abs().total_cmp(&(b.start - time).abs()))
}

/// Items with their time moved to the start of the segment it falls in; a time that names
/// no segment is dropped (the item stays).
fn snap_items(items: &[RawItem], lines: &[Line]) -> Vec<SummaryItem> {
    items
        .iter()
        .map(|item| SummaryItem {
            text: item.text.clone(),
            owner: item.owner.clone(),
            time: item
                .time
                .and_then(|t| line_at(lines, t))
                .map(|l| (l.start * 10.0).round() / 10.0),
        })
        .collect()
}

/// Whether `name` occurs in `text` as a whole word, ignoring case.
fn says_name(text: &str, name: &str) -> bool {
    let text = text.to_lowercase();
    let name = name.to_lowercase();
    let mut from = 0;
    while let Some(at) = text[from..].find(&name) {
        let start = from + at;
        let end = start + name.len();
        let before = text[..start].chars().next_back();
        let after = text[end..].chars().next();
        if !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric) {
            return true;
        }
        from = end;
    }
    false
}

/// Name suggestions kept only for a real speaker of the file and a name the transcript says;
/// the evidence is the segment that says it (the one nearest the model's time).
fn check_names(notes: &Notes, transcript: &Transcript) -> Vec<NameSuggestion> {
    let mut out: Vec<NameSuggestion> = Vec::new();
    for raw in &notes.speaker_names {
        let name = raw.name.trim();
        if name.is_empty() || name.chars().count() > 60 {
            continue;
        }
        let wanted = raw.speaker.trim().to_lowercase();
        let Some(speaker) = transcript.speakers.iter().find(|s| {
            s.id.to_lowercase() == wanted
                || s.label.to_lowercase() == wanted
                || s.name
                    .as_deref()
                    .is_some_and(|n| n.to_lowercase() == wanted)
        }) else {
            continue;
        };
        let near = raw.time.unwrap_or(0.0);
        let Some(segment) = transcript
            .segments
            .iter()
            .filter(|s| says_name(&s.text, name))
            .min_by(|a, b| (a.start - near).abs().total_cmp(&(b.start - near).abs()))
        else {
            continue;
        };
        if out
            .iter()
            .any(|o| o.speaker == speaker.id && o.name.eq_ignore_ascii_case(name))
        {
            continue;
        }
        out.push(NameSuggestion {
            speaker: speaker.id.clone(),
            name: name.to_owned(),
            evidence: segment.text.trim().chars().take(300).collect(),
            time: (segment.start * 10.0).round() / 10.0,
        });
    }
    out
}

/// A cited segment of an answer.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Citation {
    pub start: f64,
    pub end: f64,
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub answer: String,
    pub citations: Vec<Citation>,
    pub model: String,
    /// Segments given to the model.
    pub segments_used: usize,
}

/// Answers a question about one transcript from its most relevant segments.
pub async fn ask(
    state: &AppState,
    file: &FileRecord,
    transcript: &Transcript,
    question: &str,
) -> Result<Answer> {
    let llm = llm_of(state)?;
    let question = question.trim();
    if question.is_empty() || question.chars().count() > MAX_QUESTION_CHARS {
        return Err(Error::new(
            "invalid-question",
            format!("question: 1 to {MAX_QUESTION_CHARS} characters"),
        ));
    }
    let _in_flight = llm.track();
    let config = &llm.config;
    let lines = text::lines_of(transcript);
    let head = format!("Excerpts of \"{}\":\n", file.filename);
    let tail = format!("\nQuestion: {question}");
    let budget = config.context_tokens.saturating_sub(
        config.max_output_tokens
            + text::estimate_tokens(text::ASK_SYSTEM)
            + text::estimate_tokens(&head)
            + text::estimate_tokens(&tail)
            + text::PROMPT_MARGIN_TOKENS,
    );
    let chosen = text::select_lines(&lines, question, budget);
    let shown: Vec<&Line> = chosen.iter().map(|&i| &lines[i]).collect();
    let mut user = head;
    for line in &shown {
        user.push_str(&line.render());
        user.push('\n');
    }
    user.push_str(&tail);
    let answer = llm
        .chat(&messages(text::ASK_SYSTEM, user), config.max_output_tokens)
        .await
        .map_err(llm_error)?;
    let mut citations: Vec<Citation> = Vec::new();
    for time in text::citations(&answer) {
        let Some(line) = shown
            .iter()
            .copied()
            .filter(|l| (l.start - time).abs() <= 0.51 || (time >= l.start && time <= l.end))
            .min_by(|a, b| (a.start - time).abs().total_cmp(&(b.start - time).abs()))
        else {
            continue;
        };
        if !citations.iter().any(|c| c.start == line.start) {
            citations.push(Citation {
                start: line.start,
                end: line.end,
                text: line.text.clone(),
            });
        }
    }
    Ok(Answer {
        answer: answer.trim().to_owned(),
        citations,
        model: config.model.clone(),
        segments_used: shown.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_whole_words() {
        assert!(says_name("Thanks, Maria.", "maria"));
        assert!(!says_name("Thanks, Mariana.", "Maria"));
        assert!(!says_name("nothing here", "Maria"));
    }
}
