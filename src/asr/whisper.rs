//! Whisper on ONNX Runtime: the encoder, and a decoder loop with a self-attention KV cache,
//! Whisper's suppression and timestamp rules, language detection and no-speech probability.

use std::path::Path;

use ort::session::Session;
use ort::value::Tensor;

use super::mel::{LogMel, N_FRAMES};
use super::tokenizer::{SpecialTokens, Tokenizer};
use crate::models::manifest::Manifest;
use crate::models::runtime::Runtime;

#[derive(Debug, thiserror::Error)]
pub enum AsrError {
    #[error("model {model}: {reason}")]
    Model { model: String, reason: String },
    #[error("inference failed: {0}")]
    Inference(String),
}

impl AsrError {
    pub fn code(&self) -> &'static str {
        match self {
            AsrError::Model { .. } => "model-invalid",
            AsrError::Inference(_) => "inference",
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

/// The encoder's output for one 30 s window: cross-attention keys and values of every layer.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub cross_k: Vec<f32>,
    pub cross_v: Vec<f32>,
    pub shape: Vec<i64>,
}

#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Language token to force; `None` lets the caller detect first.
    pub language_token: Option<i64>,
    pub translate: bool,
    pub timestamps: bool,
    /// Text tokens of earlier windows (or an initial prompt), after `sot_prev`.
    pub prompt: Vec<i64>,
    pub max_tokens: usize,
    /// Largest first timestamp, in 0.02 s steps (Whisper uses 1.0 s).
    pub max_initial_timestamp_steps: i64,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            language_token: None,
            translate: false,
            timestamps: true,
            prompt: Vec::new(),
            max_tokens: 224,
            max_initial_timestamp_steps: 50,
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
    pub avg_logprob: f32,
    pub no_speech_prob: f32,
    /// Cross-attention weights of the alignment heads for each sampled token:
    /// [token][head][1500], kept for word timestamps.
    pub alignment: Vec<Vec<Vec<f32>>>,
}

pub struct WhisperModel {
    pub name: String,
    pub params: WhisperParams,
    pub tokenizer: Tokenizer,
    pub mel: LogMel,
    encoder: Session,
    decoder: Session,
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
        })
    }

    /// Runs the encoder on one window of features ([n_mels × 3000]).
    pub fn encode(&mut self, features: &[f32]) -> Result<Encoded, AsrError> {
        let n_mels = self.params.n_mels as i64;
        let input = Tensor::from_array((vec![1i64, n_mels, N_FRAMES as i64], features.to_vec()))
            .map_err(inference)?;
        let outputs = self
            .encoder
            .run(ort::inputs!["mel" => input])
            .map_err(inference)?;
        let (shape, cross_k) = outputs["n_layer_cross_k"]
            .try_extract_tensor::<f32>()
            .map_err(inference)?;
        let shape: Vec<i64> = shape.iter().copied().collect();
        let (_, cross_v) = outputs["n_layer_cross_v"]
            .try_extract_tensor::<f32>()
            .map_err(inference)?;
        Ok(Encoded {
            cross_k: cross_k.to_vec(),
            cross_v: cross_v.to_vec(),
            shape,
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

    /// Language probabilities from the logits after `sot`, most likely first.
    pub fn detect_language(&mut self, encoded: &Encoded) -> Result<Vec<(String, f32)>, AsrError> {
        let languages = self.tokenizer.special.languages.clone();
        if languages.is_empty() {
            return Ok(vec![("en".to_owned(), 1.0)]);
        }
        let mut state = DecoderState::new(&self.params);
        let logits = self.step(encoded, &mut state, &[self.tokenizer.special.sot])?;
        let last = &logits[logits.len() - self.params.n_vocab..];
        let max = languages
            .iter()
            .map(|(_, id)| last[*id as usize])
            .fold(f32::NEG_INFINITY, f32::max);
        let total: f32 = languages
            .iter()
            .map(|(_, id)| (last[*id as usize] - max).exp())
            .sum();
        let mut probs: Vec<(String, f32)> = languages
            .iter()
            .map(|(code, id)| (code.clone(), (last[*id as usize] - max).exp() / total))
            .collect();
        probs.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(probs)
    }

    /// One decoder call over `tokens` at the state's offset; returns logits [n_tokens × n_vocab]
    /// and advances the cache. Alignment-head attention of the last token is kept in `state`.
    fn step(
        &mut self,
        encoded: &Encoded,
        state: &mut DecoderState,
        tokens: &[i64],
    ) -> Result<Vec<f32>, AsrError> {
        let p = &self.params;
        let cache_shape = vec![
            p.n_text_layer as i64,
            1,
            p.n_text_ctx as i64,
            p.n_text_state as i64,
        ];
        let n = tokens.len() as i64;
        let self_k = std::mem::take(&mut state.self_k);
        let self_v = std::mem::take(&mut state.self_v);
        let inputs = ort::inputs![
            "tokens" => Tensor::from_array((vec![1i64, n], tokens.to_vec())).map_err(inference)?,
            "in_n_layer_self_k_cache" => Tensor::from_array((cache_shape.clone(), self_k)).map_err(inference)?,
            "in_n_layer_self_v_cache" => Tensor::from_array((cache_shape.clone(), self_v)).map_err(inference)?,
            "n_layer_cross_k" => Tensor::from_array((encoded.shape.clone(), encoded.cross_k.clone())).map_err(inference)?,
            "n_layer_cross_v" => Tensor::from_array((encoded.shape.clone(), encoded.cross_v.clone())).map_err(inference)?,
            "offset" => Tensor::from_array((vec![1i64], vec![state.offset as i64])).map_err(inference)?,
        ];
        let outputs = self.decoder.run(inputs).map_err(inference)?;
        let (_, logits) = outputs["logits"]
            .try_extract_tensor::<f32>()
            .map_err(inference)?;
        let logits = logits.to_vec();
        let (_, k) = outputs["out_n_layer_self_k_cache"]
            .try_extract_tensor::<f32>()
            .map_err(inference)?;
        state.self_k = k.to_vec();
        let (_, v) = outputs["out_n_layer_self_v_cache"]
            .try_extract_tensor::<f32>()
            .map_err(inference)?;
        state.self_v = v.to_vec();
        if !p.alignment_heads.is_empty() {
            let (qk_shape, qk) = outputs["cross_qk"]
                .try_extract_tensor::<f32>()
                .map_err(inference)?;
            // [layers, 1, heads, n_tokens, audio_ctx]
            let heads = qk_shape[2] as usize;
            let audio = qk_shape[4] as usize;
            let n_tokens = qk_shape[3] as usize;
            let last = n_tokens - 1;
            state.last_alignment = p
                .alignment_heads
                .iter()
                .map(|&(layer, head)| {
                    let base = ((layer * heads + head) * n_tokens + last) * audio;
                    qk[base..base + audio].to_vec()
                })
                .collect();
        }
        state.offset += tokens.len();
        Ok(logits)
    }

    /// Greedy decoding of one window with Whisper's suppression and timestamp rules.
    pub fn decode_greedy(
        &mut self,
        encoded: &Encoded,
        options: &DecodeOptions,
    ) -> Result<Decoded, AsrError> {
        let special = self.tokenizer.special.clone();
        let n_vocab = self.params.n_vocab;
        let mut prompt = Vec::new();
        if !options.prompt.is_empty() {
            prompt.push(special.sot_prev);
            let keep = (self.params.n_text_ctx / 2).saturating_sub(1);
            let start = options.prompt.len().saturating_sub(keep);
            prompt.extend_from_slice(&options.prompt[start..]);
        }
        let sot_index = prompt.len();
        prompt.extend(self.sot_sequence(options));
        let mut state = DecoderState::new(&self.params);
        let logits = self.step(encoded, &mut state, &prompt)?;
        let sot_logits = &logits[sot_index * n_vocab..(sot_index + 1) * n_vocab];
        let no_speech_prob = softmax_at(sot_logits, special.no_speech as usize);
        let mut current = logits[logits.len() - n_vocab..].to_vec();

        let max_tokens = options
            .max_tokens
            .min(self.params.n_text_ctx.saturating_sub(prompt.len() + 1));
        let mut tokens: Vec<i64> = Vec::new();
        let mut logprobs = Vec::new();
        let mut alignment = Vec::new();
        for _ in 0..max_tokens {
            self.apply_rules(&mut current, &tokens, options);
            let log_probs = log_softmax(&current);
            let (best, best_logprob) =
                log_probs
                    .iter()
                    .enumerate()
                    .fold((0usize, f32::NEG_INFINITY), |acc, (i, &v)| {
                        if v > acc.1 { (i, v) } else { acc }
                    });
            let token = best as i64;
            if token == special.eot {
                break;
            }
            tokens.push(token);
            logprobs.push(best_logprob);
            let logits = self.step(encoded, &mut state, &[token])?;
            alignment.push(std::mem::take(&mut state.last_alignment));
            current = logits[logits.len() - n_vocab..].to_vec();
        }
        let avg_logprob = if logprobs.is_empty() {
            0.0
        } else {
            logprobs.iter().sum::<f32>() / (logprobs.len() as f32 + 1.0)
        };
        Ok(Decoded {
            tokens,
            logprobs,
            avg_logprob,
            no_speech_prob,
            alignment,
        })
    }

    /// Whisper's logit filters: suppressed tokens, blank at the start, and timestamp rules.
    fn apply_rules(&self, logits: &mut [f32], sampled: &[i64], options: &DecodeOptions) {
        let special = &self.tokenizer.special;
        let ts_begin = special.timestamp_begin as usize;
        let vocab = logits.len();
        let mut suppress = |id: i64| {
            if let Ok(i) = usize::try_from(id)
                && i < vocab
            {
                logits[i] = f32::NEG_INFINITY;
            }
        };
        for &id in &self.params.suppress_tokens {
            suppress(id);
        }
        for id in [
            special.transcribe,
            special.translate,
            special.sot,
            special.sot_prev,
            special.no_speech,
            special.no_timestamps,
        ] {
            suppress(id);
        }
        for (_, id) in &special.languages {
            suppress(*id);
        }
        if sampled.is_empty() {
            for &id in &self.params.begin_suppress {
                suppress(id);
            }
        }
        if !options.timestamps {
            for value in logits.iter_mut().skip(ts_begin) {
                *value = f32::NEG_INFINITY;
            }
            return;
        }
        let is_ts = |t: &i64| *t >= special.timestamp_begin;
        let last_was_timestamp = sampled.last().is_some_and(is_ts);
        let penultimate_was_timestamp =
            sampled.len() < 2 || sampled.get(sampled.len() - 2).is_some_and(is_ts);
        if last_was_timestamp {
            if penultimate_was_timestamp {
                for value in logits.iter_mut().skip(ts_begin) {
                    *value = f32::NEG_INFINITY;
                }
            } else {
                for value in logits.iter_mut().take(special.eot as usize) {
                    *value = f32::NEG_INFINITY;
                }
            }
        }
        if let Some(&last_ts) = sampled.iter().rev().find(|t| is_ts(t)) {
            let floor = if last_was_timestamp && !penultimate_was_timestamp {
                last_ts
            } else {
                last_ts + 1
            } as usize;
            for value in logits.iter_mut().take(floor.min(vocab)).skip(ts_begin) {
                *value = f32::NEG_INFINITY;
            }
        }
        if sampled.is_empty() {
            for value in logits.iter_mut().take(ts_begin) {
                *value = f32::NEG_INFINITY;
            }
            let last_allowed = ts_begin + options.max_initial_timestamp_steps as usize;
            for value in logits.iter_mut().skip(last_allowed + 1) {
                *value = f32::NEG_INFINITY;
            }
        }
        // If timestamps are more likely in total than any single text token, take a timestamp.
        let log_probs = log_softmax(logits);
        let timestamp_logprob = log_sum_exp(&log_probs[ts_begin..]);
        let max_text = log_probs[..ts_begin]
            .iter()
            .cloned()
            .fold(f32::NEG_INFINITY, f32::max);
        if timestamp_logprob > max_text {
            for value in logits.iter_mut().take(ts_begin) {
                *value = f32::NEG_INFINITY;
            }
        }
    }
}

/// The decoder's self-attention cache and position for one window.
struct DecoderState {
    self_k: Vec<f32>,
    self_v: Vec<f32>,
    offset: usize,
    last_alignment: Vec<Vec<f32>>,
}

impl DecoderState {
    fn new(params: &WhisperParams) -> Self {
        let len = params.n_text_layer * params.n_text_ctx * params.n_text_state;
        Self {
            self_k: vec![0.0; len],
            self_v: vec![0.0; len],
            offset: 0,
            last_alignment: Vec::new(),
        }
    }
}

pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|v| (v - max).exp()).sum();
    let log_sum = max + sum.ln();
    logits.iter().map(|v| v - log_sum).collect()
}

fn log_sum_exp(values: &[f32]) -> f32 {
    let max = values.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    max + values.iter().map(|v| (v - max).exp()).sum::<f32>().ln()
}

fn softmax_at(logits: &[f32], index: usize) -> f32 {
    let max = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|v| (v - max).exp()).sum();
    logits
        .get(index)
        .map(|v| (v - max).exp() / sum)
        .unwrap_or(0.0)
}
