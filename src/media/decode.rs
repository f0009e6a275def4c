//! Decodes any supported audio or video file to 16 kHz mono f32, streamed in bounded memory.
//!
//! Demuxing and decoding use symphonia, except Opus, which symphonia cannot decode: Opus
//! packets go to the `opus-decoder` crate. That crate was chosen over libopus bindings because
//! it is pure Rust (no C toolchain, no system library) and so builds offline and cross-compiles
//! with the rest of the daemon; it passes the RFC 8251 conformance vectors.
//!
//! Memory use is bounded by design: the container is read through symphonia's fixed-size
//! stream buffer, each packet is decoded, downmixed and resampled on its own, and output leaves
//! in chunks of the caller's size. Nothing here holds a whole file.

use std::io::{Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use opus_decoder::{OpusDecoder, OpusMultistreamDecoder};
use symphonia::core::codecs::CodecParameters;
use symphonia::core::codecs::audio::well_known::{self, CODEC_ID_OPUS};
use symphonia::core::codecs::audio::{
    AudioCodecId, AudioCodecParameters, AudioDecoder, AudioDecoderOptions,
};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, Track, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::packet::Packet;
use symphonia::core::units::TimeBase;

use super::resample::StreamResampler;

/// Sample rate of everything this module outputs.
pub const OUTPUT_RATE_HZ: u32 = 16_000;

/// Name used in errors when the container or codec is not known (yet).
const UNKNOWN: &str = "unknown";

/// Opus timestamps and the pre-skip count in 48 kHz frames, whatever the decoding rate.
const OPUS_CLOCK_HZ: u32 = 48_000;
/// Opus is decoded at its native 48 kHz and resampled like everything else. opus-decoder
/// could output 16 kHz, but it gets there by plain decimation of its 48 kHz synthesis (no
/// anti-alias filter), which folds 8-24 kHz content into the speech band, and it is no faster.
const OPUS_DECODE_RATE_HZ: u32 = OPUS_CLOCK_HZ;
/// 48 kHz frames per decoded frame.
const OPUS_CLOCK_DIV: usize = (OPUS_CLOCK_HZ / OPUS_DECODE_RATE_HZ) as usize;
/// Longest Opus packet: 120 ms, per channel, at the decoding rate.
const OPUS_MAX_FRAMES: usize = 5_760 / OPUS_CLOCK_DIV;

/// Consecutive reader errors after which the rest of the stream is given up. Demuxers that
/// resynchronise (MP3, ADTS) need a few calls to find the next frame; one that keeps failing
/// this often is stuck on the same bytes. Undecodable packets have no such limit: each one
/// moves through the file, so a damaged stretch is skipped however long it is.
const MAX_READER_ERRORS: u32 = 256;
/// Reader calls in a row that neither read new bytes nor produced audio. A reader returning
/// empty or foreign-track packets from its buffer forever would otherwise spin without end.
const MAX_IDLE_CALLS: u32 = 100_000;
/// Bytes a reader may pull in, as a multiple of the file's length (plus a fixed allowance for
/// small files): demuxers seek back and re-read a little, but a corrupt index that sends them
/// round in circles is cut off here.
const MAX_READ_FACTOR: u64 = 8;
const READ_ALLOWANCE: u64 = 64 << 20;

/// Facts from the probe, available before decoding starts.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    /// Short container name, e.g. `wave`, `isomp4`, `ogg`, `mkv`.
    pub container: String,
    /// Short codec name of the decoded track, e.g. `pcm_s16le`, `aac`, `opus`.
    pub codec: String,
    /// Sample rate of the source track (before resampling).
    pub sample_rate_hz: u32,
    /// Channel count of the source track (before downmixing).
    pub channels: usize,
    pub duration_secs: Option<f64>,
}

/// What happened while decoding.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DecodeReport {
    /// 16 kHz mono samples handed to the sink.
    pub samples_out: u64,
    /// Packets of the audio track that decoded.
    pub packets_decoded: u64,
    /// Recoverable errors skipped and counted: undecodable packets and reader errors it
    /// recovered from.
    pub packets_skipped: u64,
}

/// Why a file could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a recognised audio or video container")]
    UnknownContainer,
    #[error("{container} file has no audio track")]
    NoAudioTrack { container: String },
    #[error("{container} file: audio codec {codec} is not supported")]
    UnsupportedCodec { container: String, codec: String },
    #[error("{container} file: {codec} audio has unsupported parameters: {reason}")]
    UnsupportedParameters {
        container: String,
        codec: String,
        reason: String,
    },
    #[error("file is corrupt: {reason}")]
    CorruptHeader { reason: String },
    #[error("{container} file ({codec} audio) is corrupt: {reason}")]
    Corrupt {
        container: String,
        codec: String,
        reason: String,
    },
    #[error("reading {container} file ({codec} audio) failed: {source}")]
    Io {
        container: String,
        codec: String,
        #[source]
        source: std::io::Error,
    },
}

impl DecodeError {
    /// Stable machine-readable code for API responses.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownContainer
            | Self::NoAudioTrack { .. }
            | Self::UnsupportedCodec { .. }
            | Self::UnsupportedParameters { .. } => "unsupported-media",
            Self::Corrupt { .. } | Self::CorruptHeader { .. } => "media-corrupt",
            Self::Io { .. } => "media-io",
        }
    }
}

/// Streams `source` (any symphonia MediaSource: File, or a seekable reader) as 16 kHz mono f32
/// in chunks of `chunk_samples` (the last one shorter) to `sink`; `sink` returns
/// `ControlFlow::Break(())` to stop early (cancellation), which still returns `Ok`.
///
/// Decodes the first audio track (also of video files), downmixes any channel count to mono
/// by the mean of the channels, and resamples with rubato. Undecodable packets are skipped and
/// counted in the report; a stream where nothing decodes is an error.
///
/// A panic inside symphonia on hostile input is reported as `CorruptHeader`.
pub fn decode_to_mono_16k(
    source: Box<dyn MediaSource>,
    chunk_samples: usize,
    sink: impl FnMut(&[f32]) -> ControlFlow<()>,
) -> Result<(StreamInfo, DecodeReport), DecodeError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decode_unguarded(source, chunk_samples, sink)
    }))
    .unwrap_or_else(|_| {
        Err(DecodeError::CorruptHeader {
            reason: "the demuxer or decoder failed on malformed data".to_owned(),
        })
    })
}

fn decode_unguarded(
    source: Box<dyn MediaSource>,
    chunk_samples: usize,
    mut sink: impl FnMut(&[f32]) -> ControlFlow<()>,
) -> Result<(StreamInfo, DecodeReport), DecodeError> {
    let tracked = TrackedSource::new(source);
    let progress = tracked.progress.clone();
    let mut format = probe(tracked)?;

    let container = format.format_info().short_name.to_owned();
    let track = select_audio_track(format.as_ref()).ok_or_else(|| DecodeError::NoAudioTrack {
        container: container.clone(),
    })?;
    let Some(CodecParameters::Audio(params)) = track.codec_params.clone() else {
        return Err(DecodeError::NoAudioTrack { container });
    };
    let track_id = track.id;
    let track_time_base = track.time_base;
    let track_delay = track.delay;
    let codec = codec_name(&params);
    let mut info = StreamInfo {
        container: container.clone(),
        codec: codec.clone(),
        sample_rate_hz: params.sample_rate.unwrap_or(0),
        channels: params.channels.as_ref().map_or(0, |c| c.count()),
        duration_secs: track_duration_secs(track, &params),
    };
    let ctx = ErrCtx {
        container,
        codec,
        progress: progress.clone(),
    };

    let mut decoder = if params.codec == CODEC_ID_OPUS {
        Backend::Opus(Box::new(OpusBackend::new(
            &params,
            track_delay,
            track_time_base,
            &ctx,
        )?))
    } else {
        let made = catch_unwind(AssertUnwindSafe(|| {
            symphonia::default::get_codecs()
                .make_audio_decoder(&params, &AudioDecoderOptions::default())
        }));
        let known = symphonia::default::get_codecs()
            .get_audio_decoder(params.codec)
            .is_some();
        match made {
            Ok(Ok(decoder)) => Backend::Symphonia(decoder),
            // A codec symphonia knows but whose parameters it refuses (e.g. an odd bit depth)
            // gets the reason; a codec it cannot decode at all just its name.
            Ok(Err(SymError::Unsupported(reason))) if known => {
                return Err(DecodeError::UnsupportedParameters {
                    container: ctx.container,
                    codec: ctx.codec,
                    reason: reason.to_owned(),
                });
            }
            Ok(Err(SymError::Unsupported(_))) | Err(_) => {
                return Err(DecodeError::UnsupportedCodec {
                    container: ctx.container,
                    codec: ctx.codec,
                });
            }
            Ok(Err(e)) => return Err(ctx.symphonia_error(e)),
        }
    };

    let chunk_samples = chunk_samples.max(1);
    let mut out = Output {
        chunk_samples,
        // Capped: the caller's chunk size is a target, not a promise to allocate.
        buf: Vec::with_capacity(chunk_samples.min(1 << 20)),
        report: DecodeReport::default(),
    };
    let mut resampler: Option<StreamResampler> = None;
    let mut interleaved: Vec<f32> = Vec::new();
    let mut mono: Vec<f32> = Vec::new();
    let mut resampled: Vec<f32> = Vec::new();
    let mut reader_errors = 0u32;
    let mut idle_calls = 0u32;
    let mut last_bytes = progress.bytes_read();
    // A reader failure that ended the stream early, kept to explain an empty result.
    let mut stop_reason: Option<String> = None;

    loop {
        if reader_errors >= MAX_READER_ERRORS {
            stop_reason.get_or_insert_with(|| "too many consecutive reader errors".to_owned());
            break;
        }
        if progress.over_budget() {
            stop_reason
                .get_or_insert_with(|| "reader does not advance through the file".to_owned());
            break;
        }
        let bytes = progress.bytes_read();
        if bytes == last_bytes {
            idle_calls += 1;
            if idle_calls >= MAX_IDLE_CALLS {
                stop_reason.get_or_insert_with(|| "reader makes no progress".to_owned());
                break;
            }
        } else {
            idle_calls = 0;
            last_bytes = bytes;
        }

        let packet = match catch_unwind(AssertUnwindSafe(|| format.next_packet())) {
            Ok(Ok(Some(packet))) => packet,
            Ok(Ok(None)) => break,
            Ok(Err(SymError::IoError(e))) => {
                if let Some(source_err) = progress.take_source_error() {
                    return Err(ctx.io(source_err));
                }
                // A truncated file ends with an unexpected EOF inside the last packet: that is
                // the end of the stream, with whatever decoded before it.
                tracing::debug!(error = %e, "reader stopped at an I/O error, ending the stream");
                stop_reason.get_or_insert_with(|| format!("reading stopped: {e}"));
                break;
            }
            Ok(Err(SymError::ResetRequired)) => {
                // Only chained Ogg streams do this (a new logical stream follows); the first
                // one is the recording.
                tracing::debug!("track list changed mid-stream, stopping at the first stream");
                break;
            }
            Ok(Err(e)) => {
                // Demuxers such as MP3 and ADTS resynchronise on the next call; others repeat
                // the error and run into the reader-error limit above.
                tracing::debug!(error = %e, "reader error, trying to resynchronise");
                stop_reason.get_or_insert_with(|| e.to_string());
                out.report.packets_skipped += 1;
                reader_errors += 1;
                continue;
            }
            Err(_) => {
                // The reader panicked: its state is unknown, so stop reading.
                tracing::warn!("demuxer panicked on this file, stopping");
                stop_reason.get_or_insert_with(|| "demuxer failed".to_owned());
                out.report.packets_skipped += 1;
                break;
            }
        };
        reader_errors = 0;
        if packet.track_id != track_id {
            continue;
        }

        interleaved.clear();
        let decoded = decoder.decode(&packet, &mut interleaved);
        let (rate, channels) = match decoded {
            Ok(Some(spec)) => spec,
            Ok(None) => {
                // Decoded, but nothing to output (e.g. all trimmed as codec delay).
                out.report.packets_decoded += 1;
                continue;
            }
            Err(PacketError::Skip(reason)) => {
                tracing::debug!(%reason, "skipping undecodable packet");
                stop_reason.get_or_insert(reason);
                out.report.packets_skipped += 1;
                continue;
            }
            Err(PacketError::Fatal(e)) => return Err(ctx.symphonia_error(e)),
        };
        out.report.packets_decoded += 1;
        idle_calls = 0;
        if info.sample_rate_hz == 0 {
            info.sample_rate_hz = rate;
        }
        if info.channels == 0 {
            info.channels = channels;
        }

        downmix(&interleaved, channels, &mut mono);

        // The rate can change mid-stream (chained or spliced files); finish the old one first.
        if let Some(mut old) = resampler.take_if(|r| r.in_rate() != rate) {
            resampled.clear();
            old.flush(&mut resampled);
            if out.push(&resampled, &mut sink).is_break() {
                return Ok((info, out.report));
            }
        }
        if resampler.is_none() {
            resampler = Some(StreamResampler::new(rate, OUTPUT_RATE_HZ).map_err(|e| {
                DecodeError::UnsupportedParameters {
                    container: ctx.container.clone(),
                    codec: ctx.codec.clone(),
                    reason: e.to_string(),
                }
            })?);
        }
        if let Some(r) = resampler.as_mut() {
            resampled.clear();
            r.process(&mono, &mut resampled);
            if out.push(&resampled, &mut sink).is_break() {
                return Ok((info, out.report));
            }
        }
    }

    if out.report.packets_decoded == 0 {
        return Err(DecodeError::Corrupt {
            container: ctx.container,
            codec: ctx.codec,
            reason: match stop_reason {
                Some(reason) => format!("no audio could be decoded ({reason})"),
                None => "no audio could be decoded".to_owned(),
            },
        });
    }
    if let Some(mut r) = resampler.take() {
        resampled.clear();
        r.flush(&mut resampled);
        if out.push(&resampled, &mut sink).is_break() {
            return Ok((info, out.report));
        }
    }
    out.finish(&mut sink);
    Ok((info, out.report))
}

/// Convenience for tests and short clips: the whole file in memory. Callers must only use this
/// for short audio (an hour of 16 kHz f32 is 230 MB).
pub fn decode_file_to_vec(path: &Path) -> Result<(StreamInfo, Vec<f32>), DecodeError> {
    let file = std::fs::File::open(path).map_err(|source| DecodeError::Io {
        container: UNKNOWN.to_owned(),
        codec: UNKNOWN.to_owned(),
        source,
    })?;
    let mut samples = Vec::new();
    let (info, _) = decode_to_mono_16k(Box::new(file), 16_384, |chunk| {
        samples.extend_from_slice(chunk);
        ControlFlow::Continue(())
    })?;
    Ok((info, samples))
}

/// Container and codec names for error messages, plus the source's I/O error state.
struct ErrCtx {
    container: String,
    codec: String,
    progress: Arc<Progress>,
}

impl ErrCtx {
    fn io(&self, source: std::io::Error) -> DecodeError {
        DecodeError::Io {
            container: self.container.clone(),
            codec: self.codec.clone(),
            source,
        }
    }

    fn symphonia_error(&self, e: SymError) -> DecodeError {
        if let Some(source) = self.progress.take_source_error() {
            return self.io(source);
        }
        match e {
            SymError::Unsupported(what) => DecodeError::UnsupportedParameters {
                container: self.container.clone(),
                codec: self.codec.clone(),
                reason: what.to_owned(),
            },
            other => DecodeError::Corrupt {
                container: self.container.clone(),
                codec: self.codec.clone(),
                reason: other.to_string(),
            },
        }
    }
}

/// Finds the container format by content (never by file name, which users get wrong).
///
/// Some demuxers walk every top-level chunk of a seekable file while opening it (AIFF) or
/// check element sizes against the file length (Matroska), so a truncated upload fails to open
/// at all although most of its audio is intact. When the first attempt fails, the probe is
/// repeated on the same bytes presented as an unseekable stream of unknown length, which makes
/// those demuxers stop at the audio data; a truncated file then decodes up to its cut like a
/// truncated WAV does.
fn probe(source: TrackedSource) -> Result<Box<dyn FormatReader>, DecodeError> {
    let progress = source.progress.clone();
    let retry = source.seekable.then(|| source.unseekable_view());
    let first = match probe_once(source) {
        Ok(format) => return Ok(format),
        Err(e) => e,
    };
    if let Some(source_err) = progress.take_source_error() {
        return Err(DecodeError::Io {
            container: UNKNOWN.to_owned(),
            codec: UNKNOWN.to_owned(),
            source: source_err,
        });
    }
    let retried = match retry {
        Some(source) if source.rewind().is_ok() => Some(probe_once(source)),
        _ => None,
    };
    match retried {
        Some(Ok(format)) => {
            tracing::debug!(error = ?first, "opened the file only without seeking (truncated?)");
            Ok(format)
        }
        _ => Err(probe_error(first, &progress)),
    }
}

/// One probe attempt; `None` when the probe (or a demuxer inside it) panicked.
fn probe_once(source: TrackedSource) -> Result<Box<dyn FormatReader>, Option<SymError>> {
    let stream = MediaSourceStream::new(Box::new(source), Default::default());
    let probed = catch_unwind(AssertUnwindSafe(|| {
        symphonia::default::get_probe().probe(
            &Hint::new(),
            stream,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
    }));
    match probed {
        Ok(Ok(format)) => Ok(format),
        Ok(Err(e)) => Err(Some(e)),
        Err(_) => Err(None),
    }
}

fn probe_error(error: Option<SymError>, progress: &Progress) -> DecodeError {
    if let Some(source) = progress.take_source_error() {
        return DecodeError::Io {
            container: UNKNOWN.to_owned(),
            codec: UNKNOWN.to_owned(),
            source,
        };
    }
    let header = |reason: String| DecodeError::CorruptHeader { reason };
    if progress.bytes_read() == 0 {
        return header("file is empty".to_owned());
    }
    match error {
        // No reader recognised the bytes at all.
        Some(SymError::Unsupported(_)) => DecodeError::UnknownContainer,
        Some(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            header("file ends inside the container header".to_owned())
        }
        // A reader recognised its marker but the header behind it is broken.
        Some(other) => header(other.to_string()),
        None => header("container header could not be parsed".to_owned()),
    }
}

/// The default audio track, else the first track with audio parameters (video files list the
/// video track first).
fn select_audio_track(format: &dyn FormatReader) -> Option<&Track> {
    format.default_track(TrackType::Audio).or_else(|| {
        format
            .tracks()
            .iter()
            .find(|t| matches!(t.codec_params, Some(CodecParameters::Audio(_))))
    })
}

/// Names of codecs symphonia recognises in containers but cannot decode, so that refusals
/// say "ac3" rather than a bare codec id.
const UNDECODABLE_CODECS: &[(AudioCodecId, &str)] = &[
    (well_known::CODEC_ID_AC3, "ac3"),
    (well_known::CODEC_ID_EAC3, "eac3"),
    (well_known::CODEC_ID_AC4, "ac4"),
    (well_known::CODEC_ID_DCA, "dts"),
    (well_known::CODEC_ID_TRUEHD, "truehd"),
    (well_known::CODEC_ID_WMA, "wma"),
    (well_known::CODEC_ID_SPEEX, "speex"),
    (well_known::CODEC_ID_MUSEPACK, "musepack"),
    (well_known::CODEC_ID_WAVPACK, "wavpack"),
    (well_known::CODEC_ID_MONKEYS_AUDIO, "ape"),
    (well_known::CODEC_ID_TTA, "tta"),
    (well_known::CODEC_ID_ATRAC1, "atrac1"),
    (well_known::CODEC_ID_ATRAC3, "atrac3"),
    (well_known::CODEC_ID_ATRAC3PLUS, "atrac3plus"),
    (well_known::CODEC_ID_ATRAC9, "atrac9"),
    (well_known::CODEC_ID_COOK, "cook"),
    (well_known::CODEC_ID_RA10, "ra_144"),
    (well_known::CODEC_ID_RA20, "ra_288"),
    (well_known::CODEC_ID_SIPR, "sipr"),
    (well_known::CODEC_ID_ADPCM_G722, "g722"),
    (well_known::CODEC_ID_ADPCM_G726, "g726"),
    (well_known::CODEC_ID_ADPCM_G726LE, "g726le"),
    (well_known::CODEC_ID_SBC, "sbc"),
    (well_known::CODEC_ID_APTX, "aptx"),
    (well_known::CODEC_ID_APTX_HD, "aptx_hd"),
    (well_known::CODEC_ID_LDAC, "ldac"),
    (well_known::CODEC_ID_BINK_AUDIO, "binkaudio"),
    (well_known::CODEC_ID_SMACKER_AUDIO, "smackaudio"),
    (well_known::CODEC_ID_RALF, "ralf"),
];

fn codec_name(params: &AudioCodecParameters) -> String {
    if params.codec == CODEC_ID_OPUS {
        return "opus".to_owned();
    }
    if let Some(d) = symphonia::default::get_codecs().get_audio_decoder(params.codec) {
        return d.codec.info.short_name.to_owned();
    }
    UNDECODABLE_CODECS
        .iter()
        .find(|(id, _)| *id == params.codec)
        .map_or_else(
            || format!("unknown ({})", params.codec),
            |(_, name)| (*name).to_owned(),
        )
}

fn track_duration_secs(track: &Track, params: &AudioCodecParameters) -> Option<f64> {
    match (track.num_frames, params.sample_rate) {
        (Some(frames), Some(rate)) if rate > 0 => Some(frames as f64 / f64::from(rate)),
        _ => match (track.duration, track.time_base) {
            (Some(duration), Some(base)) => Some(
                duration.get() as f64 * f64::from(base.numer.get()) / f64::from(base.denom.get()),
            ),
            _ => None,
        },
    }
}

/// Mean of the channels of each interleaved frame.
fn downmix(interleaved: &[f32], channels: usize, mono: &mut Vec<f32>) {
    mono.clear();
    if channels <= 1 {
        mono.extend_from_slice(interleaved);
        return;
    }
    let scale = 1.0 / channels as f32;
    mono.extend(
        interleaved
            .chunks_exact(channels)
            .map(|frame| frame.iter().sum::<f32>() * scale),
    );
}

/// Collects resampled audio and hands it to the sink in fixed-size chunks.
struct Output {
    chunk_samples: usize,
    buf: Vec<f32>,
    report: DecodeReport,
}

impl Output {
    fn push(
        &mut self,
        samples: &[f32],
        sink: &mut impl FnMut(&[f32]) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        self.buf.extend_from_slice(samples);
        let mut start = 0;
        let mut flow = ControlFlow::Continue(());
        while self.buf.len() - start >= self.chunk_samples {
            let chunk = &self.buf[start..start + self.chunk_samples];
            start += self.chunk_samples;
            self.report.samples_out += chunk.len() as u64;
            flow = sink(chunk);
            if flow.is_break() {
                break;
            }
        }
        self.buf.drain(..start);
        flow
    }

    fn finish(&mut self, sink: &mut impl FnMut(&[f32]) -> ControlFlow<()>) {
        if !self.buf.is_empty() {
            self.report.samples_out += self.buf.len() as u64;
            // The stream ends here either way, so a Break needs no handling.
            let _ = sink(&self.buf);
            self.buf.clear();
        }
    }
}

/// Why one packet gave no audio.
enum PacketError {
    /// Recoverable: skip the packet, count it, go on.
    Skip(String),
    /// The decoder cannot go on.
    Fatal(SymError),
}

enum Backend {
    Symphonia(Box<dyn AudioDecoder>),
    Opus(Box<OpusBackend>),
}

impl Backend {
    /// Decodes one packet into `interleaved` and returns its (sample rate, channels), or `None`
    /// when the packet yields no frames.
    fn decode(
        &mut self,
        packet: &Packet,
        interleaved: &mut Vec<f32>,
    ) -> Result<Option<(u32, usize)>, PacketError> {
        match self {
            Backend::Symphonia(decoder) => {
                // Decoders are not fuzz-proof: a panic is treated as one bad packet, after a
                // reset so the next packet starts from clean state.
                let result = catch_unwind(AssertUnwindSafe(|| match decoder.decode(packet) {
                    Ok(buf) => {
                        let spec = buf.spec();
                        let rate = spec.rate();
                        let channels = spec.channels().count();
                        buf.copy_to_vec_interleaved(interleaved);
                        Ok((rate, channels, buf.frames()))
                    }
                    Err(e) => Err(e),
                }));
                match result {
                    Ok(Ok((_, _, 0))) => Ok(None),
                    Ok(Ok((_, 0, _))) => Err(PacketError::Skip("packet without channels".into())),
                    Ok(Ok((rate, channels, _))) => Ok(Some((rate, channels))),
                    Ok(Err(e @ (SymError::DecodeError(_) | SymError::IoError(_)))) => {
                        Err(PacketError::Skip(e.to_string()))
                    }
                    Ok(Err(SymError::ResetRequired)) => {
                        decoder.reset();
                        Err(PacketError::Skip("decoder reset".into()))
                    }
                    // Unsupported features in one packet or a limit hit by one packet: treat
                    // like any bad packet, the consecutive-failure limit stops a hopeless
                    // stream.
                    Ok(Err(e @ (SymError::Unsupported(_) | SymError::LimitError(_)))) => {
                        Err(PacketError::Skip(e.to_string()))
                    }
                    Ok(Err(e)) => Err(PacketError::Fatal(e)),
                    Err(_) => {
                        let _ = catch_unwind(AssertUnwindSafe(|| decoder.reset()));
                        Err(PacketError::Skip("decoder failed on packet".into()))
                    }
                }
            }
            Backend::Opus(opus) => opus.decode(packet, interleaved),
        }
    }
}

/// Opus decoding outside symphonia, with the codec delay ("pre-skip") and end trimming that a
/// player would apply, so timestamps of the output match the original recording.
struct OpusBackend {
    decoder: OpusDecoderKind,
    /// Channels of the decoder's output (1 for mono and stereo streams, see `new`).
    channels: usize,
    /// Decoded frames still to drop from the start (the encoder's pre-skip).
    skip_remaining: usize,
    /// Linear output gain from the header (usually 1).
    gain: f32,
    time_base: Option<TimeBase>,
    pcm: Vec<f32>,
}

enum OpusDecoderKind {
    Single(Box<OpusDecoder>),
    Multi(OpusMultistreamDecoder),
}

/// The fields of an `OpusHead` identification header (RFC 7845 §5.1) that decoding needs.
#[derive(Debug, PartialEq)]
struct OpusHead {
    channels: usize,
    pre_skip: u16,
    gain_q8: i16,
    family: u8,
    streams: usize,
    coupled: usize,
    mapping: Vec<u8>,
}

fn parse_opus_head(data: &[u8]) -> Option<OpusHead> {
    if data.len() < 19 || &data[..8] != b"OpusHead" {
        return None;
    }
    let channels = usize::from(data[9]);
    let pre_skip = u16::from_le_bytes([data[10], data[11]]);
    let gain_q8 = i16::from_le_bytes([data[16], data[17]]);
    let family = data[18];
    if family == 0 {
        return Some(OpusHead {
            channels,
            pre_skip,
            gain_q8,
            family,
            streams: 1,
            coupled: usize::from(channels == 2),
            mapping: (0..channels).filter_map(|c| u8::try_from(c).ok()).collect(),
        });
    }
    let streams = usize::from(*data.get(19)?);
    let coupled = usize::from(*data.get(20)?);
    let mapping = data.get(21..21 + channels)?.to_vec();
    Some(OpusHead {
        channels,
        pre_skip,
        gain_q8,
        family,
        streams,
        coupled,
        mapping,
    })
}

impl OpusBackend {
    fn new(
        params: &AudioCodecParameters,
        track_delay: Option<u32>,
        time_base: Option<TimeBase>,
        ctx: &ErrCtx,
    ) -> Result<Self, DecodeError> {
        let unsupported = |reason: String| DecodeError::UnsupportedParameters {
            container: ctx.container.clone(),
            codec: ctx.codec.clone(),
            reason,
        };
        let head = params
            .extra_data
            .as_deref()
            .and_then(parse_opus_head)
            .unwrap_or_else(|| {
                // No (valid) OpusHead: assume a plain mono/stereo stream with the container's
                // delay, which is what such files in the wild are.
                let channels = params
                    .channels
                    .as_ref()
                    .map_or(2, |c| c.count())
                    .clamp(1, 2);
                OpusHead {
                    channels,
                    pre_skip: track_delay.and_then(|d| u16::try_from(d).ok()).unwrap_or(0),
                    gain_q8: 0,
                    family: 0,
                    streams: 1,
                    coupled: usize::from(channels == 2),
                    mapping: (0..channels).filter_map(|c| u8::try_from(c).ok()).collect(),
                }
            });
        if head.channels == 0 {
            return Err(unsupported("zero channels".to_owned()));
        }
        // Mono/stereo streams are decoded straight to mono: the decoder then averages the two
        // channels in the frequency domain (as libopus does), the same mean as `downmix`, and
        // runs one inverse MDCT instead of two. opus-decoder 0.1 computes that transform as a
        // naive O(n^2) DFT, so this halves the dominant cost of Opus decoding.
        let (decoder, out_channels) = match head.family {
            0 if head.channels <= 2 => (
                OpusDecoder::new(OPUS_DECODE_RATE_HZ, 1)
                    .map(|d| OpusDecoderKind::Single(Box::new(d)))
                    .map_err(|e| unsupported(e.to_string()))?,
                1,
            ),
            // Family 1 (surround) and 255 (unordered) use the plain multistream layout; family
            // 2 (ambisonics) too. Family 3 needs a demixing matrix this decoder lacks.
            1 | 2 | 255 => (
                OpusMultistreamDecoder::new(
                    OPUS_DECODE_RATE_HZ,
                    head.channels,
                    head.streams,
                    head.coupled,
                    &head.mapping,
                )
                .map(OpusDecoderKind::Multi)
                .map_err(|e| unsupported(e.to_string()))?,
                head.channels,
            ),
            family => {
                return Err(unsupported(format!(
                    "channel mapping family {family} with {} channels",
                    head.channels
                )));
            }
        };
        // Output gain is Q7.8 dB; decoders must apply it (RFC 7845 §5.1).
        let gain = 10f32.powf(f32::from(head.gain_q8) / 256.0 / 20.0);
        Ok(Self {
            decoder,
            channels: out_channels,
            skip_remaining: usize::from(head.pre_skip) / OPUS_CLOCK_DIV,
            gain,
            time_base,
            pcm: vec![0.0; OPUS_MAX_FRAMES * out_channels],
        })
    }

    /// A packet trim (in the track's time base) as a count of decoded frames.
    fn to_frames(&self, ticks: u64) -> usize {
        let Some(tb) = self.time_base else {
            return 0;
        };
        let frames =
            u128::from(ticks) * u128::from(tb.numer.get()) * u128::from(OPUS_DECODE_RATE_HZ)
                / u128::from(tb.denom.get());
        usize::try_from(frames).unwrap_or(usize::MAX)
    }

    fn decode(
        &mut self,
        packet: &Packet,
        interleaved: &mut Vec<f32>,
    ) -> Result<Option<(u32, usize)>, PacketError> {
        if packet.data.is_empty() {
            // An empty packet would ask the decoder for loss concealment; there is no audio.
            return Err(PacketError::Skip("empty opus packet".into()));
        }
        let pcm = &mut self.pcm;
        let result = catch_unwind(AssertUnwindSafe(|| match &mut self.decoder {
            OpusDecoderKind::Single(d) => d.decode_float(&packet.data, pcm, false),
            OpusDecoderKind::Multi(d) => d.decode_float(&packet.data, pcm, false),
        }));
        let frames = match result {
            Ok(Ok(frames)) => frames.min(OPUS_MAX_FRAMES),
            Ok(Err(e)) => return Err(PacketError::Skip(format!("opus: {e}"))),
            Err(_) => {
                let _ = catch_unwind(AssertUnwindSafe(|| match &mut self.decoder {
                    OpusDecoderKind::Single(d) => d.reset(),
                    OpusDecoderKind::Multi(d) => d.reset(),
                }));
                return Err(PacketError::Skip("opus decoder failed on packet".into()));
            }
        };
        // Pre-skip from the header, unless the container already asks to trim at least as
        // much from this packet (then the two describe the same frames).
        let trim_start_pkt = self.to_frames(packet.trim_start.get());
        let pre = self.skip_remaining.min(frames);
        let start = trim_start_pkt.max(pre).min(frames);
        self.skip_remaining -= pre.min(self.skip_remaining);
        let end = frames
            .saturating_sub(self.to_frames(packet.trim_end.get()))
            .max(start);
        if start == end {
            return Ok(None);
        }
        let ch = self.channels;
        interleaved.clear();
        interleaved.extend(self.pcm[start * ch..end * ch].iter().map(|s| s * self.gain));
        Ok(Some((OPUS_DECODE_RATE_HZ, ch)))
    }
}

/// Counts what the demuxer reads and remembers errors of the source itself, so that a stuck
/// or circling reader can be stopped and a failing disk is told apart from a corrupt file.
struct Progress {
    bytes_read: AtomicU64,
    budget: u64,
    source_failed: AtomicBool,
    source_error: std::sync::Mutex<Option<std::io::Error>>,
}

impl Progress {
    fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    fn over_budget(&self) -> bool {
        self.bytes_read() > self.budget
    }

    fn take_source_error(&self) -> Option<std::io::Error> {
        if !self.source_failed.load(Ordering::Relaxed) {
            return None;
        }
        self.source_error.lock().ok().and_then(|mut e| e.take())
    }
}

/// The caller's source, shared so that a failed probe can start over from byte 0.
type SharedSource = Arc<std::sync::Mutex<Box<dyn MediaSource>>>;

struct TrackedSource {
    inner: SharedSource,
    /// Whether to let the demuxer seek. See [`probe`] for why it is sometimes withheld.
    seekable: bool,
    byte_len: Option<u64>,
    progress: Arc<Progress>,
}

impl TrackedSource {
    fn new(inner: Box<dyn MediaSource>) -> Self {
        let byte_len = inner.byte_len();
        let seekable = inner.is_seekable();
        // A source without a known length (a pipe) gets no budget: nothing to measure against.
        let budget = byte_len.map_or(u64::MAX, |len| {
            len.saturating_mul(MAX_READ_FACTOR)
                .saturating_add(READ_ALLOWANCE)
        });
        Self {
            inner: Arc::new(std::sync::Mutex::new(inner)),
            seekable,
            byte_len,
            progress: Arc::new(Progress {
                bytes_read: AtomicU64::new(0),
                budget,
                source_failed: AtomicBool::new(false),
                source_error: std::sync::Mutex::new(None),
            }),
        }
    }

    /// A second view of the same source that offers neither seeking nor its length.
    fn unseekable_view(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            seekable: false,
            byte_len: None,
            progress: self.progress.clone(),
        }
    }

    fn rewind(&self) -> std::io::Result<()> {
        self.lock()?.seek(SeekFrom::Start(0)).map(|_| ())
    }

    fn lock(&self) -> std::io::Result<std::sync::MutexGuard<'_, Box<dyn MediaSource>>> {
        // Poisoned only if a previous read panicked inside the source; refuse to go on.
        self.inner
            .lock()
            .map_err(|_| std::io::Error::other("media source failed earlier"))
    }

    fn record<T>(&self, result: std::io::Result<T>) -> std::io::Result<T> {
        if let Err(e) = &result {
            // EOF is how truncation shows; only real failures of the source are I/O errors.
            if e.kind() != std::io::ErrorKind::UnexpectedEof
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                self.progress.source_failed.store(true, Ordering::Relaxed);
                if let Ok(mut slot) = self.progress.source_error.lock() {
                    slot.get_or_insert_with(|| std::io::Error::new(e.kind(), e.to_string()));
                }
            }
        }
        result
    }
}

impl Read for TrackedSource {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.progress.over_budget() {
            // Starve a reader that circles through the file: it sees EOF and stops.
            return Ok(0);
        }
        let result = self.lock().and_then(|mut inner| inner.read(buf));
        if let Ok(n) = &result {
            self.progress
                .bytes_read
                .fetch_add(*n as u64, Ordering::Relaxed);
        }
        self.record(result)
    }
}

impl Seek for TrackedSource {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        // Not recorded as a source failure: a seek fails only for an impossible target, which
        // a demuxer computes from corrupt data.
        self.lock()?.seek(pos)
    }
}

impl MediaSource for TrackedSource {
    fn is_seekable(&self) -> bool {
        self.seekable
    }

    fn byte_len(&self) -> Option<u64> {
        self.byte_len
    }
}

#[cfg(test)]
mod tests {
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
    fn encode(
        dir: &Path,
        name: &str,
        ext: &str,
        audio: &[&str],
        video: Option<&[&str]>,
    ) -> PathBuf {
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
        let (info, samples) = decode_file_to_vec(&path)
            .unwrap_or_else(|e| panic!("{}: {e} ({})", case.name, e.code()));
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
                decode_to_mono_16k(Box::new(source), 16_000, |_| ControlFlow::Continue(()))
                    .unwrap();
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
}
