//! Whisper on ONNX Runtime: the encoder, and a decoder loop with a self-attention KV cache,
//! Whisper's suppression and timestamp rules, language detection and no-speech probability.

mod decoding;
mod run;
mod sampling;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::OnceLock;

use ort::session::Session;
use ort::value::Tensor;

use super::bpe::BpeEncoder;
use super::mel::{LogMel, N_FRAMES};
use super::tokenizer::{SpecialTokens, Tokenizer};
use crate::models::manifest::Manifest;
use crate::models::runtime::Runtime;
use decoding::Scratch;
use run::DecoderRun;
pub use sampling::log_softmax;
use sampling::log_sum_exp;

#[derive(Debug, thiserror::Error)]
pub enum AsrError {
    #[error("model {model}: {reason}")]
    Model { model: String, reason: String },
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("reading audio: {0}")]
    Audio(String),
    #[error("cancelled")]
    Cancelled,
}

impl AsrError {
    pub fn code(&self) -> &'static str {
        match self {
            AsrError::Model { .. } => "model-invalid",
            AsrError::Inference(_) => "inference",
            AsrError::Audio(_) => "scratch-io",
            AsrError::Cancelled => "cancelled",
        }
    }
}

fn inference(error: impl std::fmt::Display) -> AsrError {
    AsrError::Inference(error.to_string())
}

/// Dimensions and token lists from the manifest's parameters.
#[derive(Debug, Clone)]
pub struct WhisperParams {
    pub n_mels: usize,
    pub n_text_layer: usize,
    pub n_text_state: usize,
    pub n_text_head: usize,
    pub n_text_ctx: usize,
    pub n_vocab: usize,
    pub n_audio_ctx: usize,
    pub multilingual: bool,
    pub alignment_heads: Vec<(usize, usize)>,
    pub suppress_tokens: Vec<i64>,
    pub begin_suppress: Vec<i64>,
}

/// The decoder I/O contract this code speaks (`decoder_layout` in the manifest's
/// parameters, written by scripts/convert_whisper.py): per-layer cache and cross-attention
/// inputs in [rows, heads, positions, head dim], new K/V out.
pub const DECODER_LAYOUT: u64 = 2;

/// The encoder's output for one 30 s window: cross-attention keys and values of every layer
/// ([1, heads, 1500, head dim] each, in the order k0, v0, k1, v1, …), kept as ONNX Runtime
/// values so the decoder binds them without a copy. A multi-row decode (beams, samples)
/// shares them: the decoder broadcasts one window over its rows.
#[derive(Debug)]
pub struct Encoded {
    pub cross: Vec<ort::value::DynValue>,
    /// Windows encoded together (the cross K/V's first axis): 1, or a batch of independent
    /// windows, one decoder row each ([`WhisperModel::decode_windows`]).
    pub windows: usize,
}

#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Language token to force; `None` lets the caller detect first.
    pub language_token: Option<i64>,
    pub translate: bool,
    pub timestamps: bool,
    /// Text tokens of earlier windows (or an initial prompt), after `sot_prev`.
    pub prompt: Vec<i64>,
    /// Tokens put after `sot_prev` ahead of the prompt (faster-whisper's hotwords).
    pub hotwords: Vec<i64>,
    pub max_tokens: usize,
    /// Largest first timestamp, in 0.02 s steps (Whisper uses 1.0 s).
    pub max_initial_timestamp_steps: i64,
    /// Beams at temperature 0; 1 decodes greedily.
    pub beam_size: usize,
    /// Above 0, `best_of` sequences are sampled at this temperature instead of a beam search.
    pub temperature: f32,
    pub best_of: usize,
    /// Seeds the sampler so that a window decodes the same way on every run.
    pub seed: u64,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            language_token: None,
            translate: false,
            timestamps: true,
            prompt: Vec::new(),
            hotwords: Vec::new(),
            max_tokens: 224,
            max_initial_timestamp_steps: 50,
            beam_size: 5,
            temperature: 0.0,
            best_of: 5,
            seed: 0,
        }
    }
}

/// What the decoder produced for one window.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Sampled tokens after the prompt, without the final end-of-text.
    pub tokens: Vec<i64>,
    /// Log-probability of each sampled token.
    pub logprobs: Vec<f32>,
    /// Sum of the tokens' and the end-of-text's log-probabilities, over tokens + 1.
    pub avg_logprob: f32,
    pub no_speech_prob: f32,
    /// Cross-attention weights of the alignment heads, [tokens + 1][head][1500]: row i is the
    /// attention that predicted `tokens[i]`, the last row predicted end-of-text.
    pub alignment: Vec<Vec<Vec<f32>>>,
    pub temperature: f32,
    /// Decoding was cut short by the repetition guard (a looping hallucination).
    pub repetitive: bool,
}

/// Stop a sequence when one token ends it this many times in a row...
const MAX_SAME_TOKEN: usize = 20;
/// ...or an n-gram of at least 3 tokens (up to this length) this many times in a row.
const MAX_NGRAM: usize = 50;
const NGRAM_REPEATS: usize = 4;

/// True when `tokens` ends in a loop: one token 20 times, or an n-gram (3 ≤ n ≤ 50, not a
/// single repeated token) four times in a row.
pub fn is_repetitive(tokens: &[i64]) -> bool {
    let len = tokens.len();
    if len >= MAX_SAME_TOKEN
        && tokens[len - MAX_SAME_TOKEN..]
            .iter()
            .all(|t| *t == tokens[len - 1])
    {
        return true;
    }
    (3..=MAX_NGRAM.min(len / NGRAM_REPEATS)).any(|n| {
        let gram = &tokens[len - n..];
        gram.iter().any(|t| *t != gram[0])
            && (2..=NGRAM_REPEATS).all(|k| tokens[len - k * n..len - (k - 1) * n] == *gram)
    })
}

pub struct WhisperModel {
    pub name: String,
    pub params: WhisperParams,
    pub tokenizer: Tokenizer,
    pub mel: LogMel,
    encoder: Session,
    decoder: Session,
    /// Built on first use: only prompts and hotwords need text → tokens.
    bpe: OnceLock<BpeEncoder>,
    /// Buffers reused by every window's decode.
    scratch: Scratch,
    /// Input names of the decoder's per-layer tensors, in the encoder's output order.
    names: LayerNames,
}

/// `cross_k_{l}`, `cross_v_{l}` and `cache_k_{l}`, `cache_v_{l}`, each list k0, v0, k1, ….
#[derive(Debug, Clone)]
struct LayerNames {
    cross: Vec<String>,
    cache: Vec<String>,
}

impl LayerNames {
    fn new(layers: usize) -> Self {
        let list = |prefix: &str| {
            (0..layers)
                .flat_map(|l| [format!("{prefix}_k_{l}"), format!("{prefix}_v_{l}")])
                .collect()
        };
        Self {
            cross: list("cross"),
            cache: list("cache"),
        }
    }
}

impl std::fmt::Debug for WhisperModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhisperModel")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn param_usize(p: &serde_json::Value, key: &str, model: &str) -> Result<usize, AsrError> {
    p[key]
        .as_u64()
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| AsrError::Model {
            model: model.to_owned(),
            reason: format!("parameter `{key}` missing"),
        })
}

fn param_i64(p: &serde_json::Value, key: &str, model: &str) -> Result<i64, AsrError> {
    p[key].as_i64().ok_or_else(|| AsrError::Model {
        model: model.to_owned(),
        reason: format!("parameter `{key}` missing"),
    })
}

fn int_list(value: &serde_json::Value) -> Vec<i64> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_i64()).collect())
        .unwrap_or_default()
}

impl WhisperModel {
    /// Loads a converted model directory; `quantized` picks the int8 encoder and decoder.
    pub fn load(
        runtime: &Runtime,
        dir: &Path,
        manifest: &Manifest,
        quantized: bool,
    ) -> Result<Self, AsrError> {
        let name = manifest.name.clone();
        let p = &manifest.parameters;
        let bad = |reason: String| AsrError::Model {
            model: name.clone(),
            reason,
        };
        let params = WhisperParams {
            n_mels: param_usize(p, "n_mels", &name)?,
            n_text_layer: param_usize(p, "n_text_layer", &name)?,
            n_text_state: param_usize(p, "n_text_state", &name)?,
            n_text_head: param_usize(p, "n_text_head", &name)?,
            n_text_ctx: param_usize(p, "n_text_ctx", &name)?,
            n_vocab: param_usize(p, "n_vocab", &name)?,
            n_audio_ctx: param_usize(p, "n_audio_ctx", &name)?,
            multilingual: p["multilingual"].as_bool().unwrap_or(false),
            alignment_heads: p["alignment_heads"]
                .as_array()
                .map(|heads| {
                    heads
                        .iter()
                        .filter_map(|h| Some((h[0].as_u64()? as usize, h[1].as_u64()? as usize)))
                        .collect()
                })
                .unwrap_or_default(),
            suppress_tokens: int_list(&p["suppress_tokens"]),
            begin_suppress: int_list(&p["begin_suppress"]),
        };
        let s = &p["special_tokens"];
        let mut languages: Vec<(String, i64)> = s["language_tokens"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(code, id)| Some((code.clone(), id.as_i64()?)))
                    .collect()
            })
            .unwrap_or_default();
        languages.sort_by_key(|(_, id)| *id);
        let special = SpecialTokens {
            sot: param_i64(s, "sot", &name)?,
            eot: param_i64(s, "eot", &name)?,
            transcribe: param_i64(s, "transcribe", &name)?,
            translate: param_i64(s, "translate", &name)?,
            sot_prev: param_i64(s, "sot_prev", &name)?,
            no_speech: param_i64(s, "no_speech", &name)?,
            no_timestamps: param_i64(s, "no_timestamps", &name)?,
            timestamp_begin: param_i64(s, "timestamp_begin", &name)?,
            languages,
        };
        let file = |role: &str| -> Result<std::path::PathBuf, AsrError> {
            p["files"][role]
                .as_str()
                .map(|f| dir.join(f))
                .ok_or_else(|| bad(format!("no `{role}` file in the manifest")))
        };
        let tokens_text =
            std::fs::read_to_string(file("tokens")?).map_err(|e| bad(format!("tokens: {e}")))?;
        let tokenizer =
            Tokenizer::from_tokens_txt(&tokens_text, special).map_err(|e| bad(e.to_string()))?;
        let mel_bytes =
            std::fs::read(file("mel_filters")?).map_err(|e| bad(format!("mel filters: {e}")))?;
        let mel = LogMel::from_bytes(params.n_mels, &mel_bytes).map_err(|e| bad(e.to_string()))?;
        let (encoder_role, decoder_role) = if quantized {
            ("encoder_int8", "decoder_int8")
        } else {
            ("encoder", "decoder")
        };
        let layout = p["decoder_layout"].as_u64().unwrap_or(1);
        if p["layout"].as_str() == Some("sherpa-onnx") {
            return Err(bad(format!(
                "a sherpa-onnx export, whose decoder copies its whole cache at every step: this \
                 version runs decoder layout {DECODER_LAYOUT}, which scripts/convert_whisper.py \
                 writes from the same model's CTranslate2 weights (scripts/fetch-models, or a \
                 bundle exported from a machine that ran it)"
            )));
        }
        if layout != DECODER_LAYOUT {
            return Err(bad(format!(
                "converted with decoder layout {layout}, this version needs layout \
                 {DECODER_LAYOUT}: convert it again (scripts/fetch-models) or import a \
                 newer bundle"
            )));
        }
        let params_layers = params.n_text_layer;
        let encoder = runtime
            .session(&file(encoder_role)?)
            .map_err(|e| bad(e.to_string()))?;
        let decoder = runtime
            .session(&file(decoder_role)?)
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            name,
            params,
            tokenizer,
            mel,
            encoder,
            decoder,
            bpe: OnceLock::new(),
            scratch: Scratch::default(),
            names: LayerNames::new(params_layers),
        })
    }

    /// Runs the encoder on one window of features ([n_mels × 3000]).
    pub fn encode(&mut self, features: &[f32]) -> Result<Encoded, AsrError> {
        self.encode_windows(&[features])
    }

    /// Runs the encoder once on several windows of features ([n_mels × 3000] each), as one
    /// batch: the throughput mode's step (`decode_windows` decodes them together).
    pub fn encode_windows(&mut self, windows: &[&[f32]]) -> Result<Encoded, AsrError> {
        let n_mels = self.params.n_mels as i64;
        let per_window = self.params.n_mels * N_FRAMES;
        if windows.is_empty() || windows.iter().any(|w| w.len() != per_window) {
            return Err(inference("encoder input windows have an unexpected size"));
        }
        let mut batch = Vec::with_capacity(windows.len() * per_window);
        for window in windows {
            batch.extend_from_slice(window);
        }
        let input =
            Tensor::from_array((vec![windows.len() as i64, n_mels, N_FRAMES as i64], batch))
                .map_err(inference)?;
        let mut outputs = self
            .encoder
            .run(ort::inputs!["mel" => input])
            .map_err(inference)?;
        let cross = self
            .names
            .cross
            .iter()
            .map(|name| {
                outputs
                    .remove(name.as_str())
                    .ok_or_else(|| inference(format!("encoder has no {name} output")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Encoded {
            cross,
            windows: windows.len(),
        })
    }

    /// The start of the decoder prompt: sot, language, task, and no-timestamps if asked.
    pub fn sot_sequence(&self, options: &DecodeOptions) -> Vec<i64> {
        let special = &self.tokenizer.special;
        let mut sequence = vec![special.sot];
        if self.params.multilingual {
            if let Some(language) = options.language_token {
                sequence.push(language);
            }
            sequence.push(if options.translate {
                special.translate
            } else {
                special.transcribe
            });
        }
        if !options.timestamps {
            sequence.push(special.no_timestamps);
        }
        sequence
    }

    /// Whisper tokens of `text` (byte-level BPE); prompts are encoded as `" " + text`.
    pub fn encode_text(&self, text: &str) -> Vec<i64> {
        self.bpe
            .get_or_init(|| BpeEncoder::new(&self.tokenizer))
            .encode(text)
    }

    /// Language probabilities from the logits after `sot`, most likely first.
    pub fn detect_language(&mut self, encoded: &Encoded) -> Result<Vec<(String, f32)>, AsrError> {
        let languages = self.tokenizer.special.languages.clone();
        if languages.is_empty() {
            return Ok(vec![("en".to_owned(), 1.0)]);
        }
        let mut run = DecoderRun::new(&self.decoder, &self.params, &self.names, encoded, 1)?;
        run.step(
            &mut self.decoder,
            &self.params,
            &[self.tokenizer.special.sot],
            None,
        )?;
        let last = &run.logits[..self.params.n_vocab];
        let logit = |id: i64| {
            usize::try_from(id)
                .ok()
                .and_then(|i| last.get(i))
                .copied()
                .unwrap_or(f32::NEG_INFINITY)
        };
        let max = languages
            .iter()
            .map(|(_, id)| logit(*id))
            .fold(f32::NEG_INFINITY, f32::max);
        let total: f32 = languages
            .iter()
            .map(|(_, id)| (logit(*id) - max).exp())
            .sum();
        let mut probs: Vec<(String, f32)> = languages
            .iter()
            .map(|(code, id)| (code.clone(), (logit(*id) - max).exp() / total))
            .collect();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(probs)
    }

    /// Greedy decoding of one window (beam size 1 at temperature 0).
    pub fn decode_greedy(
        &mut self,
        encoded: &Encoded,
        options: &DecodeOptions,
    ) -> Result<Decoded, AsrError> {
        let options = DecodeOptions {
            beam_size: 1,
            temperature: 0.0,
            ..options.clone()
        };
        self.decode(encoded, &options)
    }

    /// Decodes one window: greedy or beam search at temperature 0, the best of `best_of`
    /// samples above it; Whisper's suppression and timestamp rules and the repetition guard
    /// apply to every sequence.
    pub fn decode(
        &mut self,
        encoded: &Encoded,
        options: &DecodeOptions,
    ) -> Result<Decoded, AsrError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = self.decode_with(encoded, options, &mut scratch);
        self.scratch = scratch;
        result
    }

    /// Greedy decoding (temperature 0) of a batch of independent windows encoded together by
    /// [`Self::encode_windows`], one decoder row per window, all with the same prompt: the
    /// throughput mode. Each window's result is what [`Self::decode_greedy`] gives it alone.
    pub fn decode_windows(
        &mut self,
        encoded: &Encoded,
        options: &DecodeOptions,
    ) -> Result<Vec<Decoded>, AsrError> {
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = self.decode_windows_with(encoded, options, &mut scratch);
        self.scratch = scratch;
        result
    }

    /// Log-probabilities the decoder gives `tokens` forced one at a time after the prompt,
    /// under the decoding rules: an independent check of what a (batched) decode reports.
    pub fn score_tokens(
        &mut self,
        encoded: &Encoded,
        options: &DecodeOptions,
        tokens: &[i64],
    ) -> Result<Vec<f32>, AsrError> {
        let (prompt, _) = self.prompt(options);
        let mut run = DecoderRun::new(&self.decoder, &self.params, &self.names, encoded, 1)?;
        run.step(&mut self.decoder, &self.params, &prompt, None)?;
        let mut scores = Vec::with_capacity(tokens.len());
        for (i, &token) in tokens.iter().enumerate() {
            self.apply_rules(&mut run.logits, &tokens[..i], options);
            let lse = log_sum_exp(&run.logits);
            scores.push(
                usize::try_from(token)
                    .ok()
                    .and_then(|t| run.logits.get(t))
                    .map_or(f32::NEG_INFINITY, |&logit| logit - lse),
            );
            run.step(&mut self.decoder, &self.params, &[token], None)?;
        }
        Ok(scores)
    }

    /// The decoder prompt and the index of `sot` in it.
    fn prompt(&self, options: &DecodeOptions) -> (Vec<i64>, usize) {
        let mut prompt = Vec::new();
        if !options.prompt.is_empty() || !options.hotwords.is_empty() {
            prompt.push(self.tokenizer.special.sot_prev);
            // Hotwords and earlier text share the half of the context Whisper gives a prompt.
            let half = (self.params.n_text_ctx / 2).saturating_sub(1);
            let hotwords = &options.hotwords[..options.hotwords.len().min(half)];
            prompt.extend_from_slice(hotwords);
            let keep = half - hotwords.len();
            let start = options.prompt.len().saturating_sub(keep);
            prompt.extend_from_slice(&options.prompt[start..]);
        }
        let sot_index = prompt.len();
        prompt.extend(self.sot_sequence(options));
        (prompt, sot_index)
    }
}
