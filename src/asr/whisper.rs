//! Whisper on ONNX Runtime: the encoder, and a decoder loop with a self-attention KV cache,
//! Whisper's suppression and timestamp rules, language detection and no-speech probability.

use std::path::Path;
use std::sync::OnceLock;

use ort::session::Session;
use ort::value::Tensor;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::bpe::BpeEncoder;
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
        let n_mels = self.params.n_mels as i64;
        let input = Tensor::from_array((vec![1i64, n_mels, N_FRAMES as i64], features.to_vec()))
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
        Ok(Encoded { cross })
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

    fn decode_with(
        &mut self,
        encoded: &Encoded,
        options: &DecodeOptions,
        scratch: &mut Scratch,
    ) -> Result<Decoded, AsrError> {
        let sampling = options.temperature > 0.0;
        let beam = !sampling && options.beam_size > 1;
        let rows = if beam {
            options.beam_size
        } else if sampling {
            options.best_of.max(1)
        } else {
            1
        };
        let (prompt, sot_index) = self.prompt(options);
        let mut run = DecoderRun::new(&self.decoder, &self.params, &self.names, encoded, rows)?;
        // Every row starts from the same prompt.
        scratch.feed.clear();
        for _ in 0..rows {
            scratch.feed.extend_from_slice(&prompt);
        }
        run.step(
            &mut self.decoder,
            &self.params,
            &scratch.feed,
            Some(sot_index),
        )?;
        let no_speech_prob = softmax_at(&run.probe, self.tokenizer.special.no_speech as usize);
        let max_tokens = options
            .max_tokens
            .min(self.params.n_text_ctx.saturating_sub(prompt.len() + 1));
        scratch.tree.reset(run.alignment_width);
        let root = scratch.tree.push(None, run.alignment_row(0));
        let best = if beam {
            self.beam_search(&mut run, options, max_tokens, root, scratch)?
        } else {
            self.sample_rows(&mut run, options, max_tokens, root, scratch)?
        };
        let alignment = scratch
            .tree
            .path(best.node, self.params.alignment_heads.len());
        let avg_logprob = best.sum / (best.tokens.len() as f32 + 1.0);
        Ok(Decoded {
            tokens: best.tokens,
            logprobs: best.logprobs,
            avg_logprob,
            no_speech_prob,
            alignment,
            temperature: options.temperature,
            repetitive: best.repetitive,
        })
    }

    /// Each row on its own: the most likely token at temperature 0, a sample above it. The
    /// best row by Whisper's ranking (sum of log-probabilities over length) wins.
    fn sample_rows(
        &mut self,
        run: &mut DecoderRun,
        options: &DecodeOptions,
        max_tokens: usize,
        root: u32,
        scratch: &mut Scratch,
    ) -> Result<Hyp, AsrError> {
        let eot = self.tokenizer.special.eot;
        let n_vocab = self.params.n_vocab;
        let mut rng = StdRng::seed_from_u64(options.seed);
        let Scratch {
            beams: hyps,
            feed,
            tree,
            ..
        } = scratch;
        hyps.resize_with(run.rows, Hyp::default);
        for hyp in hyps.iter_mut() {
            hyp.reset(root);
        }
        loop {
            for (r, hyp) in hyps.iter_mut().enumerate() {
                if hyp.done {
                    continue;
                }
                if hyp.tokens.len() >= max_tokens {
                    hyp.done = true;
                    continue;
                }
                let row = &mut run.logits[r * n_vocab..(r + 1) * n_vocab];
                self.apply_rules(row, &hyp.tokens, options);
                let token = if options.temperature > 0.0 {
                    sample(row, options.temperature, &mut rng)
                } else {
                    argmax(row)
                };
                let logprob = row[token] - log_sum_exp(row);
                let token = token as i64;
                if token == eot {
                    hyp.sum += logprob;
                    hyp.done = true;
                    continue;
                }
                hyp.tokens.push(token);
                if is_repetitive(&hyp.tokens) {
                    // Drop the looping token so the alignment still has tokens + 1 rows.
                    hyp.tokens.pop();
                    hyp.done = true;
                    hyp.repetitive = true;
                    continue;
                }
                hyp.logprobs.push(logprob);
                hyp.sum += logprob;
            }
            if hyps.iter().all(|h| h.done) {
                break;
            }
            // Finished rows ride along (the batch keeps its shape); their outputs are unused.
            feed.clear();
            feed.extend(hyps.iter().map(|h| h.tokens.last().copied().unwrap_or(eot)));
            run.step(&mut self.decoder, &self.params, feed, None)?;
            for (r, hyp) in hyps.iter_mut().enumerate() {
                if !hyp.done {
                    hyp.node = tree.push(Some(hyp.node), run.alignment_row(r));
                }
            }
        }
        hyps.iter()
            .max_by(|a, b| a.score().total_cmp(&b.score()))
            .cloned()
            .ok_or_else(|| inference("decoding produced no sequence"))
    }

    /// Whisper's beam search: the top beam + 1 continuations of every beam, the best `rows`
    /// that don't end the text become the next beams, end-of-text ones are finished; stops
    /// with `rows` finished sequences (patience 1) and ranks them by mean log-probability.
    fn beam_search(
        &mut self,
        run: &mut DecoderRun,
        options: &DecodeOptions,
        max_tokens: usize,
        root: u32,
        scratch: &mut Scratch,
    ) -> Result<Hyp, AsrError> {
        let eot = self.tokenizer.special.eot;
        let n_vocab = self.params.n_vocab;
        let rows = run.rows;
        let Scratch {
            beams,
            next,
            finished,
            candidates,
            top,
            parents,
            feed,
            tree,
        } = scratch;
        // All rows hold the same prompt: one live beam until the first choice.
        beams.truncate(1);
        beams.resize_with(1, Hyp::default);
        beams[0].reset(root);
        finished.clear();
        loop {
            candidates.clear();
            for (b, hyp) in beams.iter().enumerate() {
                let row = &mut run.logits[b * n_vocab..(b + 1) * n_vocab];
                self.apply_rules(row, &hyp.tokens, options);
                let lse = log_sum_exp(row);
                top_k(row, rows + 1, top);
                candidates.extend(top.iter().map(|&(logit, token)| Candidate {
                    score: hyp.sum + logit - lse,
                    beam: b,
                    token: token as i64,
                    logprob: logit - lse,
                }));
            }
            candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
            parents.clear();
            for c in candidates.iter() {
                if parents.len() == rows {
                    break;
                }
                let parent = &beams[c.beam];
                if c.token == eot {
                    if finished.len() < rows {
                        let mut hyp = parent.clone();
                        hyp.sum = c.score;
                        finished.push(hyp);
                    }
                    continue;
                }
                let saved = parents.len();
                if next.len() <= saved {
                    next.push(Hyp::default());
                }
                let slot = &mut next[saved];
                slot.assign(parent);
                slot.tokens.push(c.token);
                if is_repetitive(&slot.tokens) {
                    if finished.len() < rows {
                        let mut hyp = parent.clone();
                        hyp.repetitive = true;
                        finished.push(hyp);
                    }
                    continue;
                }
                slot.logprobs.push(c.logprob);
                slot.sum = c.score;
                parents.push(c.beam);
            }
            if finished.len() >= rows || parents.is_empty() {
                break;
            }
            // Keep the batch full should too few continuations survive; the copies can't win.
            while parents.len() < rows {
                let saved = parents.len();
                if next.len() <= saved {
                    next.push(Hyp::default());
                }
                let (kept, spare) = next.split_at_mut(saved);
                spare[0].assign(&kept[0]);
                spare[0].sum = f32::NEG_INFINITY;
                parents.push(parents[0]);
            }
            next.truncate(rows);
            std::mem::swap(beams, next);
            run.reorder(parents)?;
            feed.clear();
            feed.extend(
                beams
                    .iter()
                    .map(|h| h.tokens.last().copied().unwrap_or(eot)),
            );
            run.step(&mut self.decoder, &self.params, feed, None)?;
            for (r, hyp) in beams.iter_mut().enumerate() {
                hyp.node = tree.push(Some(hyp.node), run.alignment_row(r));
            }
            if beams.first().is_some_and(|h| h.tokens.len() >= max_tokens) {
                break;
            }
        }
        // Too few finished (token limit): the live beams compete as they are (Whisper's
        // finalize).
        if finished.len() < rows {
            beams.sort_by(|a, b| b.sum.total_cmp(&a.sum));
            for hyp in beams.iter().filter(|h| h.sum.is_finite()) {
                if finished.len() >= rows {
                    break;
                }
                finished.push(hyp.clone());
            }
        }
        finished
            .iter()
            .max_by(|a, b| a.score().total_cmp(&b.score()))
            .cloned()
            .ok_or_else(|| inference("beam search produced no sequence"))
    }

    /// Whisper's logit filters: suppressed tokens, blank at the start, and timestamp rules.
    fn apply_rules(&self, logits: &mut [f32], sampled: &[i64], options: &DecodeOptions) {
        let special = &self.tokenizer.special;
        let vocab = logits.len();
        let ts_begin = (special.timestamp_begin as usize).min(vocab);
        let eot = (special.eot as usize).min(vocab);
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
            logits[ts_begin..].fill(f32::NEG_INFINITY);
            return;
        }
        let is_ts = |t: &i64| *t >= special.timestamp_begin;
        let last_was_timestamp = sampled.last().is_some_and(is_ts);
        let penultimate_was_timestamp =
            sampled.len() < 2 || sampled.get(sampled.len() - 2).is_some_and(is_ts);
        if last_was_timestamp {
            if penultimate_was_timestamp {
                logits[ts_begin..].fill(f32::NEG_INFINITY);
            } else {
                logits[..eot].fill(f32::NEG_INFINITY);
            }
        }
        if let Some(&last_ts) = sampled.iter().rev().find(|t| is_ts(t)) {
            let floor = if last_was_timestamp && !penultimate_was_timestamp {
                last_ts
            } else {
                last_ts + 1
            } as usize;
            let floor = floor.clamp(ts_begin, vocab);
            logits[ts_begin..floor].fill(f32::NEG_INFINITY);
        }
        if sampled.is_empty() {
            logits[..ts_begin].fill(f32::NEG_INFINITY);
            let last_allowed = ts_begin + options.max_initial_timestamp_steps.max(0) as usize;
            if last_allowed + 1 < vocab {
                logits[last_allowed + 1..].fill(f32::NEG_INFINITY);
            }
        }
        // If timestamps are more likely in total than any single text token, take a timestamp
        // (both sides of Whisper's log-softmax comparison share the normaliser, so it cancels).
        let timestamp_logprob = log_sum_exp(&logits[ts_begin..]);
        let max_text = logits[..ts_begin]
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        if timestamp_logprob > max_text {
            logits[..ts_begin].fill(f32::NEG_INFINITY);
        }
    }
}

/// One sequence being decoded.
#[derive(Debug, Clone, Default)]
struct Hyp {
    tokens: Vec<i64>,
    logprobs: Vec<f32>,
    /// Log-probabilities of the tokens, plus the end-of-text's once finished by it.
    sum: f32,
    /// Alignment-tree node holding the attention that predicts the next token.
    node: u32,
    done: bool,
    repetitive: bool,
}

impl Hyp {
    fn reset(&mut self, node: u32) {
        self.tokens.clear();
        self.logprobs.clear();
        self.sum = 0.0;
        self.node = node;
        self.done = false;
        self.repetitive = false;
    }

    /// A copy that reuses this one's allocations.
    fn assign(&mut self, other: &Hyp) {
        self.tokens.clone_from(&other.tokens);
        self.logprobs.clone_from(&other.logprobs);
        self.sum = other.sum;
        self.node = other.node;
        self.done = other.done;
        self.repetitive = other.repetitive;
    }

    /// Whisper's ranking without a length penalty: log-probability over length.
    fn score(&self) -> f32 {
        self.sum / self.tokens.len().max(1) as f32
    }
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    score: f32,
    beam: usize,
    token: i64,
    logprob: f32,
}

/// Alignment rows of every decoded position as a tree, so beams that share a prefix share its
/// rows and reordering beams moves no attention data; a sequence's rows are its node's path.
#[derive(Debug, Default)]
struct AlignmentTree {
    rows: Vec<f32>,
    parents: Vec<u32>,
    width: usize,
}

impl AlignmentTree {
    fn reset(&mut self, width: usize) {
        self.rows.clear();
        self.parents.clear();
        self.width = width;
    }

    fn push(&mut self, parent: Option<u32>, row: &[f32]) -> u32 {
        let id = self.parents.len() as u32;
        // The root is its own parent.
        self.parents.push(parent.unwrap_or(id));
        if self.width > 0 {
            self.rows.extend_from_slice(row);
        }
        id
    }

    /// [positions][head][audio] from the root to `node`.
    fn path(&self, node: u32, heads: usize) -> Vec<Vec<Vec<f32>>> {
        if self.width == 0 || heads == 0 {
            return Vec::new();
        }
        let mut chain = Vec::new();
        let mut current = node as usize;
        while let Some(&parent) = self.parents.get(current) {
            chain.push(current);
            if parent as usize == current {
                break;
            }
            current = parent as usize;
        }
        chain.reverse();
        let per_head = self.width / heads;
        chain
            .iter()
            .filter_map(|&n| self.rows.get(n * self.width..(n + 1) * self.width))
            .map(|row| row.chunks(per_head).map(<[f32]>::to_vec).collect())
            .collect()
    }
}

/// Buffers reused across steps and windows.
#[derive(Debug, Default)]
struct Scratch {
    beams: Vec<Hyp>,
    next: Vec<Hyp>,
    finished: Vec<Hyp>,
    candidates: Vec<Candidate>,
    top: Vec<(f32, usize)>,
    parents: Vec<usize>,
    feed: Vec<i64>,
    tree: AlignmentTree,
}

/// One window's decoding of `rows` sequences at once. The window's cross-attention K/V are
/// bound once (shared by every row). The self-attention cache lives here, per layer, in
/// [rows, heads, slots, head dim] tensors that the decoder reads in place: a step returns
/// only the new tokens' K/V, which are written into the slots at `offset`. The slot count
/// grows with the text (doubling, up to the context), so a step reads little more than the
/// tokens so far; beam reordering gathers rows into the spare set of tensors.
struct DecoderRun {
    cpu: ort::memory::MemoryInfo<'static>,
    binding: ort::session::IoBinding,
    names: LayerNames,
    /// Two sets of per-layer caches (k0, v0, k1, v1, …); `current` is the live one.
    caches: [Vec<Tensor<f32>>; 2],
    current: usize,
    /// Slots per cache row (S), at most `ctx`.
    slots: usize,
    ctx: usize,
    heads: usize,
    head_dim: usize,
    offset: usize,
    rows: usize,
    /// Logits of each row's last position, [rows × n_vocab].
    logits: Vec<f32>,
    /// Row 0's logits at the position asked for by `step` (the no-speech probe).
    probe: Vec<f32>,
    /// Each row's alignment-head attention for its last position, [rows × width].
    alignment: Vec<f32>,
    alignment_width: usize,
}

/// Cache slots allocated at first; enough for a prompt of sot, language, task and ~60 tokens.
const INITIAL_SLOTS: usize = 64;

impl DecoderRun {
    fn new(
        decoder: &Session,
        params: &WhisperParams,
        names: &LayerNames,
        encoded: &Encoded,
        rows: usize,
    ) -> Result<Self, AsrError> {
        let rows = rows.max(1);
        if encoded.cross.len() != names.cross.len() {
            return Err(inference(
                "encoder output does not match the decoder's layers",
            ));
        }
        let mut binding = decoder.create_binding().map_err(inference)?;
        for (name, value) in names.cross.iter().zip(&encoded.cross) {
            binding
                .bind_input(name.as_str(), value)
                .map_err(inference)?;
        }
        let cpu = ort::memory::MemoryInfo::new(
            ort::memory::AllocationDevice::CPU,
            0,
            ort::memory::AllocatorType::Device,
            ort::memory::MemoryType::Default,
        )
        .map_err(inference)?;
        let heads = params.n_text_head.max(1);
        let alignment_width = params.alignment_heads.len() * params.n_audio_ctx;
        Ok(Self {
            cpu,
            binding,
            names: names.clone(),
            caches: [Vec::new(), Vec::new()],
            current: 0,
            slots: 0,
            ctx: params.n_text_ctx,
            heads,
            head_dim: params.n_text_state / heads,
            offset: 0,
            rows,
            logits: vec![0.0; rows * params.n_vocab],
            probe: Vec::new(),
            alignment: vec![0.0; rows * alignment_width],
            alignment_width,
        })
    }

    fn alignment_row(&self, row: usize) -> &[f32] {
        let width = self.alignment_width;
        self.alignment
            .get(row * width..(row + 1) * width)
            .unwrap_or(&[])
    }

    /// One zeroed cache tensor per layer and kind, `[rows, heads, slots, dim]` (masked slots
    /// must hold finite values).
    fn zeroed_caches(&self, rows: usize, slots: usize) -> Result<Vec<Tensor<f32>>, AsrError> {
        let shape = [rows, self.heads, slots, self.head_dim].map(|d| d as i64);
        let len = rows * self.heads * slots * self.head_dim;
        (0..self.names.cache.len())
            .map(|_| Tensor::from_array((shape.to_vec(), vec![0.0f32; len])).map_err(inference))
            .collect()
    }

    /// Floats in one (row, head) run of a cache tensor.
    fn run_len(&self) -> usize {
        self.slots * self.head_dim
    }

    /// Makes room for `needed` slots: new, zeroed tensors (masked slots must hold finite
    /// values) with the filled slots copied over.
    fn reserve(&mut self, needed: usize) -> Result<(), AsrError> {
        if needed <= self.slots {
            return Ok(());
        }
        if needed > self.ctx {
            return Err(inference("decoder context is full"));
        }
        let slots = needed
            .max(self.slots * 2)
            .max(INITIAL_SLOTS)
            .next_multiple_of(16)
            .min(self.ctx);
        let (rows, heads, dim) = (self.rows, self.heads, self.head_dim);
        let mut fresh = self.zeroed_caches(rows, slots)?;
        let used = self.offset * dim;
        let (old_run, new_run) = (self.run_len(), slots * dim);
        for (old, new) in self.caches[self.current].iter().zip(fresh.iter_mut()) {
            let (_, from) = old.try_extract_tensor::<f32>().map_err(inference)?;
            let (_, to) = new.try_extract_tensor_mut::<f32>().map_err(inference)?;
            for run in 0..rows * heads {
                to[run * new_run..run * new_run + used]
                    .copy_from_slice(&from[run * old_run..run * old_run + used]);
            }
        }
        self.caches = [fresh, self.zeroed_caches(rows, slots)?];
        self.current = 0;
        self.slots = slots;
        Ok(())
    }

    /// One decoder call over `tokens` ([rows × n] row-major) at the current offset; keeps each
    /// row's last logits and alignment-head attention, and row 0's logits at `probe`. When
    /// every row holds the same tokens at the start (a beam search's or sampler's prompt), the
    /// decoder runs one row and its cache is copied to the others.
    fn step(
        &mut self,
        decoder: &mut Session,
        params: &WhisperParams,
        tokens: &[i64],
        probe: Option<usize>,
    ) -> Result<(), AsrError> {
        let rows = self.rows;
        let n = tokens.len() / rows;
        if n == 0 || n * rows != tokens.len() {
            return Err(inference(
                "decoder step needs the same tokens count in every row",
            ));
        }
        self.reserve(self.offset + n)?;
        let shared =
            rows > 1 && self.offset == 0 && tokens.chunks_exact(n).all(|row| row == &tokens[..n]);
        let call_rows = if shared { 1 } else { rows };
        // Only the last position (and the probe) need logits and attention.
        let positions: Vec<i64> = match probe {
            Some(p) if p.min(n - 1) != n - 1 => vec![p.min(n - 1) as i64, n as i64 - 1],
            _ => vec![n as i64 - 1],
        };
        let p_len = positions.len();
        let tokens_value = Tensor::from_array((
            vec![call_rows as i64, n as i64],
            tokens[..call_rows * n].to_vec(),
        ))
        .map_err(inference)?;
        let offset_value =
            Tensor::from_array((vec![1i64], vec![self.offset as i64])).map_err(inference)?;
        let positions_value =
            Tensor::from_array((vec![p_len as i64], positions)).map_err(inference)?;
        self.binding
            .bind_input("tokens", &tokens_value)
            .map_err(inference)?;
        self.binding
            .bind_input("offset", &offset_value)
            .map_err(inference)?;
        self.binding
            .bind_input("positions", &positions_value)
            .map_err(inference)?;
        // A shared prompt reads an empty one-row cache (nothing before it).
        let single = if shared {
            self.zeroed_caches(1, 1)?
        } else {
            Vec::new()
        };
        let inputs = if shared {
            &single
        } else {
            &self.caches[self.current]
        };
        for (name, cache) in self.names.cache.iter().zip(inputs) {
            self.binding
                .bind_input(name.as_str(), cache)
                .map_err(inference)?;
        }
        // Rebound every step: ORT keeps a device-bound output's first shape otherwise, and
        // the prompt step has more tokens than the later ones.
        for output in ["logits", "new_k", "new_v", "cross_qk"] {
            self.binding
                .bind_output_to_device(output, &self.cpu)
                .map_err(inference)?;
        }
        let outputs = decoder.run_binding(&self.binding).map_err(inference)?;
        let (_, logits) = outputs
            .get("logits")
            .ok_or_else(|| inference("decoder has no logits output"))?
            .try_extract_tensor::<f32>()
            .map_err(inference)?;
        let vocab = params.n_vocab;
        if logits.len() != call_rows * p_len * vocab {
            return Err(inference("decoder logits have an unexpected shape"));
        }
        for (r, dst) in self.logits.chunks_exact_mut(vocab).enumerate() {
            let src = ((r % call_rows) * p_len + p_len - 1) * vocab;
            dst.copy_from_slice(&logits[src..src + vocab]);
        }
        if probe.is_some() {
            self.probe.clear();
            self.probe.extend_from_slice(&logits[..vocab]);
        }
        // New K/V [layers, call rows, heads, n, dim] into slots [offset, offset + n) of every
        // row (a shared prompt's one row goes to all).
        let (heads, dim, run_len) = (self.heads, self.head_dim, self.run_len());
        let layers = self.names.cache.len() / 2;
        let block = n * dim;
        for (kind, output) in ["new_k", "new_v"].into_iter().enumerate() {
            let (_, new) = outputs
                .get(output)
                .ok_or_else(|| inference(format!("decoder has no {output} output")))?
                .try_extract_tensor::<f32>()
                .map_err(inference)?;
            if new.len() != layers * call_rows * heads * block {
                return Err(inference(format!(
                    "decoder {output} has an unexpected shape"
                )));
            }
            for layer in 0..layers {
                let cache = &mut self.caches[self.current][layer * 2 + kind];
                let (_, cache) = cache.try_extract_tensor_mut::<f32>().map_err(inference)?;
                for r in 0..rows {
                    for h in 0..heads {
                        let src = ((layer * call_rows + r % call_rows) * heads + h) * block;
                        let dst = (r * heads + h) * run_len + self.offset * dim;
                        cache[dst..dst + block].copy_from_slice(&new[src..src + block]);
                    }
                }
            }
        }
        if self.alignment_width > 0
            && let Some(qk) = outputs.get("cross_qk")
        {
            let (qk_shape, qk) = qk.try_extract_tensor::<f32>().map_err(inference)?;
            let audio = params.n_audio_ctx;
            // [layers, call rows, heads, positions, audio_ctx]
            if qk_shape.len() == 5
                && qk_shape[1] as usize == call_rows
                && qk_shape[3] as usize == p_len
                && qk_shape[4] as usize == audio
            {
                let heads = qk_shape[2] as usize;
                for (r, dst) in self
                    .alignment
                    .chunks_exact_mut(self.alignment_width)
                    .enumerate()
                {
                    let r = r % call_rows;
                    for (k, &(layer, head)) in params.alignment_heads.iter().enumerate() {
                        let base =
                            (((layer * call_rows + r) * heads + head) * p_len + p_len - 1) * audio;
                        if let Some(src) = qk.get(base..base + audio) {
                            dst[k * audio..(k + 1) * audio].copy_from_slice(src);
                        }
                    }
                }
            }
        }
        self.offset += n;
        Ok(())
    }

    /// Beam reordering: row r of the cache becomes the old row `parents[r]`. Only the filled
    /// slots are gathered, into the spare set, which then becomes the live one.
    fn reorder(&mut self, parents: &[usize]) -> Result<(), AsrError> {
        if parents.iter().enumerate().all(|(r, &p)| r == p) {
            return Ok(());
        }
        let (rows, heads, run_len) = (self.rows, self.heads, self.run_len());
        let used = self.offset * self.head_dim;
        let [a, b] = &mut self.caches;
        let (src, dst) = if self.current == 0 { (a, b) } else { (b, a) };
        for (from, to) in src.iter().zip(dst.iter_mut()) {
            let (_, from) = from.try_extract_tensor::<f32>().map_err(inference)?;
            let (_, to) = to.try_extract_tensor_mut::<f32>().map_err(inference)?;
            for (r, &p) in parents.iter().enumerate().take(rows) {
                let p = p.min(rows - 1);
                for h in 0..heads {
                    let s = (p * heads + h) * run_len;
                    let d = (r * heads + h) * run_len;
                    to[d..d + used].copy_from_slice(&from[s..s + used]);
                }
            }
        }
        self.current = 1 - self.current;
        Ok(())
    }
}

/// The `k` largest finite values of `row`, largest first.
fn top_k(row: &[f32], k: usize, out: &mut Vec<(f32, usize)>) {
    out.clear();
    if k == 0 {
        return;
    }
    // Entry bar: the smallest kept value once `k` are kept; one compare per logit.
    let mut bar = f32::NEG_INFINITY;
    for (i, &x) in row.iter().enumerate() {
        if x <= bar {
            continue;
        }
        let at = out.iter().position(|&(y, _)| x > y).unwrap_or(out.len());
        if out.len() == k {
            out.pop();
        }
        out.insert(at, (x, i));
        if out.len() == k
            && let Some(&(smallest, _)) = out.last()
        {
            bar = smallest;
        }
    }
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0usize, f32::NEG_INFINITY), |acc, (i, &v)| {
            if v > acc.1 { (i, v) } else { acc }
        })
        .0
}

/// A draw from softmax(row / temperature).
fn sample(row: &[f32], temperature: f32, rng: &mut StdRng) -> usize {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return argmax(row);
    }
    let weight = |x: f32| f64::from((x - max) / temperature).exp();
    let total: f64 = row.iter().map(|&x| weight(x)).sum();
    let mut target = rng.random::<f64>() * total;
    for (i, &x) in row.iter().enumerate() {
        let w = weight(x);
        if w > 0.0 && target < w {
            return i;
        }
        target -= w;
    }
    argmax(row)
}

pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let log_sum = log_sum_exp(logits);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repetition_guard_catches_loops_not_speech() {
        let mut tokens: Vec<i64> = vec![1, 2, 3];
        for _ in 0..3 {
            tokens.extend([7, 8, 9]);
        }
        assert!(!is_repetitive(&tokens[3..]), "three repeats are allowed");
        tokens.extend([7, 8, 9]);
        assert!(is_repetitive(&tokens));
        assert!(!is_repetitive(&[5; 19]));
        assert!(is_repetitive(&[5; 20]));
        // Two-token patterns ("no, no, no") aren't n-grams of 3 or more.
        assert!(!is_repetitive(&[4, 6, 4, 6, 4, 6, 4, 6, 4, 6]));
        assert!(!is_repetitive(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]));
    }

    #[test]
    fn top_k_keeps_the_largest_finite_values_in_order() {
        let row = [0.5, f32::NEG_INFINITY, 3.0, -1.0, 2.0, 3.0];
        let mut out = Vec::new();
        top_k(&row, 3, &mut out);
        assert_eq!(out, vec![(3.0, 2), (3.0, 5), (2.0, 4)]);
        top_k(&row, 10, &mut out);
        assert_eq!(out.len(), 5);
    }

    #[test]
    fn sampling_is_seeded_and_cold_sampling_is_greedy() {
        let row = [0.0, 1.0, 0.5, f32::NEG_INFINITY];
        let draws = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..50)
                .map(|_| sample(&row, 1.0, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert!(draws(7).iter().all(|&i| i < 3));
        let mut rng = StdRng::seed_from_u64(1);
        assert!((0..20).all(|_| sample(&row, 1e-3, &mut rng) == 1));
    }

    #[test]
    fn alignment_tree_paths_follow_parents() {
        let mut tree = AlignmentTree::default();
        tree.reset(2);
        let root = tree.push(None, &[0.0, 0.5]);
        let a = tree.push(Some(root), &[1.0, 1.5]);
        let b = tree.push(Some(root), &[2.0, 2.5]);
        let c = tree.push(Some(b), &[3.0, 3.5]);
        assert_eq!(
            tree.path(a, 2),
            vec![vec![vec![0.0], vec![0.5]], vec![vec![1.0], vec![1.5]]]
        );
        assert_eq!(tree.path(c, 1).len(), 3);
        assert_eq!(tree.path(c, 1)[1], vec![vec![2.0, 2.5]]);
    }
}
