//! Speech recognition on real read speech (LibriVox clips from Debian's pocketsphinx-testdata).

use opentranscribe::asr::transcribe::{TranscribeOptions, transcribe};
use opentranscribe::asr::whisper::WhisperModel;
use opentranscribe::models::cache::ModelCache;
use opentranscribe::models::runtime::{Device, Runtime, RuntimeSettings};

pub const LIBRIVOX: &str = "/usr/share/pocketsphinx/test/data/librivox";

/// 16-bit mono 16 kHz PCM WAV to f32 (the LibriVox clips are exactly that).
pub fn read_pcm16_wav(path: &std::path::Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let data = bytes.windows(4).position(|w| w == b"data").unwrap() + 8;
    bytes[data..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]) as f32 / 32768.0)
        .collect()
}

/// Reference transcripts by clip id.
pub fn references() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(format!("{LIBRIVOX}/transcription")).unwrap();
    text.lines()
        .filter_map(|line| {
            let (words, id) = line.rsplit_once(" (")?;
            Some((id.trim_end_matches(')').to_owned(), words.to_lowercase()))
        })
        .collect()
}

/// Lower case; punctuation, hyphens and `<s>` markers to spaces; spoken forms of abbreviations.
pub fn normalize(text: &str) -> Vec<String> {
    text.to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' || c.is_whitespace() {
                c
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .filter(|w| *w != "s")
        .map(|w| match w {
            "mr" => "mister".to_owned(),
            "mrs" => "missus".to_owned(),
            other => other.to_owned(),
        })
        .collect()
}

/// Word error rate by edit distance over words.
pub fn wer(reference: &[String], hypothesis: &[String]) -> f64 {
    let mut previous: Vec<usize> = (0..=hypothesis.len()).collect();
    for (i, r) in reference.iter().enumerate() {
        let mut current = vec![i + 1; hypothesis.len() + 1];
        for (j, h) in hypothesis.iter().enumerate() {
            let substitution = previous[j] + usize::from(r != h);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[hypothesis.len()] as f64 / reference.len().max(1) as f64
}

pub fn load_model(name: &str) -> WhisperModel {
    let dir = crate::models::models_dir();
    let runtime = Runtime::get_or_init(&RuntimeSettings {
        library: None,
        models_dir: dir.clone(),
        device: Device::Auto,
        device_id: 0,
        threads: 0,
    })
    .unwrap();
    let manifest = ModelCache::new(&dir).model(name).manifest.unwrap();
    WhisperModel::load(&runtime, &dir.join(name), &manifest, false).unwrap()
}

#[test]
fn transcribes_librivox_clips_with_low_word_error_rate() {
    let mut model = load_model("whisper-tiny.en");
    let mut total_errors = 0.0;
    let mut total_words = 0usize;
    for (id, reference) in references() {
        let samples = read_pcm16_wav(std::path::Path::new(&format!("{LIBRIVOX}/{id}.wav")));
        let transcript = transcribe(
            &mut model,
            &samples,
            &TranscribeOptions::default(),
            &mut |_| {},
        )
        .unwrap();
        let text: Vec<String> = transcript.segments.iter().map(|s| s.text.clone()).collect();
        let hypothesis = normalize(&text.join(" "));
        let reference = normalize(&reference);
        let error = wer(&reference, &hypothesis);
        println!("{id}: WER {error:.3}: {}", text.join(" "));
        total_errors += error * reference.len() as f64;
        total_words += reference.len();
        assert_eq!(transcript.language, "en");
        for segment in &transcript.segments {
            assert!(segment.start <= segment.end && segment.end <= transcript.duration + 0.01);
        }
    }
    let overall = total_errors / total_words as f64;
    println!("overall WER {overall:.3} over {total_words} words");
    assert!(overall < 0.08, "WER {overall}");
}
