//! Sniffs whether content is decodable audio or video, by its bytes, never by its name.

use symphonia::core::codecs::CodecParameters;
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::codecs::audio::well_known::CODEC_ID_OPUS;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;

/// What a probe found out about a media file.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaInfo {
    /// Short container name, e.g. `wave`, `isomp4`, `ogg`, `mkv`.
    pub container: String,
    /// Short codec name of the first audio track, e.g. `pcm_s16le`, `aac`, `opus`.
    pub codec: String,
    pub sample_rate_hz: Option<u32>,
    pub channels: Option<usize>,
    pub duration_secs: Option<f64>,
    /// MIME type to serve the original with.
    pub media_type: String,
    /// True when the container also holds a video track.
    pub has_video: bool,
}

/// Why content was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("not a recognised audio or video container")]
    UnknownContainer,
    #[error("{container} file has no audio track")]
    NoAudioTrack { container: String },
    #[error("{container} file: audio codec {codec} is not supported")]
    UnsupportedCodec { container: String, codec: String },
    #[error("{container} file could not be decoded: {reason}")]
    Corrupt { container: String, reason: String },
}

impl ProbeError {
    pub fn code(&self) -> &'static str {
        "unsupported-media"
    }
}

/// Packets decoded to prove the stream really decodes, not just that its header parses.
const PACKETS_TO_TRY: usize = 8;

/// Probes the container, finds the first audio track and decodes its first packets.
/// Opus is accepted by its parameters: it is decoded by a separate decoder, not symphonia.
/// A demuxer or decoder that panics on hostile input (symphonia's RIFF reader overflows on a
/// 65535-channel header) is reported as corrupt media, never unwound into the caller.
pub fn probe(source: Box<dyn MediaSource>) -> Result<MediaInfo, ProbeError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| probe_unguarded(source)))
        .unwrap_or_else(|_| {
            Err(ProbeError::Corrupt {
                container: "unknown".to_owned(),
                reason: "the demuxer failed on malformed data".to_owned(),
            })
        })
}

fn probe_unguarded(source: Box<dyn MediaSource>) -> Result<MediaInfo, ProbeError> {
    let stream = MediaSourceStream::new(source, Default::default());
    let mut format = symphonia::default::get_probe()
        .probe(
            &Hint::new(),
            stream,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|_| ProbeError::UnknownContainer)?;
    let container = format.format_info().short_name.to_owned();
    let has_video = format.default_track(TrackType::Video).is_some();
    let track = format
        .default_track(TrackType::Audio)
        .or_else(|| {
            format
                .tracks()
                .iter()
                .find(|t| matches!(t.codec_params, Some(CodecParameters::Audio(_))))
        })
        .ok_or_else(|| ProbeError::NoAudioTrack {
            container: container.clone(),
        })?;
    let Some(CodecParameters::Audio(params)) = track.codec_params.clone() else {
        return Err(ProbeError::NoAudioTrack { container });
    };
    let track_id = track.id;
    let duration_secs = match (track.num_frames, params.sample_rate) {
        (Some(frames), Some(rate)) if rate > 0 => Some(frames as f64 / f64::from(rate)),
        _ => match (track.duration, track.time_base) {
            (Some(duration), Some(base)) => Some(
                duration.get() as f64 * f64::from(base.numer.get()) / f64::from(base.denom.get()),
            ),
            _ => None,
        },
    };
    let codecs = symphonia::default::get_codecs();
    let codec_name = codecs
        .get_audio_decoder(params.codec)
        .map(|d| d.codec.info.short_name.to_owned())
        .unwrap_or_else(|| {
            if params.codec == CODEC_ID_OPUS {
                "opus".to_owned()
            } else {
                format!("{}", params.codec)
            }
        });
    let info = MediaInfo {
        media_type: media_type_for(&container, has_video),
        container: container.clone(),
        codec: codec_name.clone(),
        sample_rate_hz: params.sample_rate,
        channels: params.channels.as_ref().map(|c| c.count()),
        duration_secs,
        has_video,
    };
    if params.codec == CODEC_ID_OPUS {
        return Ok(info);
    }
    let mut decoder = codecs
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|_| ProbeError::UnsupportedCodec {
            container: container.clone(),
            codec: codec_name.clone(),
        })?;
    let mut decoded = 0usize;
    let mut failures = 0usize;
    while decoded < PACKETS_TO_TRY && failures < PACKETS_TO_TRY {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            Err(e) => {
                if decoded > 0 {
                    break;
                }
                return Err(ProbeError::Corrupt {
                    container,
                    reason: e.to_string(),
                });
            }
        };
        if packet.track_id != track_id {
            continue;
        }
        match decoder.decode(&packet) {
            Ok(_) => decoded += 1,
            Err(_) => failures += 1,
        }
    }
    if decoded == 0 {
        return Err(ProbeError::Corrupt {
            container,
            reason: "no audio packet could be decoded".to_owned(),
        });
    }
    Ok(info)
}

fn media_type_for(container: &str, has_video: bool) -> String {
    let kind = if has_video { "video" } else { "audio" };
    let subtype = match container {
        "wave" | "wav" => "wav",
        "flac" => "flac",
        "mp3" | "mpa" => "mpeg",
        "ogg" => "ogg",
        "isomp4" | "mp4" => "mp4",
        "mkv" | "matroska" | "webm" => "webm",
        "aiff" => "aiff",
        "caf" => "x-caf",
        "adts" | "aac" => "aac",
        _ => return "application/octet-stream".to_owned(),
    };
    format!("{kind}/{subtype}")
}
