//! Per-packet decoding: the symphonia or Opus backend, the downmix to mono, and the output
//! buffer that hands fixed-size chunks to the sink.

use std::ops::ControlFlow;
use std::panic::{AssertUnwindSafe, catch_unwind};

use symphonia::core::codecs::audio::AudioDecoder;
use symphonia::core::errors::Error as SymError;
use symphonia::core::packet::Packet;

use super::DecodeReport;
use super::opus::OpusBackend;
/// Mean of the channels of each interleaved frame.
pub(super) fn downmix(interleaved: &[f32], channels: usize, mono: &mut Vec<f32>) {
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
pub(super) struct Output {
    pub(super) chunk_samples: usize,
    pub(super) buf: Vec<f32>,
    pub(super) report: DecodeReport,
}

impl Output {
    pub(super) fn push(
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

    pub(super) fn finish(&mut self, sink: &mut impl FnMut(&[f32]) -> ControlFlow<()>) {
        if !self.buf.is_empty() {
            self.report.samples_out += self.buf.len() as u64;
            // The stream ends here either way, so a Break needs no handling.
            let _ = sink(&self.buf);
            self.buf.clear();
        }
    }
}

/// Why one packet gave no audio.
pub(super) enum PacketError {
    /// Recoverable: skip the packet, count it, go on.
    Skip(String),
    /// The decoder cannot go on.
    Fatal(SymError),
}

pub(super) enum Backend {
    Symphonia(Box<dyn AudioDecoder>),
    Opus(Box<OpusBackend>),
}

impl Backend {
    /// Decodes one packet into `interleaved` and returns its (sample rate, channels), or `None`
    /// when the packet yields no frames.
    pub(super) fn decode(
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
