//! Opus decoding with the `opus-decoder` crate (symphonia has no Opus decoder): the `OpusHead`
//! header, pre-skip and end trimming, and output gain.

use std::panic::{AssertUnwindSafe, catch_unwind};

use opus_decoder::{OpusDecoder, OpusMultistreamDecoder};
use symphonia::core::codecs::audio::AudioCodecParameters;
use symphonia::core::packet::Packet;
use symphonia::core::units::TimeBase;

use super::packets::PacketError;
use super::{DecodeError, ErrCtx};
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

/// Opus decoding outside symphonia, with the codec delay ("pre-skip") and end trimming that a
/// player would apply, so timestamps of the output match the original recording.
pub(super) struct OpusBackend {
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
pub(super) struct OpusHead {
    pub(super) channels: usize,
    pub(super) pre_skip: u16,
    pub(super) gain_q8: i16,
    pub(super) family: u8,
    pub(super) streams: usize,
    pub(super) coupled: usize,
    pub(super) mapping: Vec<u8>,
}

pub(super) fn parse_opus_head(data: &[u8]) -> Option<OpusHead> {
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
    pub(super) fn new(
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

    pub(super) fn decode(
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
