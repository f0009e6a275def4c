//! Speech recognition: log-mel features, the Whisper tokenizer, decoding and long-form
//! transcription. Pure compute over samples; no database, HTTP or async runtime.

pub mod alignment;
pub mod batched;
pub mod bpe;
pub mod mel;
pub mod tokenizer;
pub mod transcribe;
pub mod vad;
pub mod whisper;
