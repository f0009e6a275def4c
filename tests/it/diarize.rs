//! Speaker diarization on generated conversations (espeak-ng voices mixed with sox, reference
//! RTTM and words per speaker): DER bounds, word-level speaker accuracy through the real
//! binary, speaker-count flags, and cross-file voice matching.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use opentranscribe::config::Config;
use opentranscribe::diarize::metrics::{Turn, best_assignment, der, parse_rttm};
use opentranscribe::diarize::profiles::{MatchDecision, MatchThresholds, match_profiles};
use opentranscribe::diarize::{Diarization, DiarizeOptions};
use opentranscribe::pipeline::Stage;
use serde_json::Value;

/// Generates the corpus once per test run (the script skips files that are up to date).
pub fn corpus() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join("opentranscribe-diarize-corpus");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-diarize-corpus");
        let status = Command::new(script)
            .arg("--out")
            .arg(&dir)
            .status()
            .expect("scripts/make-diarize-corpus runs (needs python3, espeak-ng, sox)");
        assert!(status.success());
        dir
    })
}

fn reference(name: &str) -> Vec<Turn> {
    parse_rttm(&std::fs::read_to_string(corpus().join(format!("{name}.rttm"))).unwrap()).unwrap()
}

fn config() -> Config {
    Config {
        models_dir: crate::models::models_dir(),
        ..Config::default()
    }
}

fn diarize(name: &str, options: &DiarizeOptions) -> Diarization {
    let mut diarizer = opentranscribe::pipeline::load_diarizer(&config()).unwrap();
    opentranscribe::pipeline::diarize_file(
        &mut diarizer,
        &corpus().join(format!("{name}.wav")),
        options,
        &mut |_: Stage| std::ops::ControlFlow::Continue(()),
    )
    .unwrap()
}

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_opentranscribe"));
    command.env_remove("OPENTRANSCRIBE_CONFIG");
    command
}

fn transcribe(file: &Path, extra: &[&str]) -> String {
    let output = binary()
        .arg("transcribe")
        .arg(file)
        .args([
            "--model",
            "whisper-tiny.en",
            "--language",
            "en",
            "--beam",
            "1",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// DER bounds per file, from measurements (scripts/bench-diarize, 2026-11-29): conv2a 3.7 %,
/// conv2b 2.8 %, conv3 19.7 %, conv4 37.8 % without collar. Two-voice files must stay near
/// their figure; the bounds for 3 and 4 voices record today's weaker clustering so that a
/// regression shows, not a goal.
#[test]
fn der_on_the_synthetic_corpus_stays_within_measured_bounds() {
    for (name, bound, voices) in [
        ("conv2a", 0.08, 2),
        ("conv2b", 0.08, 2),
        ("conv3", 0.30, 3),
        ("conv4", 0.50, 4),
    ] {
        let result = diarize(name, &DiarizeOptions::default());
        let report = der(&reference(name), &result.turns, 0.0);
        eprintln!(
            "{name}: DER {:.3} with {} speakers",
            report.der,
            result.speakers.len()
        );
        assert!(report.der <= bound, "{name}: DER {} > {bound}", report.der);
        assert!(result.speakers.len() >= 2 && result.speakers.len() <= voices);
        for speaker in &result.speakers {
            assert_eq!(speaker.centroid.len(), 192);
            let norm: f32 = speaker.centroid.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-3);
        }
    }
}

#[test]
fn a_fixed_speaker_count_is_honoured() {
    // conv4 has four voices; told four it finds them (measured DER 0.148; left alone it now
    // finds four too, DER 0.142, where it found three before issue 19).
    for (name, n, bound) in [("conv2b", 1, 1.0), ("conv4", 2, 1.0), ("conv4", 4, 0.25)] {
        let options = DiarizeOptions {
            num_speakers: Some(n),
            ..DiarizeOptions::default()
        };
        let result = diarize(name, &options);
        assert_eq!(result.speakers.len(), n, "{name} --speakers {n}");
        let report = der(&reference(name), &result.turns, 0.0);
        assert!(
            report.der <= bound,
            "{name} --speakers {n}: DER {}",
            report.der
        );
    }
}

#[test]
fn the_same_voice_in_two_files_matches_its_profile_and_other_voices_do_not() {
    // conv2a has voices v0 and v1; conv3 has v0, v4 and v1.
    let first = diarize("conv2a", &DiarizeOptions::default());
    let second = diarize("conv3", &DiarizeOptions::default());
    let voice_of = |name: &str, result: &Diarization| {
        let mapping = der(&reference(name), &result.turns, 0.0).mapping;
        result
            .speakers
            .iter()
            .map(|s| mapping.get(&s.id).cloned().unwrap_or_default())
            .collect::<Vec<String>>()
    };
    let profiles: Vec<(String, Vec<f32>)> = voice_of("conv2a", &first)
        .into_iter()
        .zip(&first.speakers)
        .map(|(voice, s)| (voice, s.centroid.clone()))
        .collect();
    let centroids: Vec<Vec<f32>> = second.speakers.iter().map(|s| s.centroid.clone()).collect();
    let matches = match_profiles(&centroids, &profiles, MatchThresholds::default());
    let voices = voice_of("conv3", &second);
    let mut matched_known = 0;
    for (m, voice) in matches.iter().zip(&voices) {
        eprintln!(
            "{voice}: {:?} {:.3} {:?}",
            m.profile_id, m.cosine, m.decision
        );
        if voice == "v0" || voice == "v1" {
            assert_eq!(m.decision, MatchDecision::Assigned, "{voice}: {m:?}");
            assert_eq!(m.profile_id.as_deref(), Some(voice.as_str()));
            matched_known += 1;
        } else {
            assert_ne!(m.decision, MatchDecision::Assigned, "{voice}: {m:?}");
        }
    }
    assert_eq!(matched_known, 2);
}

/// The speaker each reference utterance gives a time (several when utterances overlap; the
/// nearest when the time falls in a pause).
fn reference_speakers_at(utterances: &[Value], time: f64) -> Vec<String> {
    let inside: Vec<String> = utterances
        .iter()
        .filter(|u| u["start"].as_f64().unwrap() <= time && time <= u["end"].as_f64().unwrap())
        .map(|u| u["speaker"].as_str().unwrap().to_owned())
        .collect();
    if !inside.is_empty() {
        return inside;
    }
    let nearest = utterances
        .iter()
        .min_by(|a, b| {
            let gap = |u: &Value| {
                (u["start"].as_f64().unwrap() - time)
                    .abs()
                    .min((u["end"].as_f64().unwrap() - time).abs())
            };
            gap(a).total_cmp(&gap(b))
        })
        .unwrap();
    vec![nearest["speaker"].as_str().unwrap().to_owned()]
}

#[test]
fn transcribe_labels_words_with_the_right_speaker_on_two_voice_files() {
    for name in ["conv2a", "conv2b"] {
        let json: Value =
            serde_json::from_str(&transcribe(&corpus().join(format!("{name}.wav")), &[])).unwrap();
        let speakers = json["speakers"].as_array().unwrap();
        assert_eq!(speakers.len(), 2, "{name}");
        assert!(
            speakers
                .iter()
                .all(|s| s["id"] == s["label"] && s["name"].is_null())
        );
        let reference: Value = serde_json::from_str(
            &std::fs::read_to_string(corpus().join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        let utterances = reference["utterances"].as_array().unwrap();
        let mut words: Vec<(String, Vec<String>)> = Vec::new();
        for segment in json["segments"].as_array().unwrap() {
            let segment_speaker = segment["speaker"].as_str().expect("segment speaker");
            for word in segment["words"].as_array().unwrap() {
                let speaker = word["speaker"].as_str().expect("word speaker");
                assert_eq!(
                    speaker, segment_speaker,
                    "segments split at speaker changes"
                );
                let middle =
                    (word["start"].as_f64().unwrap() + word["end"].as_f64().unwrap()) / 2.0;
                words.push((
                    speaker.to_owned(),
                    reference_speakers_at(utterances, middle),
                ));
            }
        }
        assert!(words.len() > 100, "{name}: only {} words", words.len());
        // Optimal one-to-one mapping of our labels to voices, then the share of words right.
        let ours: Vec<String> = speakers
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect();
        let mut voices: Vec<String> = words.iter().flat_map(|(_, r)| r.clone()).collect();
        voices.sort();
        voices.dedup();
        let weights: Vec<Vec<f64>> = ours
            .iter()
            .map(|o| {
                voices
                    .iter()
                    .map(|v| {
                        words
                            .iter()
                            .filter(|(h, r)| h == o && r.contains(v))
                            .count() as f64
                    })
                    .collect()
            })
            .collect();
        let assignment = best_assignment(&weights);
        let right = words
            .iter()
            .filter(|(h, r)| {
                let index = ours.iter().position(|o| o == h).unwrap();
                assignment[index].is_some_and(|v| r.contains(&voices[v]))
            })
            .count();
        let accuracy = right as f64 / words.len() as f64;
        eprintln!(
            "{name}: {right}/{} words with the right speaker ({accuracy:.3})",
            words.len()
        );
        assert!(accuracy >= 0.95, "{name}: word speaker accuracy {accuracy}");
    }
}

#[test]
fn transcribe_flags_rttm_speaker_count_and_no_diarize() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("clip.wav");
    let status = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-i"])
        .arg(corpus().join("conv2b.wav"))
        .args(["-t", "30"])
        .arg(&clip)
        .status()
        .unwrap();
    assert!(status.success());

    let rttm = transcribe(&clip, &["--format", "rttm"]);
    let turns = parse_rttm(&rttm).unwrap();
    assert!(
        rttm.lines().all(|l| l.starts_with("SPEAKER clip 1 ")),
        "{rttm}"
    );
    let found: std::collections::BTreeSet<&str> =
        turns.iter().map(|t| t.speaker.as_str()).collect();
    assert_eq!(found.len(), 2, "{rttm}");
    let reference: Vec<Turn> = reference("conv2b")
        .into_iter()
        .filter(|t| t.start < 30.0)
        .map(|t| Turn {
            end: t.end.min(30.0),
            ..t
        })
        .collect();
    assert!(der(&reference, &turns, 0.0).der < 0.1);

    let fixed = transcribe(&clip, &["--format", "rttm", "--speakers", "1"]);
    let found: std::collections::BTreeSet<String> = parse_rttm(&fixed)
        .unwrap()
        .into_iter()
        .map(|t| t.speaker)
        .collect();
    assert_eq!(found.len(), 1, "{fixed}");

    let plain: Value = serde_json::from_str(&transcribe(&clip, &["--no-diarize"])).unwrap();
    assert!(plain["speakers"].as_array().unwrap().is_empty());
    assert!(!plain["segments"].as_array().unwrap().is_empty());
    assert!(plain["segments"].as_array().unwrap().iter().all(|s| {
        s["speaker"].is_null()
            && s["words"]
                .as_array()
                .unwrap()
                .iter()
                .all(|w| w.get("speaker").is_none())
    }));

    let refused = binary()
        .arg("transcribe")
        .arg(&clip)
        .arg("--models-dir")
        .arg(crate::models::models_dir())
        .args(["--min-speakers", "4", "--max-speakers", "2"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("min_speakers"));
}

/// Conversations of real people (scripts/make-diarize-corpus-real: Asterisk prompt speakers,
/// codec2 and pocketsphinx sample speakers, pyannote.audio's sample), generated once per run.
/// Only held-out files, never used to choose parameters.
fn real_corpus() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join("opentranscribe-diarize-real");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-diarize-corpus-real");
        let status = Command::new(script)
            .arg("--out")
            .arg(&dir)
            .args(["--files", "h09,pyannote-sample,h01"])
            .status()
            .expect("scripts/make-diarize-corpus-real runs (needs python3, ffmpeg, sox, apt-get)");
        assert!(status.success());
        dir
    })
}

fn diarize_real(name: &str, options: &DiarizeOptions) -> (Diarization, Vec<Turn>) {
    let mut diarizer = opentranscribe::pipeline::load_diarizer(&config()).unwrap();
    let result = opentranscribe::pipeline::diarize_file(
        &mut diarizer,
        &real_corpus().join(format!("{name}.wav")),
        options,
        &mut |_: Stage| std::ops::ControlFlow::Continue(()),
    )
    .unwrap();
    let reference =
        parse_rttm(&std::fs::read_to_string(real_corpus().join(format!("{name}.rttm"))).unwrap())
            .unwrap();
    (result, reference)
}

/// Held-out meeting of six real people (h09: room reverberation and noise, 150 s, two quiet
/// participants), no speaker count given. Bounds from measurement (see the test's eprintln and
/// docs/diarization.md): a regression shows, a lucky run does not pass a broken pipeline.
#[test]
fn a_real_six_person_meeting_without_a_count() {
    let (result, reference) = diarize_real("h09", &DiarizeOptions::default());
    let report = der(&reference, &result.turns, 0.0);
    let collared = der(&reference, &result.turns, 0.25);
    eprintln!(
        "h09: DER {:.3} (collar 0.25: {:.3}), {} speakers",
        report.der,
        collared.der,
        result.speakers.len()
    );
    // Six people; we find nine today (three quiet voices split or over-detected under
    // reverberation), recorded here so that neither a collapse nor more splitting passes.
    assert!(
        (5..=9).contains(&result.speakers.len()),
        "{}",
        result.speakers.len()
    );
    assert!(report.der <= BOUND_H09, "h09: DER {}", report.der);
    // Every reference speaker with at least 10 s of speech is mapped to one of ours.
    let mut talk: std::collections::BTreeMap<&str, f64> = Default::default();
    for t in &reference {
        *talk.entry(t.speaker.as_str()).or_default() += t.end - t.start;
    }
    for (speaker, seconds) in talk {
        if seconds >= 10.0 {
            assert!(
                report.mapping.values().any(|v| v == speaker),
                "{speaker} ({seconds:.0} s) has no cluster: {:?}",
                report.mapping
            );
        }
    }
}

/// Real two-person recordings told the count: pyannote.audio's sample (its own reference) and
/// h01, a 30 s phone call (300-3400 Hz, mu-law) with overlap.
#[test]
fn real_two_person_recordings_told_the_count() {
    for (name, bound) in [("pyannote-sample", BOUND_SAMPLE), ("h01", BOUND_H01)] {
        let options = DiarizeOptions {
            num_speakers: Some(2),
            ..DiarizeOptions::default()
        };
        let (result, reference) = diarize_real(name, &options);
        let report = der(&reference, &result.turns, 0.0);
        eprintln!("{name}: DER {:.3} told 2", report.der);
        assert_eq!(result.speakers.len(), 2, "{name}");
        assert!(report.der <= bound, "{name}: DER {}", report.der);
    }
}

/// min/max speakers bound the count that the threshold would choose.
#[test]
fn speaker_count_limits_on_a_real_meeting() {
    let at_most = DiarizeOptions {
        max_speakers: Some(3),
        ..DiarizeOptions::default()
    };
    let (result, _) = diarize_real("h09", &at_most);
    assert!(result.speakers.len() <= 3, "{}", result.speakers.len());
    let at_least = DiarizeOptions {
        min_speakers: Some(8),
        ..DiarizeOptions::default()
    };
    let (result, _) = diarize_real("h09", &at_least);
    eprintln!("h09 min 8: {} speakers", result.speakers.len());
    assert!(result.speakers.len() >= 8, "{}", result.speakers.len());
}

// Measured 2026-12-05 (debug build, 2 cores): h09 DER 0.351 (collar 0.25: 0.252) with 9
// speakers; pyannote-sample 0.079; h01 0.171. The pipeline before issue 19: h09 0.350 with 5
// speakers, pyannote-sample 0.066, h01 0.165 (see docs/diarization.md).
const BOUND_H09: f64 = 0.40;
const BOUND_SAMPLE: f64 = 0.12;
const BOUND_H01: f64 = 0.22;
