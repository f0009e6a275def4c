//! Opening the container: probing by content (with an unseekable retry for truncated files),
//! choosing the audio track, and naming its codec and duration for reports and errors.

use std::panic::{AssertUnwindSafe, catch_unwind};

use symphonia::core::codecs::CodecParameters;
use symphonia::core::codecs::audio::well_known::{self, CODEC_ID_OPUS};
use symphonia::core::codecs::audio::{AudioCodecId, AudioCodecParameters};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, Track, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

use super::source::{Progress, TrackedSource};
use super::{DecodeError, UNKNOWN};
/// Finds the container format by content (never by file name, which users get wrong).
///
/// Some demuxers walk every top-level chunk of a seekable file while opening it (AIFF) or
/// check element sizes against the file length (Matroska), so a truncated upload fails to open
/// at all although most of its audio is intact. When the first attempt fails, the probe is
/// repeated on the same bytes presented as an unseekable stream of unknown length, which makes
/// those demuxers stop at the audio data; a truncated file then decodes up to its cut like a
/// truncated WAV does.
pub(super) fn probe(source: TrackedSource) -> Result<Box<dyn FormatReader>, DecodeError> {
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
pub(super) fn select_audio_track(format: &dyn FormatReader) -> Option<&Track> {
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

pub(super) fn codec_name(params: &AudioCodecParameters) -> String {
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

pub(super) fn track_duration_secs(track: &Track, params: &AudioCodecParameters) -> Option<f64> {
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
