//! `DecoderRun`: one window's decoder session state on ONNX Runtime, with the self-attention
//! KV cache bound in place, growing slots and beam reordering.

use ort::session::Session;
use ort::value::Tensor;

use super::{AsrError, Encoded, LayerNames, WhisperParams, inference};
/// One window's decoding of `rows` sequences at once. The window's cross-attention K/V are
/// bound once (shared by every row). The self-attention cache lives here, per layer, in
/// [rows, heads, slots, head dim] tensors that the decoder reads in place: a step returns
/// only the new tokens' K/V, which are written into the slots at `offset`. The slot count
/// grows with the text (doubling, up to the context), so a step reads little more than the
/// tokens so far; beam reordering gathers rows into the spare set of tensors.
pub(super) struct DecoderRun {
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
    pub(super) rows: usize,
    /// Windows whose cross K/V are bound (1: every row reads the same window; `rows`: row r
    /// reads window r).
    windows: usize,
    /// Logits of each row's last position, [rows × n_vocab].
    pub(super) logits: Vec<f32>,
    /// Each row's logits at the position asked for by `step` (the no-speech probe), [rows ×
    /// n_vocab].
    pub(super) probe: Vec<f32>,
    /// Each row's alignment-head attention for its last position, [rows × width].
    alignment: Vec<f32>,
    pub(super) alignment_width: usize,
}

/// Cache slots allocated at first; enough for a prompt of sot, language, task and ~60 tokens.
const INITIAL_SLOTS: usize = 64;

impl DecoderRun {
    pub(super) fn new(
        decoder: &Session,
        params: &WhisperParams,
        names: &LayerNames,
        encoded: &Encoded,
        rows: usize,
    ) -> Result<Self, AsrError> {
        let rows = rows.max(1);
        let windows = encoded.windows.max(1);
        if windows > 1 && windows != rows {
            return Err(inference(
                "a batch of windows needs one decoder row per window",
            ));
        }
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
            windows,
            logits: vec![0.0; rows * params.n_vocab],
            probe: Vec::new(),
            alignment: vec![0.0; rows * alignment_width],
            alignment_width,
        })
    }

    pub(super) fn alignment_row(&self, row: usize) -> &[f32] {
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
    /// row's last logits and alignment-head attention, and each row's logits at `probe`. When
    /// every row holds the same tokens at the start (a beam search's or sampler's prompt), the
    /// decoder runs one row and its cache is copied to the others.
    pub(super) fn step(
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
        // (Rows of different windows never share: their cross-attention differs.)
        let shared = rows > 1
            && self.windows == 1
            && self.offset == 0
            && tokens.chunks_exact(n).all(|row| row == &tokens[..n]);
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
            // The probe is each row's first position asked for.
            self.probe.clear();
            for r in 0..rows {
                let src = (r % call_rows) * p_len * vocab;
                self.probe.extend_from_slice(&logits[src..src + vocab]);
            }
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
    pub(super) fn reorder(&mut self, parents: &[usize]) -> Result<(), AsrError> {
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
