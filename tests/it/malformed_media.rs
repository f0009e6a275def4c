//! Malformed media, property style (cargo-fuzz is not installed here; see docs/reliability.md):
//! seeds in five containers/codecs made by ffmpeg, then zero-length, truncated, bit-flipped and
//! absurd-header variants. `media::probe` and `media::decode` must answer each one (an error or
//! a result) without panicking, within a time bound, and must refuse what holds no audio.

use std::io::Cursor;
use std::ops::ControlFlow;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use opentranscribe::media::{decode, probe};

use crate::support::sine_wav;

/// What probing and decoding one input did.
#[derive(Debug)]
struct Outcome {
    probed: bool,
    decoded_samples: Option<usize>,
}

/// Probes and decodes on another thread; `None` when it panicked or ran past `limit`.
fn run_bounded(bytes: Vec<u8>, limit: Duration) -> Result<Outcome, String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let result = std::panic::catch_unwind(|| {
            let probed = probe::probe(Box::new(Cursor::new(bytes.clone()))).is_ok();
            let mut samples = 0usize;
            let decoded = decode::decode_to_mono_16k(Box::new(Cursor::new(bytes)), 16_000, |s| {
                samples += s.len();
                // Ten minutes is more than any seed holds: a header that claims more is bounded.
                if samples > 16_000 * 600 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            Outcome {
                probed,
                decoded_samples: decoded.ok().map(|_| samples),
            }
        });
        let _ = sender.send(result.map_err(|_| "panicked".to_owned()));
    });
    match receiver.recv_timeout(limit) {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}

fn ffmpeg_seed(wav: &std::path::Path, args: &[&str], extension: &str) -> Option<Vec<u8>> {
    let out = wav.with_extension(extension);
    let status = std::process::Command::new("ffmpeg")
        .args(["-y", "-loglevel", "error", "-i"])
        .arg(wav)
        .args(args)
        .arg(&out)
        .status()
        .ok()?;
    status.success().then(|| std::fs::read(&out).unwrap())
}

/// A deterministic generator, so a failure names a reproducible case.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

#[test]
fn malformed_media_gets_an_answer_in_bounded_time() {
    let dir = tempfile::tempdir().unwrap();
    let wav = sine_wav(2.0, 16_000, 440.0);
    let wav_path = dir.path().join("seed.wav");
    std::fs::write(&wav_path, &wav).unwrap();
    let mut seeds = vec![("wav", wav.clone())];
    for (name, args) in [
        ("mp3", &["-c:a", "libmp3lame", "-b:a", "64k"][..]),
        ("flac", &["-c:a", "flac"][..]),
        ("ogg", &["-c:a", "libopus", "-b:a", "32k"][..]),
        ("m4a", &["-c:a", "aac", "-b:a", "64k"][..]),
    ] {
        let seed = ffmpeg_seed(&wav_path, args, name)
            .unwrap_or_else(|| panic!("ffmpeg could not make the {name} seed"));
        seeds.push((name, seed));
    }
    // Each seed decodes as it is: the mutations below start from working media.
    for (name, seed) in &seeds {
        let outcome = run_bounded(seed.clone(), Duration::from_secs(30)).unwrap();
        assert!(outcome.probed, "{name} seed does not probe");
        assert!(
            outcome.decoded_samples.unwrap_or(0) > 16_000,
            "{name} seed: {outcome:?}"
        );
    }

    let mut cases: Vec<(String, Vec<u8>)> = vec![("zero-length".into(), Vec::new())];
    let mut rng = Lcg(0x5eed);
    for (name, seed) in &seeds {
        for cut in [1, 4, 12, 44, 100, 1000, seed.len() / 2, seed.len() - 1] {
            if cut < seed.len() {
                cases.push((format!("{name} truncated to {cut}"), seed[..cut].to_vec()));
            }
        }
        for round in 0..12 {
            let mut bytes = seed.clone();
            // Flips concentrated in the headers for half the rounds.
            let span = if round % 2 == 0 {
                bytes.len().min(256)
            } else {
                bytes.len()
            };
            for _ in 0..(1 + rng.next() % 16) {
                let at = (rng.next() as usize) % span;
                bytes[at] ^= 1 << (rng.next() % 8);
            }
            cases.push((format!("{name} bit flips #{round}"), bytes));
        }
        cases.push((
            format!("{name} behind 4 KiB of zeros"),
            [vec![0u8; 4096], seed.clone()].concat(),
        ));
    }
    // Absurd WAV headers: sizes, rates, channels and sample widths no real file has.
    let patch = |offset: usize, value: &[u8]| {
        let mut bytes = wav.clone();
        bytes[offset..offset + value.len()].copy_from_slice(value);
        bytes
    };
    for (name, bytes) in [
        ("RIFF size 4 GiB", patch(4, &u32::MAX.to_le_bytes())),
        ("data size 4 GiB", patch(40, &u32::MAX.to_le_bytes())),
        ("0 channels", patch(22, &0u16.to_le_bytes())),
        ("65535 channels", patch(22, &u16::MAX.to_le_bytes())),
        ("sample rate 0", patch(24, &0u32.to_le_bytes())),
        ("sample rate 4 GHz", patch(24, &u32::MAX.to_le_bytes())),
        ("0 bits per sample", patch(34, &0u16.to_le_bytes())),
        ("65535 bits per sample", patch(34, &u16::MAX.to_le_bytes())),
        ("block align 0", patch(32, &0u16.to_le_bytes())),
        ("fmt chunk 4 GiB", patch(16, &u32::MAX.to_le_bytes())),
    ] {
        cases.push((format!("wav {name}"), bytes));
    }
    cases.push((
        "not media: text".into(),
        b"hello, this is not audio\n".repeat(100),
    ));
    cases.push((
        "not media: random".into(),
        (0..64 * 1024).map(|_| rng.next() as u8).collect(),
    ));

    let started = Instant::now();
    let mut failures = Vec::new();
    let mut slowest = (Duration::ZERO, String::new());
    let mut refused = 0;
    for (name, bytes) in &cases {
        let at = Instant::now();
        match run_bounded(bytes.clone(), Duration::from_secs(20)) {
            Ok(outcome) => {
                if outcome.decoded_samples.is_none() {
                    refused += 1;
                }
                let holds_no_audio = name == "zero-length"
                    || name.starts_with("not media")
                    || name.ends_with("truncated to 1")
                    || name.ends_with("truncated to 4");
                if holds_no_audio && (outcome.probed || outcome.decoded_samples.is_some()) {
                    failures.push(format!("{name}: accepted: {outcome:?}"));
                }
            }
            Err(why) => failures.push(format!("{name}: {why}")),
        }
        if at.elapsed() > slowest.0 {
            slowest = (at.elapsed(), name.clone());
        }
    }
    eprintln!(
        "malformed media: {} cases, {refused} refused, slowest {:?} ({}), all in {:?}",
        cases.len(),
        slowest.0,
        slowest.1,
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
