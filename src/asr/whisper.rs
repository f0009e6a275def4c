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

/// The encoder's output for one 30 s window: cross-attention keys and values of every layer,
/// kept as ONNX Runtime values so the decoder binds them without a copy.
#[derive(Debug)]
pub struct Encoded {
    pub cross_k: ort::value::DynValue,
    pub cross_v: ort::value::DynValue,
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
    /// Cross-attention weights of the alignment heads, [tokens + 1][head][1500]: row i is the
    /// attention that predicted `tokens[i]`, the last row predicted end-of-text.
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
        let mut outputs = self
            .encoder
            .run(ort::inputs!["mel" => input])
            .map_err(inference)?;
        let cross_k = outputs
            .remove("n_layer_cross_k")
            .ok_or_else(|| inference("encoder has no n_layer_cross_k output"))?;
        let cross_v = outputs
            .remove("n_layer_cross_v")
            .ok_or_else(|| inference("encoder has no n_layer_cross_v output"))?;
        let shape: Vec<i64> = cross_k.shape().iter().copied().collect();
        Ok(Encoded {
            cross_k,
            cross_v,
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
        let mut run = DecoderRun::new(&self.decoder, &self.params, encoded)?;
        let logits = run.step(
            &mut self.decoder,
            &self.params,
            &[self.tokenizer.special.sot],
        )?;
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
        let mut run = DecoderRun::new(&self.decoder, &self.params, encoded)?;
        let logits = run.step(&mut self.decoder, &self.params, &prompt)?;
        let sot_logits = &logits[sot_index * n_vocab..(sot_index + 1) * n_vocab];
        let no_speech_prob = softmax_at(sot_logits, special.no_speech as usize);
        let mut current = logits[logits.len() - n_vocab..].to_vec();

        let max_tokens = options
            .max_tokens
            .min(self.params.n_text_ctx.saturating_sub(prompt.len() + 1));
        let mut tokens: Vec<i64> = Vec::new();
        let mut logprobs = Vec::new();
        // Row i is the attention that predicted tokens[i]; the last row predicted end-of-text.
        let mut alignment = vec![std::mem::take(&mut run.last_alignment)];
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
            let logits = run.step(&mut self.decoder, &self.params, &[token])?;
            alignment.push(std::mem::take(&mut run.last_alignment));
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

/// One window's decoding: the binding holds the cross-attention inputs for the whole window,
/// and the self-attention cache lives in two preallocated pairs of buffers that swap roles each
/// step (input ← previous output), so no step copies or allocates a cache.
struct DecoderRun {
    cpu: ort::memory::MemoryInfo<'static>,
    binding: ort::session::IoBinding,
    caches: [(Tensor<f32>, Tensor<f32>); 2],
    current: usize,
    offset: usize,
    last_alignment: Vec<Vec<f32>>,
}

impl DecoderRun {
    fn new(decoder: &Session, params: &WhisperParams, encoded: &Encoded) -> Result<Self, AsrError> {
        let shape = [
            params.n_text_layer,
            1,
            params.n_text_ctx,
            params.n_text_state,
        ];
        let allocator = decoder.allocator();
        let buffer = || Tensor::<f32>::new(allocator, shape).map_err(inference);
        let caches = [(buffer()?, buffer()?), (buffer()?, buffer()?)];
        let mut binding = decoder.create_binding().map_err(inference)?;
        binding
            .bind_input("n_layer_cross_k", &encoded.cross_k)
            .map_err(inference)?;
        binding
            .bind_input("n_layer_cross_v", &encoded.cross_v)
            .map_err(inference)?;
        let cpu = ort::memory::MemoryInfo::new(
            ort::memory::AllocationDevice::CPU,
            0,
            ort::memory::AllocatorType::Device,
            ort::memory::MemoryType::Default,
        )
        .map_err(inference)?;
        Ok(Self {
            cpu,
            binding,
            caches,
            current: 0,
            offset: 0,
            last_alignment: Vec::new(),
        })
    }

    /// One decoder call over `tokens` at the current offset; returns logits
    /// [n_tokens × n_vocab] and keeps the alignment heads' attention of the last token.
    fn step(
        &mut self,
        decoder: &mut Session,
        params: &WhisperParams,
        tokens: &[i64],
    ) -> Result<Vec<f32>, AsrError> {
        if self.offset + tokens.len() > params.n_text_ctx {
            return Err(inference("decoder context is full"));
        }
        let n = tokens.len() as i64;
        let tokens_value =
            Tensor::from_array((vec![1i64, n], tokens.to_vec())).map_err(inference)?;
        let offset_value =
            Tensor::from_array((vec![1i64], vec![self.offset as i64])).map_err(inference)?;
        self.binding
            .bind_input("tokens", &tokens_value)
            .map_err(inference)?;
        self.binding
            .bind_input("offset", &offset_value)
            .map_err(inference)?;
        // Rebound every step: ORT keeps a device-bound output's first shape otherwise, and
        // the prompt step has more tokens than the later ones.
        self.binding
            .bind_output_to_device("logits", &self.cpu)
            .map_err(inference)?;
        self.binding
            .bind_output_to_device("cross_qk", &self.cpu)
            .map_err(inference)?;
        let (input, output) = if self.current == 0 {
            let [a, b] = &mut self.caches;
            (a, b)
        } else {
            let [a, b] = &mut self.caches;
            (b, a)
        };
        self.binding
            .bind_input("in_n_layer_self_k_cache", &input.0)
            .map_err(inference)?;
        self.binding
            .bind_input("in_n_layer_self_v_cache", &input.1)
            .map_err(inference)?;
        self.binding
            .bind_output("out_n_layer_self_k_cache", &mut output.0)
            .map_err(inference)?;
        self.binding
            .bind_output("out_n_layer_self_v_cache", &mut output.1)
            .map_err(inference)?;
        let outputs = decoder.run_binding(&self.binding).map_err(inference)?;
        let (_, logits) = outputs["logits"]
            .try_extract_tensor::<f32>()
            .map_err(inference)?;
        let logits = logits.to_vec();
        if !params.alignment_heads.is_empty() {
            let (qk_shape, qk) = outputs["cross_qk"]
                .try_extract_tensor::<f32>()
                .map_err(inference)?;
            // [layers, 1, heads, n_tokens, audio_ctx]
            if qk_shape.len() == 5 {
                let heads = qk_shape[2] as usize;
                let n_tokens = qk_shape[3] as usize;
                let audio = qk_shape[4] as usize;
                let last = n_tokens.saturating_sub(1);
                self.last_alignment = params
                    .alignment_heads
                    .iter()
                    .filter_map(|&(layer, head)| {
                        let base = ((layer * heads + head) * n_tokens + last) * audio;
                        qk.get(base..base + audio).map(<[f32]>::to_vec)
                    })
                    .collect();
            }
        }
        self.current = 1 - self.current;
        self.offset += tokens.len();
        Ok(logits)
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
