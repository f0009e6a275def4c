//! Unit tests of decoding: formats and codecs (encoded with ffmpeg where available), chunking
//! and cancellation, corrupt and hostile inputs, memory bounds and error messages.

use std::io::{Read, Seek, SeekFrom};

use super::opus::parse_opus_head;
use super::*;
use std::f64::consts::PI;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const SRC_RATE: u32 = 44_100;
const SINE_SECS: f64 = 3.0;
const CHIRP_SECS: f64 = 1.0;
const TOTAL_SECS: f64 = SINE_SECS + CHIRP_SECS;
const CHIRP_END_HZ: f64 = 4_000.0;
/// Left and right amplitudes differ, so a downmix that takes one channel is caught.
const AMP_L: f64 = 0.5;
const AMP_R: f64 = 0.3;

/// The test signal at time `t`, scaled by `amp`: 3 s of 440 Hz, then a 1 s linear chirp
/// from 440 Hz to 4 kHz that continues the sine's phase (no click at the joint).
fn signal(t: f64, amp: f64) -> f64 {
    let phase = if t < SINE_SECS {
        440.0 * t
    } else {
        let u = t - SINE_SECS;
        let k = (CHIRP_END_HZ - 440.0) / CHIRP_SECS;
        440.0 * SINE_SECS + 440.0 * u + 0.5 * k * u * u
    };
    amp * (2.0 * PI * phase).sin()
}

/// What a perfect decoder outputs: the mean of both channels at 16 kHz.
fn expected_mono_16k() -> Vec<f32> {
    let n = (TOTAL_SECS * 16_000.0) as usize;
    (0..n)
        .map(|i| signal(i as f64 / 16_000.0, (AMP_L + AMP_R) / 2.0) as f32)
        .collect()
}

fn have_ffmpeg() -> bool {
    Command::new("ffmpeg")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Writes the stereo source as 16-bit WAV, by hand, so the test does not depend on the
/// decoder under test.
fn write_source_wav(path: &Path) {
    let n = (TOTAL_SECS * f64::from(SRC_RATE)) as usize;
    let mut data = Vec::with_capacity(n * 4);
    for i in 0..n {
        let t = i as f64 / f64::from(SRC_RATE);
        for amp in [AMP_L, AMP_R] {
            let s = (signal(t, amp) * 32767.0).round() as i16;
            data.extend_from_slice(&s.to_le_bytes());
        }
    }
    let mut file = wav_header(2, SRC_RATE, 16, data.len() as u32);
    file.extend_from_slice(&data);
    std::fs::write(path, file).unwrap();
}

fn wav_header(channels: u16, rate: u32, bits: u16, data_len: u32) -> Vec<u8> {
    let block = channels.wrapping_mul(bits) / 8;
    let mut h = Vec::with_capacity(44);
    h.extend_from_slice(b"RIFF");
    h.extend_from_slice(&data_len.saturating_add(36).to_le_bytes());
    h.extend_from_slice(b"WAVEfmt ");
    h.extend_from_slice(&16u32.to_le_bytes());
    h.extend_from_slice(&1u16.to_le_bytes());
    h.extend_from_slice(&channels.to_le_bytes());
    h.extend_from_slice(&rate.to_le_bytes());
    h.extend_from_slice(&rate.wrapping_mul(u32::from(block)).to_le_bytes());
    h.extend_from_slice(&block.to_le_bytes());
    h.extend_from_slice(&bits.to_le_bytes());
    h.extend_from_slice(b"data");
    h.extend_from_slice(&data_len.to_le_bytes());
    h
}

/// Encodes the source with ffmpeg. `video` adds a small video stream, mapped first so the
/// audio is not track 0.
fn encode(dir: &Path, name: &str, ext: &str, audio: &[&str], video: Option<&[&str]>) -> PathBuf {
    let src = dir.join("source.wav");
    if !src.exists() {
        write_source_wav(&src);
    }
    let out = dir.join(format!("{name}.{ext}"));
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-y"]);
    if let Some(vargs) = video {
        cmd.args(["-f", "lavfi", "-i", "testsrc=size=64x48:rate=10:duration=4"]);
        cmd.arg("-i").arg(&src);
        cmd.args(["-map", "0:v", "-map", "1:a"]);
        cmd.args(vargs);
    } else {
        cmd.arg("-i").arg(&src);
    }
    cmd.args(audio);
    cmd.arg(&out);
    let status = cmd.status().unwrap();
    assert!(status.success(), "ffmpeg failed for {name}");
    out
}

/// Power of `freq` in `x` (Goertzel), normalised by length.
fn goertzel(x: &[f32], freq: f64, rate: f64) -> f64 {
    let w = 2.0 * PI * freq / rate;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s = f64::from(v) + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    (s1 * s1 + s2 * s2 - coeff * s1 * s2) / (x.len() as f64).powi(2)
}

fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt()
}

/// Offset (in 16 kHz samples, positive = decoded late) that best aligns the decoded chirp
/// with the expected one. The chirp does not repeat, so the peak is unique.
fn best_lag(decoded: &[f32], expected: &[f32]) -> i64 {
    let from = (SINE_SECS * 16_000.0) as usize + 1_600;
    let to = from + 8_000;
    let mut best = (0i64, f64::MIN);
    for lag in -1_600i64..=1_600 {
        let dot: f64 = (from..to)
            .filter_map(|i| {
                let j = usize::try_from(i as i64 + lag).ok()?;
                Some(f64::from(*decoded.get(j)?) * f64::from(expected[i]))
            })
            .sum();
        if dot > best.1 {
            best = (lag, dot);
        }
    }
    best.0
}

struct Case {
    name: &'static str,
    ext: &'static str,
    audio: &'static [&'static str],
    video: Option<&'static [&'static str]>,
    /// Lossless: the decoded waveform must match the analytic one sample by sample.
    lossless: bool,
    /// Allowed misalignment of the decoded audio, in ms.
    max_lag_ms: f64,
}

fn check(case: &Case) {
    if !have_ffmpeg() {
        println!("skipping {}: ffmpeg is not installed", case.name);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = encode(dir.path(), case.name, case.ext, case.audio, case.video);
    let (info, samples) =
        decode_file_to_vec(&path).unwrap_or_else(|e| panic!("{}: {e} ({})", case.name, e.code()));
    let expected = expected_mono_16k();
    let secs = samples.len() as f64 / 16_000.0;
    let lag = best_lag(&samples, &expected);
    let sine = &samples[8_000..40_000];
    let p440 = goertzel(sine, 440.0, 16_000.0);
    let p1000 = goertzel(sine, 1_000.0, 16_000.0);
    let level = rms(sine);
    let want_level = (AMP_L + AMP_R) / 2.0 / 2f64.sqrt();
    println!(
        "{}: {} / {} {} Hz {} ch, {secs:.4} s, lag {:.2} ms, 440/1000 Hz power {:.1e}, \
         rms {level:.3} (want {want_level:.3})",
        case.name,
        info.container,
        info.codec,
        info.sample_rate_hz,
        info.channels,
        lag as f64 / 16.0,
        p440 / p1000.max(1e-30),
    );
    assert!(
        (secs - TOTAL_SECS).abs() < 0.05,
        "{}: duration {secs}",
        case.name
    );
    assert!(p440 > 1_000.0 * p1000, "{}: 440 Hz not dominant", case.name);
    assert!(
        (level / want_level - 1.0).abs() < 0.1,
        "{}: level {level} vs {want_level}: not the mean of both channels",
        case.name
    );
    assert!(
        (lag as f64 / 16.0).abs() <= case.max_lag_ms,
        "{}: misaligned by {lag} samples",
        case.name
    );
    // The chirp (the last second) arrived too.
    let chirp = &samples[49_600..samples.len().min(62_400)];
    assert!(
        rms(chirp) > 0.8 * want_level,
        "{}: chirp missing",
        case.name
    );
    if case.lossless {
        let n = samples.len().min(expected.len()) - 400;
        let err: f64 = (400..n)
            .map(|i| f64::from(samples[i] - expected[i]).powi(2))
            .sum::<f64>()
            / (n - 400) as f64;
        let err = err.sqrt();
        println!("{}: RMS error vs analytic {err:.2e}", case.name);
        assert!(err < 1e-2, "{}: RMS error {err}", case.name);
    }
    assert_eq!(info.channels, 2, "{}", case.name);
}

macro_rules! format_test {
    ($fn:ident, $ext:expr, $audio:expr, $video:expr, $lossless:expr, $lag:expr) => {
        #[test]
        fn $fn() {
            check(&Case {
                name: stringify!($fn),
                ext: $ext,
                audio: $audio,
                video: $video,
                lossless: $lossless,
                max_lag_ms: $lag,
            });
        }
    };
}

const H264: &[&str] = &["-c:v", "libx264", "-pix_fmt", "yuv420p"];
const MJPEG: &[&str] = &["-c:v", "mjpeg"];
const VP8: &[&str] = &["-c:v", "libvpx", "-b:v", "100k"];
const VP9: &[&str] = &["-c:v", "libvpx-vp9", "-b:v", "100k"];

format_test!(
    wav_pcm_s16le,
    "wav",
    &["-c:a", "pcm_s16le"],
    None,
    true,
    0.1
);
format_test!(
    wav_pcm_s24le,
    "wav",
    &["-c:a", "pcm_s24le"],
    None,
    true,
    0.1
);
format_test!(
    wav_pcm_s32le,
    "wav",
    &["-c:a", "pcm_s32le"],
    None,
    true,
    0.1
);
format_test!(
    wav_pcm_f32le,
    "wav",
    &["-c:a", "pcm_f32le"],
    None,
    true,
    0.1
);
format_test!(wav_pcm_u8, "wav", &["-c:a", "pcm_u8"], None, true, 0.1);
format_test!(
    wav_adpcm_ima,
    "wav",
    &["-c:a", "adpcm_ima_wav"],
    None,
    false,
    0.1
);
format_test!(wav_adpcm_ms, "wav", &["-c:a", "adpcm_ms"], None, false, 0.1);
format_test!(flac, "flac", &["-c:a", "flac"], None, true, 0.1);
format_test!(aiff, "aiff", &["-c:a", "pcm_s16be"], None, true, 0.1);
format_test!(caf_alac, "caf", &["-c:a", "alac"], None, true, 0.1);
format_test!(
    mp3,
    "mp3",
    &["-c:a", "libmp3lame", "-b:a", "128k"],
    None,
    false,
    1.0
);
format_test!(
    ogg_vorbis,
    "ogg",
    &["-c:a", "libvorbis", "-q:a", "5"],
    None,
    false,
    1.0
);
format_test!(
    ogg_opus,
    "opus",
    &["-c:a", "libopus", "-b:a", "96k"],
    None,
    false,
    1.0
);
format_test!(
    webm_opus,
    "webm",
    &["-c:a", "libopus", "-b:a", "96k"],
    None,
    false,
    1.0
);
format_test!(
    mka_opus,
    "mka",
    &["-c:a", "libopus", "-b:a", "96k"],
    None,
    false,
    1.0
);
// AAC in MP4: symphonia ignores the edit list, so the encoder's 1024-frame priming
// (23 ms at 44.1 kHz) stays at the start.
format_test!(
    m4a_aac,
    "m4a",
    &["-c:a", "aac", "-b:a", "128k"],
    None,
    false,
    30.0
);
format_test!(
    adts_aac,
    "aac",
    &["-c:a", "aac", "-b:a", "128k"],
    None,
    false,
    30.0
);
format_test!(
    mov_aac_mjpeg,
    "mov",
    &["-c:a", "aac"],
    Some(MJPEG),
    false,
    30.0
);
format_test!(
    mp4_h264_aac,
    "mp4",
    &["-c:a", "aac"],
    Some(H264),
    false,
    30.0
);
format_test!(
    mkv_h264_flac,
    "mkv",
    &["-c:a", "flac"],
    Some(H264),
    true,
    0.1
);
format_test!(
    webm_vp8_opus,
    "webm",
    &["-c:a", "libopus"],
    Some(VP8),
    false,
    1.0
);
format_test!(
    webm_vp9_vorbis,
    "webm",
    &["-c:a", "libvorbis"],
    Some(VP9),
    false,
    1.0
);

#[test]
fn opus_head_parses_family_0_and_1() {
    let mut head = b"OpusHead".to_vec();
    head.extend_from_slice(&[1, 2, 0x38, 0x01, 0x80, 0xbb, 0, 0, 0, 0, 0]);
    let parsed = parse_opus_head(&head).unwrap();
    assert_eq!(parsed.channels, 2);
    assert_eq!(parsed.pre_skip, 312);
    assert_eq!(parsed.family, 0);
    assert_eq!(parsed.coupled, 1);
    let mut head = b"OpusHead".to_vec();
    head.extend_from_slice(&[
        1, 6, 0, 0, 0x80, 0xbb, 0, 0, 0, 0, 1, 4, 2, 0, 4, 1, 2, 3, 5,
    ]);
    let parsed = parse_opus_head(&head).unwrap();
    assert_eq!((parsed.streams, parsed.coupled), (4, 2));
    assert_eq!(parsed.mapping, vec![0, 4, 1, 2, 3, 5]);
    assert!(parse_opus_head(b"OpusHead").is_none());
    assert!(parse_opus_head(&head[..22]).is_none());
}

#[test]
fn chunks_have_the_requested_size_and_sink_can_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("source.wav");
    write_source_wav(&src);
    let mut sizes = Vec::new();
    let (_, report) = decode_to_mono_16k(
        Box::new(std::fs::File::open(&src).unwrap()),
        1_000,
        |chunk| {
            sizes.push(chunk.len());
            ControlFlow::Continue(())
        },
    )
    .unwrap();
    assert!(sizes[..sizes.len() - 1].iter().all(|&n| n == 1_000));
    assert_eq!(report.samples_out, sizes.iter().sum::<usize>() as u64);
    assert_eq!(report.samples_out, 64_000);
    assert_eq!(report.packets_skipped, 0);

    let mut calls = 0;
    let (_, report) =
        decode_to_mono_16k(Box::new(std::fs::File::open(&src).unwrap()), 1_000, |_| {
            calls += 1;
            if calls == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(calls, 3);
    assert_eq!(report.samples_out, 3_000);
}

/// Runs a decode on its own thread and fails the test if it takes longer than `limit` or
/// lets a panic escape.
fn decode_bounded(
    name: &str,
    bytes: Vec<u8>,
    limit: Duration,
) -> Result<DecodeReport, DecodeError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let started = Instant::now();
    std::thread::spawn(move || {
        let source = Box::new(std::io::Cursor::new(bytes));
        let result = catch_unwind(AssertUnwindSafe(|| {
            decode_to_mono_16k(source, 4_096, |_| ControlFlow::Continue(()))
        }));
        let _ = tx.send(result);
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(result)) => {
            let ms = started.elapsed().as_millis();
            match &result {
                Ok((_, report)) => println!("{name}: Ok {report:?} in {ms} ms"),
                Err(e) => println!("{name}: Err [{}] {e} in {ms} ms", e.code()),
            }
            result.map(|(_, report)| report)
        }
        Ok(Err(_)) => panic!("{name}: decode panicked"),
        Err(_) => panic!("{name}: decode did not finish within {limit:?}"),
    }
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn corrupt_inputs_end_in_bounded_time_without_panicking() {
    let limit = Duration::from_secs(10);
    assert!(decode_bounded("empty", Vec::new(), limit).is_err());
    for seed in 1..=4 {
        let r = decode_bounded(&format!("random-{seed}"), noise(seed, 100_000), limit);
        assert!(r.is_err());
    }
    // WAV headers claiming absurd sizes and parameters, followed by a little audio.
    let mut absurd = wav_header(2, 44_100, 16, u32::MAX);
    absurd.extend_from_slice(&noise(9, 10_000));
    let _ = decode_bounded("wav-huge-data-size", absurd, limit);
    let mut absurd = wav_header(u16::MAX, u32::MAX, 16, u32::MAX);
    absurd.extend_from_slice(&noise(10, 10_000));
    let _ = decode_bounded("wav-absurd-channels-rate", absurd, limit);
    let mut absurd = wav_header(1, 0, 16, 1_000);
    absurd.extend_from_slice(&noise(11, 1_000));
    let _ = decode_bounded("wav-zero-rate", absurd, limit);
    let mut absurd = wav_header(1, 16_000, 0, 1_000);
    absurd.extend_from_slice(&noise(12, 1_000));
    let _ = decode_bounded("wav-zero-bits", absurd, limit);

    if !have_ffmpeg() {
        println!("skipping encoded corrupt inputs: ffmpeg is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = [
        encode(dir.path(), "c", "wav", &["-c:a", "pcm_s16le"], None),
        encode(dir.path(), "c", "flac", &["-c:a", "flac"], None),
        encode(dir.path(), "c", "mp3", &["-c:a", "libmp3lame"], None),
        encode(dir.path(), "c", "ogg", &["-c:a", "libvorbis"], None),
        encode(dir.path(), "c", "opus", &["-c:a", "libopus"], None),
        encode(dir.path(), "c", "webm", &["-c:a", "libopus"], None),
        encode(dir.path(), "c", "m4a", &["-c:a", "aac"], None),
        encode(dir.path(), "c", "mp4", &["-c:a", "aac"], Some(H264)),
        encode(dir.path(), "c", "caf", &["-c:a", "alac"], None),
        encode(dir.path(), "c", "aiff", &["-c:a", "pcm_s16be"], None),
        encode(dir.path(), "ima", "wav", &["-c:a", "adpcm_ima_wav"], None),
    ];
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(path).unwrap();
        for cut in [
            16,
            100,
            bytes.len() / 10,
            bytes.len() / 2,
            bytes.len() * 9 / 10,
        ] {
            let _ = decode_bounded(
                &format!("{name} cut at {cut}"),
                bytes[..cut.min(bytes.len())].to_vec(),
                limit,
            );
        }
        for seed in 1..=3u64 {
            // Flip bits all over the body, sparing the first 64 bytes so the container is
            // still recognised and the decoders get to see the damage.
            let mut damaged = bytes.clone();
            let flips = noise(seed * 77, 400);
            for pair in flips.chunks_exact(4) {
                let pos = u32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]]) as usize;
                let len = damaged.len().saturating_sub(64).max(1);
                let at = 64 + pos % len;
                if let Some(b) = damaged.get_mut(at) {
                    *b ^= 1 << (pair[0] % 8);
                }
            }
            let _ = decode_bounded(&format!("{name} bit-flipped #{seed}"), damaged, limit);
        }
        // A long run of garbage in the middle.
        let mut smashed = bytes.clone();
        let mid = smashed.len() / 3;
        let end = (mid + 20_000).min(smashed.len());
        smashed[mid..end].copy_from_slice(&noise(5, end - mid));
        let _ = decode_bounded(&format!("{name} smashed middle"), smashed, limit);
    }
}

#[test]
fn unsupported_codec_and_video_without_audio_are_refused_by_name() {
    if !have_ffmpeg() {
        println!("skipping: ffmpeg is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ac3 = encode(dir.path(), "ac3", "mka", &["-c:a", "ac3"], None);
    let err = decode_file_to_vec(&ac3).unwrap_err();
    println!("mka/ac3: [{}] {err}", err.code());
    assert_eq!(err.code(), "unsupported-media");
    assert!(
        matches!(err, DecodeError::UnsupportedCodec { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("matroska"), "{err}");
    assert!(err.to_string().contains("ac3"), "{err}");

    let video = dir.path().join("video-only.mp4");
    let status = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .args(["testsrc=size=64x48:rate=10:duration=1", "-c:v", "libx264"])
        .arg(&video)
        .status()
        .unwrap();
    assert!(status.success());
    let err = decode_file_to_vec(&video).unwrap_err();
    println!("video only: [{}] {err}", err.code());
    assert!(matches!(err, DecodeError::NoAudioTrack { .. }), "{err:?}");
    assert_eq!(err.code(), "unsupported-media");
}

/// A 16-bit WAV of any length, generated on the fly: lets the memory test decode hours of
/// audio without a multi-GB fixture.
struct SyntheticWav {
    header: Vec<u8>,
    /// One second of sample data; 440 Hz repeats exactly every second.
    period: Vec<u8>,
    frames: u64,
    frame_bytes: u64,
    pos: u64,
}

impl SyntheticWav {
    /// 44.1 kHz stereo.
    fn new(secs: u64) -> Self {
        Self::with_format(secs, SRC_RATE, 2)
    }

    fn with_format(secs: u64, rate: u32, channels: u16) -> Self {
        let frames = secs * u64::from(rate);
        let frame_bytes = 2 * u64::from(channels);
        let data_len = u32::try_from(frames * frame_bytes).unwrap();
        let mut period = Vec::with_capacity(rate as usize * frame_bytes as usize);
        for i in 0..rate {
            let t = f64::from(i) / f64::from(rate);
            // 440 Hz, left louder than right, as in the short fixtures.
            for amp in [AMP_L, AMP_R].into_iter().take(channels as usize) {
                let s = ((amp * (2.0 * PI * 440.0 * t).sin()) * 32767.0).round() as i16;
                period.extend_from_slice(&s.to_le_bytes());
            }
        }
        Self {
            header: wav_header(channels, rate, 16, data_len),
            period,
            frames,
            frame_bytes,
            pos: 0,
        }
    }

    fn len(&self) -> u64 {
        self.header.len() as u64 + self.frames * self.frame_bytes
    }
}

impl Read for SyntheticWav {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let h = self.header.len() as u64;
        let n = if self.pos < h {
            let from = &self.header[self.pos as usize..];
            let n = from.len().min(buf.len());
            buf[..n].copy_from_slice(&from[..n]);
            n
        } else {
            let off = ((self.pos - h) % self.period.len() as u64) as usize;
            let left = self.len().saturating_sub(self.pos);
            let from = &self.period[off..];
            let n = (from.len().min(buf.len()) as u64).min(left) as usize;
            buf[..n].copy_from_slice(&from[..n]);
            n
        };
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for SyntheticWav {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(p) => p as i64,
            SeekFrom::Current(d) => self.pos as i64 + d,
            SeekFrom::End(d) => self.len() as i64 + d,
        };
        self.pos = u64::try_from(target).map_err(|_| std::io::Error::other("before start"))?;
        Ok(self.pos)
    }
}

impl MediaSource for SyntheticWav {
    fn is_seekable(&self) -> bool {
        true
    }

    fn byte_len(&self) -> Option<u64> {
        Some(self.len())
    }
}

fn vm_hwm_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

const MEMORY_CHILD_ENV: &str = "OPENTRANSCRIBE_DECODE_MEMORY_CHILD";
const LONG_SECS: u64 = 30 * 60;
const HOURS_SECS: u64 = 4 * 3600;

/// The measuring half of `long_input_memory_does_not_grow`, run in a process of its own
/// so that other tests running in parallel do not move the peak: half an hour of 44.1 kHz
/// stereo (through the resampler), then four hours of 16 kHz mono.
#[test]
#[ignore = "run by long_input_memory_does_not_grow in a separate process"]
fn long_input_child() {
    if std::env::var_os(MEMORY_CHILD_ENV).is_none() {
        return;
    }
    // Warm up allocator and lazily built tables with a short decode first.
    let warm = decode_to_mono_16k(Box::new(SyntheticWav::new(5)), 16_000, |_| {
        ControlFlow::Continue(())
    });
    assert!(warm.is_ok());
    for (name, source) in [
        ("stereo", SyntheticWav::new(LONG_SECS)),
        ("hours", SyntheticWav::with_format(HOURS_SECS, 16_000, 1)),
    ] {
        let before = vm_hwm_kb();
        let started = Instant::now();
        let (_, report) =
            decode_to_mono_16k(Box::new(source), 16_000, |_| ControlFlow::Continue(())).unwrap();
        let after = vm_hwm_kb();
        println!(
            "MEMORY_RESULT {name} before_kb={before} after_kb={after} samples={} secs={:.1}",
            report.samples_out,
            started.elapsed().as_secs_f64()
        );
    }
}

#[test]
fn long_input_memory_does_not_grow() {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe)
        .args(["--exact", "media::decode::tests::long_input_child"])
        .args(["--ignored", "--nocapture", "--test-threads", "1"])
        .env(MEMORY_CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result = |name: &str| -> (f64, f64, f64, f64) {
        let prefix = format!("MEMORY_RESULT {name} ");
        let line = stdout
            .lines()
            .find_map(|l| l.find(&prefix).map(|at| &l[at..]))
            .unwrap_or_else(|| panic!("child printed no {name} result: {stdout}"));
        println!("{line}");
        let field = |key: &str| -> f64 {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                .and_then(|v| v.parse().ok())
                .unwrap()
        };
        (
            field("before_kb"),
            field("after_kb"),
            field("samples"),
            field("secs"),
        )
    };
    let (before, after, samples, secs) = result("stereo");
    let growth_mb = (after - before) / 1024.0;
    println!(
        "{} min of 44.1 kHz stereo WAV: peak RSS grew {growth_mb:.1} MB, decoded in {secs:.1} s",
        LONG_SECS / 60
    );
    assert_eq!(samples as u64, LONG_SECS * 16_000);
    assert!(growth_mb < 50.0, "peak memory grew by {growth_mb} MB");
    let (before, after, samples, secs) = result("hours");
    let (growth_mb, peak_mb) = ((after - before) / 1024.0, after / 1024.0);
    println!(
        "{} h of 16 kHz WAV: peak RSS {peak_mb:.1} MB (grew {growth_mb:.1} MB), decoded in \
         {secs:.1} s",
        HOURS_SECS / 3600
    );
    assert_eq!(samples as u64, HOURS_SECS * 16_000);
    assert!(growth_mb < 50.0, "peak memory grew by {growth_mb} MB");
    assert!(peak_mb < 200.0, "peak RSS {peak_mb} MB");
}

#[test]
fn error_codes_and_messages_name_container_and_codec() {
    let e = DecodeError::UnsupportedCodec {
        container: "mkv".into(),
        codec: "truehd".into(),
    };
    assert_eq!(e.code(), "unsupported-media");
    assert!(e.to_string().contains("mkv") && e.to_string().contains("truehd"));
    let e = DecodeError::Corrupt {
        container: "wave".into(),
        codec: "pcm_s16le".into(),
        reason: "x".into(),
    };
    assert_eq!(e.code(), "media-corrupt");
    assert!(e.to_string().contains("wave") && e.to_string().contains("pcm_s16le"));
    let missing = decode_file_to_vec(Path::new("/nonexistent/file.wav")).unwrap_err();
    assert_eq!(missing.code(), "media-io");
    let random = decode_bounded("random", noise(3, 5_000), Duration::from_secs(10));
    assert_eq!(random.unwrap_err().code(), "unsupported-media");
}
