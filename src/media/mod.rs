//! Media probing and decoding: bytes in, facts and samples out. Pure compute, no I/O policy.

pub mod decode;
pub mod probe;
pub mod resample;
pub mod waveform;
