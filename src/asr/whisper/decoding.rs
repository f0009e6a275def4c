//! The decoder loop of one window: greedy or sampled rows, Whisper's beam search, the logit
//! rules (suppression, timestamps), and the hypotheses and alignment tree they build.

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::run::DecoderRun;
use super::sampling::{argmax, log_sum_exp, sample, softmax_at, top_k};
use super::{AsrError, DecodeOptions, Decoded, Encoded, WhisperModel, inference, is_repetitive};

impl WhisperModel {
    pub(super) fn decode_with(
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
        let vocab = self.params.n_vocab;
        let no_speech_prob = softmax_at(
            &run.probe[..vocab.min(run.probe.len())],
            self.tokenizer.special.no_speech as usize,
        );
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
        self.run_rows(run, options, max_tokens, &[root], scratch)?;
        scratch
            .beams
            .iter()
            .max_by(|a, b| a.score().total_cmp(&b.score()))
            .cloned()
            .ok_or_else(|| inference("decoding produced no sequence"))
    }

    /// A batch of windows (one row each), greedy: every row's sequence is kept.
    pub(super) fn decode_windows_with(
        &mut self,
        encoded: &Encoded,
        options: &DecodeOptions,
        scratch: &mut Scratch,
    ) -> Result<Vec<Decoded>, AsrError> {
        let options = DecodeOptions {
            temperature: 0.0,
            beam_size: 1,
            ..options.clone()
        };
        let rows = encoded.windows.max(1);
        let (prompt, sot_index) = self.prompt(&options);
        let mut run = DecoderRun::new(&self.decoder, &self.params, &self.names, encoded, rows)?;
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
        let vocab = self.params.n_vocab;
        let no_speech: Vec<f32> = run
            .probe
            .chunks_exact(vocab)
            .map(|row| softmax_at(row, self.tokenizer.special.no_speech as usize))
            .collect();
        let max_tokens = options
            .max_tokens
            .min(self.params.n_text_ctx.saturating_sub(prompt.len() + 1));
        scratch.tree.reset(run.alignment_width);
        let roots: Vec<u32> = (0..rows)
            .map(|r| scratch.tree.push(None, run.alignment_row(r)))
            .collect();
        self.run_rows(&mut run, &options, max_tokens, &roots, scratch)?;
        let heads = self.params.alignment_heads.len();
        Ok(scratch
            .beams
            .iter()
            .enumerate()
            .map(|(r, hyp)| Decoded {
                tokens: hyp.tokens.clone(),
                logprobs: hyp.logprobs.clone(),
                avg_logprob: hyp.sum / (hyp.tokens.len() as f32 + 1.0),
                no_speech_prob: no_speech.get(r).copied().unwrap_or(0.0),
                alignment: scratch.tree.path(hyp.node, heads),
                temperature: 0.0,
                repetitive: hyp.repetitive,
            })
            .collect())
    }

    /// Runs every row to its end (or `max_tokens`), each on its own; the sequences are left in
    /// `scratch.beams`. Row r starts at alignment node `roots[r]` (or the only root).
    fn run_rows(
        &mut self,
        run: &mut DecoderRun,
        options: &DecodeOptions,
        max_tokens: usize,
        roots: &[u32],
        scratch: &mut Scratch,
    ) -> Result<(), AsrError> {
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
        for (r, hyp) in hyps.iter_mut().enumerate() {
            hyp.reset(roots.get(r).or(roots.first()).copied().unwrap_or(0));
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
        Ok(())
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
    pub(super) fn apply_rules(&self, logits: &mut [f32], sampled: &[i64], options: &DecodeOptions) {
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
pub(super) struct AlignmentTree {
    rows: Vec<f32>,
    parents: Vec<u32>,
    width: usize,
}

impl AlignmentTree {
    pub(super) fn reset(&mut self, width: usize) {
        self.rows.clear();
        self.parents.clear();
        self.width = width;
    }

    pub(super) fn push(&mut self, parent: Option<u32>, row: &[f32]) -> u32 {
        let id = self.parents.len() as u32;
        // The root is its own parent.
        self.parents.push(parent.unwrap_or(id));
        if self.width > 0 {
            self.rows.extend_from_slice(row);
        }
        id
    }

    /// [positions][head][audio] from the root to `node`.
    pub(super) fn path(&self, node: u32, heads: usize) -> Vec<Vec<Vec<f32>>> {
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
pub(super) struct Scratch {
    beams: Vec<Hyp>,
    next: Vec<Hyp>,
    finished: Vec<Hyp>,
    candidates: Vec<Candidate>,
    top: Vec<(f32, usize)>,
    parents: Vec<usize>,
    feed: Vec<i64>,
    tree: AlignmentTree,
}
