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

mod container;
mod opus;
mod packets;
mod source;
#[cfg(test)]
mod tests;

use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;

use symphonia::core::codecs::CodecParameters;
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::codecs::audio::well_known::CODEC_ID_OPUS;
use symphonia::core::errors::Error as SymError;
use symphonia::core::io::MediaSource;

use super::resample::StreamResampler;
use container::{codec_name, probe, select_audio_track, track_duration_secs};
use opus::OpusBackend;
use packets::{Backend, Output, PacketError, downmix};
use source::{Progress, TrackedSource};

/// Sample rate of everything this module outputs.
pub const OUTPUT_RATE_HZ: u32 = 16_000;

/// Name used in errors when the container or codec is not known (yet).
const UNKNOWN: &str = "unknown";

/// Consecutive reader errors after which the rest of the stream is given up. Demuxers that
/// resynchronise (MP3, ADTS) need a few calls to find the next frame; one that keeps failing
/// this often is stuck on the same bytes. Undecodable packets have no such limit: each one
/// moves through the file, so a damaged stretch is skipped however long it is.
const MAX_READER_ERRORS: u32 = 256;
/// Reader calls in a row that neither read new bytes nor produced audio. A reader returning
/// empty or foreign-track packets from its buffer forever would otherwise spin without end.
const MAX_IDLE_CALLS: u32 = 100_000;

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
