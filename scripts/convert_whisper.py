#!/usr/bin/env python3
"""Convert a Whisper model from CTranslate2 (faster-whisper) or Hugging Face (transformers
safetensors) format to ONNX.

The encoder produces the cross-attention K/V of every decoder layer; the
decoder reads its self-attention cache from per-layer inputs and returns only
the new tokens' K/V, plus ``cross_qk`` holding the cross-attention weights,
used for DTW word timestamps (layout 2; layout 1 was sherpa-onnx's, whose
decoder copied the whole cache and the 1500-frame cross K/V at every step).

No PyTorch: the graphs are written directly with ``onnx.helper`` from the
weights stored in CTranslate2's ``model.bin``, or in a transformers checkpoint
(config.json + model.safetensors or shards; whisper_hf.py renames its tensors into
CTranslate2's names). Any size: 80 or 128 mel bins, vocabularies of 51864-51866 tokens
(special-token ids are looked up by name, so large-v3's extra <|yue|> shifts them),
any number of encoder and decoder layers (turbo: 4, distil-large-v3: 2). A graph whose
weights pass 2 GB is saved with its weights in an ONNX external data file
(`<graph>.onnx.data`, listed in parameters.json "files" as `<role>_data`).

Usage:
    convert_whisper.py (--ct2-dir DIR | --hf-dir DIR) --out DIR --name NAME \
        [--mel-filters mel_filters.npz] [--openai-whisper-sdist SDIST] [--official KEY] \
        [--no-int8] [--force]

Alignment heads (word timestamps): the source's own (CT2 config.json, HF
generation_config.json) when they fit the decoder; else openai-whisper's table for
--official KEY (or the HF config's `_name_or_path` openai/whisper-KEY), read from the
openai-whisper sdist; else the last half of the decoder layers, all heads.
parameters.json "alignment_heads_source" says which.

Files written into --out (see parameters.json "files"):
    encoder.onnx, decoder.onnx                fp32 models
    encoder.int8.onnx, decoder.int8.onnx      dynamic int8 (unless --no-int8)
    tokens.txt        "<base64 of token bytes> <id>" per line (all ids whose
                      byte string is non-empty, specials included as text)
    tokenizer.json    copied from the CT2 directory when present
    mel_filters.bin   float32 little-endian [n_mels, 201]
    parameters.json   dimensions, special tokens, suppression lists, files

Decoder I/O contract, layout 2 (N = rows, B = 1 or N, T = new tokens,
L = n_text_layer, H = n_text_head, dh = n_text_state / H, C = n_text_ctx (448),
A = n_audio_ctx):
    inputs : tokens int64 [N,T]; offset int64 [1] (tokens already in the cache);
             positions int64 [P] (which of the T positions get logits and cross_qk);
             cache_k_{l} / cache_v_{l} float32 [N,H,S,dh] for l < L, any S with
             offset <= S <= C (slots [0, offset) are read, the rest is masked and
             may hold anything finite: the caller grows S with the text);
             cross_k_{l} / cross_v_{l} float32 [B,H,A,dh] (B = 1 is broadcast over
             the N rows: a beam search shares one window's K/V)
    outputs: logits float32 [N,P,n_vocab]; new_k / new_v float32 [L,N,H,T,dh]
             (the caller writes them into cache slots [offset, offset+T));
             cross_qk float32 [L,N,H,P,A] (softmax'd cross-attention weights)
    encoder: mel float32 [N, n_mels, 3000] -> cross_k_{l} / cross_v_{l} [N,H,A,dh].

Runtime notes:
    prompt (no timestamps): multilingual: [sot, language_tokens[lang], transcribe,
    no_timestamps]; English-only (multilingual=false, language_tokens empty):
    [sot, no_timestamps]. Greedy as faster-whisper: logits[suppress_tokens] = -inf
    at every step, plus logits[begin_suppress] = -inf at the first sampled step;
    stop at eot. Text = concatenation of the tokens.txt bytes of ids < eot,
    decoded as UTF-8. Log-mel front end: see verify_whisper_tokens.py.
    int8: MatMul weights per-channel int8 (dynamic quantization of activations);
    the encoder's cross-attention K/V projection stays fp32 (quantizing it changed
    whisper-base's tokens); the int8 decoder computes logits with an int8 MatMul
    on a transposed embedding copy and reads token embeddings from an int8 Gather.
    The fp32 decoder shares the embedding between Gather and Gemm(transB=1).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import struct
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # whisper_hf.py
sys.dont_write_bytecode = True  # no scripts/__pycache__ in the work tree
import whisper_hf  # noqa: E402
from whisper_checks import compare_int8, ref_check  # noqa: E402

FORMAT_VERSION = 5  # bump when the produced graphs/files change
OPSET = 17
DECODER_LAYOUT = 2  # the decoder I/O contract below; the Rust loader checks it

# CTranslate2 DataType enum (include/ctranslate2/types.h)
CT2_DTYPES = {
    0: np.float32,
    1: np.int8,
    2: np.int16,
    3: np.int32,
    4: np.float16,
    5: "bfloat16",
}


def log(msg: str) -> None:
    print(msg, flush=True)


class Step:
    """Context manager printing the time a step took."""

    def __init__(self, what: str):
        self.what = what

    def __enter__(self):
        log(f"[..] {self.what}")
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if exc[0] is None:
            log(f"[ok] {self.what} ({time.perf_counter() - self.t0:.1f} s)")
        return False


# --------------------------------------------------------------------------
# CTranslate2 model.bin reader
# --------------------------------------------------------------------------


def read_ct2_model(path: Path) -> tuple[str, int, dict[str, np.ndarray]]:
    """Parse a CTranslate2 model.bin (binary versions 5 and 6).

    Layout (little endian):
      u32 binary_version
      str spec_name          (str = u16 length incl. NUL, bytes, NUL)
      u32 spec_revision
      u32 n_variables
      n_variables x { str name; u8 rank; u32 dims[rank]; u8 dtype; u32 nbytes; bytes }
      u32 n_aliases
      n_aliases x { str alias; str target }
    """
    data = path.read_bytes()
    pos = 0

    def u(fmt: str):
        nonlocal pos
        v = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return v[0]

    def s() -> str:
        nonlocal pos
        n = u("H")
        out = data[pos : pos + n - 1].decode("utf-8")
        pos += n
        return out

    version = u("I")
    if version not in (5, 6):
        raise SystemExit(f"unsupported CTranslate2 binary version {version} in {path}")
    spec = s()
    revision = u("I")
    nvars = u("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(nvars):
        name = s()
        rank = u("B")
        shape = [u("I") for _ in range(rank)]
        dtype_id = u("B")
        nbytes = u("I")
        raw = data[pos : pos + nbytes]
        pos += nbytes
        dt = CT2_DTYPES.get(dtype_id)
        if dt is None:
            raise SystemExit(f"unsupported dtype id {dtype_id} for {name}")
        if dt == "bfloat16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(dt).newbyteorder("<"))
        variables[name] = arr.reshape(shape)
    naliases = u("I")
    for _ in range(naliases):
        alias = s()
        target = s()
        variables[alias] = variables[target]
    if pos != len(data):
        raise SystemExit(f"trailing data in {path}: parsed {pos} of {len(data)} bytes")
    return spec, revision, variables


class Weights:
    """fp32 access to CT2 variables, dequantizing int8 weights if needed."""

    def __init__(self, variables: dict[str, np.ndarray]):
        self.v = variables

    def __contains__(self, name: str) -> bool:
        return name in self.v

    def scalar(self, name: str) -> int:
        return int(np.asarray(self.v[name]).reshape(-1)[0])

    def get(self, name: str) -> np.ndarray:
        a = self.v[name]
        if a.dtype in (np.int8, np.int16) and name + "_scale" in self.v:
            scale = self.v[name + "_scale"].astype(np.float32)
            a = a.astype(np.float32) / scale.reshape(-1, *([1] * (a.ndim - 1)))
        return np.ascontiguousarray(a.astype(np.float32))

    def count_layers(self, prefix: str) -> int:
        n = 0
        while any(k.startswith(f"{prefix}/layer_{n}/") for k in self.v):
            n += 1
        return n


# --------------------------------------------------------------------------
# Tiny ONNX graph builder
# --------------------------------------------------------------------------


class GraphBuilder:
    def __init__(self):
        self.nodes = []
        self.inits = {}
        self.counter = 0
        self.weight_matmuls: list[str] = []  # MatMul nodes with a constant B

    def _name(self, base: str) -> str:
        self.counter += 1
        return f"{base}_{self.counter}"

    def const(self, name: str, arr) -> str:
        from onnx import numpy_helper

        if name in self.inits:
            raise ValueError(f"duplicate initializer {name}")
        self.inits[name] = numpy_helper.from_array(np.array(arr, order="C"), name)  # keeps 0-d scalars 0-d
        return name

    def c_i64(self, values, name=None) -> str:
        return self.const(name or self._name("c_i64"), np.array(values, dtype=np.int64))

    def c_f32(self, values, name=None) -> str:
        return self.const(name or self._name("c_f32"), np.array(values, dtype=np.float32))

    def op(self, op_type: str, inputs, n_out: int = 1, name: str | None = None, outputs=None, **attrs):
        from onnx import helper

        node_name = name or self._name(op_type)
        if outputs is None:
            outputs = [f"{node_name}_o{i}" for i in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), list(outputs), name=node_name, **attrs))
        return outputs[0] if len(outputs) == 1 else outputs

    # composite helpers ---------------------------------------------------
    def linear(self, x: str, w: np.ndarray, b: np.ndarray | None, prefix: str) -> str:
        """y = x @ w.T + b  with w in CT2 layout [out, in]."""
        wt = self.const(prefix + ".weight_t", np.ascontiguousarray(w.T.astype(np.float32)))
        mm_name = self._name(prefix + ".matmul")
        y = self.op("MatMul", [x, wt], name=mm_name)
        self.weight_matmuls.append(mm_name)
        if b is not None:
            y = self.op("Add", [y, self.const(prefix + ".bias", b.astype(np.float32))])
        return y

    def layer_norm(self, x: str, gamma: np.ndarray, beta: np.ndarray, prefix: str) -> str:
        g = self.const(prefix + ".gamma", gamma)
        b = self.const(prefix + ".beta", beta)
        return self.op("LayerNormalization", [x, g, b], axis=-1, epsilon=1e-5)

    def gelu(self, x: str) -> str:
        # exact (erf) GELU; ONNX Runtime fuses this pattern into a Gelu kernel
        if not hasattr(self, "_gelu_consts"):
            self._gelu_consts = (self.c_f32(1.4142135381698608, "gelu.sqrt2"), self.c_f32(1.0, "gelu.one"), self.c_f32(0.5, "gelu.half"))
        sqrt2, one, half = self._gelu_consts
        e = self.op("Erf", [self.op("Div", [x, sqrt2])])
        return self.op("Mul", [self.op("Mul", [x, self.op("Add", [e, one])]), half])

    def model(self, inputs, outputs, graph_name: str, doc: str = ""):
        from onnx import helper

        graph = helper.make_graph(self.nodes, graph_name, inputs, outputs, initializer=list(self.inits.values()))
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="opentranscribe-convert_whisper")
        m.ir_version = 8
        m.doc_string = doc
        return m


# --------------------------------------------------------------------------
# Whisper graphs
# --------------------------------------------------------------------------


def attn_heads(g: GraphBuilder, x: str, n_head: int, d_head: int) -> str:
    """[N, T, D] -> [N, H, T, dh]"""
    r = g.op("Reshape", [x, g.c_i64([0, 0, n_head, d_head])])
    return g.op("Transpose", [r], perm=[0, 2, 1, 3])


def attn_merge(g: GraphBuilder, x: str, d_model: int) -> str:
    """[N, H, T, dh] -> [N, T, D]"""
    t = g.op("Transpose", [x], perm=[0, 2, 1, 3])
    return g.op("Reshape", [t, g.c_i64([0, 0, d_model])])


def qkT(g: GraphBuilder, q: str, k: str) -> str:
    """q [N,H,T,dh] @ k[N,H,S,dh]^T; the last-two-dims Transpose is fused into
    MatMul (FusedMatMul transB) by ONNX Runtime's optimizer."""
    return g.op("MatMul", [q, g.op("Transpose", [k], perm=[0, 1, 3, 2])])


def split_qkv_weights(w: np.ndarray, b: np.ndarray, d: int, scale: float):
    """CT2 fused self-attention projection [3D, D] -> q scaled by 1/sqrt(dh)."""
    w = w.copy()
    b = b.copy()
    w[:d] *= scale
    b[:d] *= scale
    return w, b


def build_encoder(W: Weights, dims: dict):
    from onnx import TensorProto, helper

    g = GraphBuilder()
    D, H, L = dims["n_audio_state"], dims["n_audio_head"], dims["n_audio_layer"]
    dh = D // H
    scale = dh ** -0.5
    n_mels = dims["n_mels"]
    TL, TD = dims["n_text_layer"], dims["n_text_state"]

    x = g.op("Conv", ["mel", g.const("conv1.weight", W.get("encoder/conv1/weight")), g.const("conv1.bias", W.get("encoder/conv1/bias"))],
             kernel_shape=[3], pads=[1, 1], strides=[1])
    x = g.gelu(x)
    x = g.op("Conv", [x, g.const("conv2.weight", W.get("encoder/conv2/weight")), g.const("conv2.bias", W.get("encoder/conv2/bias"))],
             kernel_shape=[3], pads=[1, 1], strides=[2])
    x = g.gelu(x)
    x = g.op("Transpose", [x], perm=[0, 2, 1])  # [N, 1500, D]
    x = g.op("Add", [x, g.const("encoder.positional_embedding", W.get("encoder/position_encodings/encodings"))])

    for i in range(L):
        p = f"encoder/layer_{i}"
        n = f"enc{i}"
        h = g.layer_norm(x, W.get(f"{p}/self_attention/layer_norm/gamma"), W.get(f"{p}/self_attention/layer_norm/beta"), f"{n}.attn_ln")
        wqkv, bqkv = split_qkv_weights(W.get(f"{p}/self_attention/linear_0/weight"), W.get(f"{p}/self_attention/linear_0/bias"), D, scale)
        qkv = g.linear(h, wqkv, bqkv, f"{n}.attn.qkv")
        q, k, v = g.op("Split", [qkv, g.c_i64([D, D, D])], n_out=3, axis=-1)
        q, k, v = (attn_heads(g, t, H, dh) for t in (q, k, v))
        w = g.op("Softmax", [qkT(g, q, k)], axis=-1)
        o = attn_merge(g, g.op("MatMul", [w, v]), D)
        o = g.linear(o, W.get(f"{p}/self_attention/linear_1/weight"), W.get(f"{p}/self_attention/linear_1/bias"), f"{n}.attn.out")
        x = g.op("Add", [x, o])
        h = g.layer_norm(x, W.get(f"{p}/ffn/layer_norm/gamma"), W.get(f"{p}/ffn/layer_norm/beta"), f"{n}.mlp_ln")
        h = g.gelu(g.linear(h, W.get(f"{p}/ffn/linear_0/weight"), W.get(f"{p}/ffn/linear_0/bias"), f"{n}.mlp.fc1"))
        h = g.linear(h, W.get(f"{p}/ffn/linear_1/weight"), W.get(f"{p}/ffn/linear_1/bias"), f"{n}.mlp.fc2")
        x = g.op("Add", [x, h])
    x = g.layer_norm(x, W.get("encoder/layer_norm/gamma"), W.get("encoder/layer_norm/beta"), "encoder.ln_post")

    # cross-attention K/V of every decoder layer with a single MatMul
    ws, bs = [], []
    for i in range(TL):
        ws.append(W.get(f"decoder/layer_{i}/attention/linear_1/weight"))  # [2D, D] (K then V)
        bs.append(W.get(f"decoder/layer_{i}/attention/linear_1/bias"))
    kv = g.linear(x, np.concatenate(ws, axis=0), np.concatenate(bs, axis=0), "cross_kv")  # [N, A, TL*2*TD]
    TH = dims["n_text_head"]
    tdh = TD // TH
    # [N, A, TL*2*TD] -> [TL*2, N, TH, A, dh]: per layer K then V, split by head, so the
    # decoder attends without a per-step copy or transpose of these 1500-frame tensors.
    kv = g.op("Reshape", [kv, g.c_i64([0, 0, 2 * TL, TH, tdh])])
    kv = g.op("Transpose", [kv], perm=[2, 0, 3, 1, 4])
    names = [f"cross_{kind}_{i}" for i in range(TL) for kind in ("k", "v")]
    parts = g.op("Split", [kv], n_out=2 * TL, axis=0)
    ax0 = g.c_i64([0])
    for part, name in zip(parts, names):
        g.op("Squeeze", [part, ax0], outputs=[name])

    A = dims["n_audio_ctx"]
    inputs = [helper.make_tensor_value_info("mel", TensorProto.FLOAT, ["N", n_mels, 2 * A])]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", TH, A, tdh]) for name in names]
    return g.model(inputs, outputs, "whisper_encoder", "Whisper encoder (opentranscribe layout 2)"), g.weight_matmuls


def build_decoder(W: Weights, dims: dict, logits_matmul: bool):
    """logits_matmul=False: logits via Gemm(transB=1) sharing the token embedding
    (smaller file). True: MatMul with a pre-transposed copy (quantizable).

    Layout 2 (see the module doc): per-layer cache and cross-attention inputs in
    [rows, heads, positions, dh], so no step copies or transposes them; the step
    returns only the new tokens' K/V, which the caller writes into its cache."""
    from onnx import TensorProto, helper

    g = GraphBuilder()
    D, H, L = dims["n_text_state"], dims["n_text_head"], dims["n_text_layer"]
    C, A, V = dims["n_text_ctx"], dims["n_audio_ctx"], dims["n_vocab"]
    dh = D // H
    scale = dh ** -0.5
    neg = -1e9  # finite, so a masked slot never turns a softmax into NaN

    emb = W.get("decoder/embeddings/weight")  # [V, D]
    E = g.const("decoder.token_embedding", emb)
    PE = g.const("decoder.positional_embedding", W.get("decoder/position_encodings/encodings"))

    tok_shape = g.op("Shape", ["tokens"])
    T_1 = g.op("Slice", [tok_shape, g.c_i64([1]), g.c_i64([2])])  # [1]
    end_1 = g.op("Add", ["offset", T_1])  # [1]
    off_s = g.op("Squeeze", ["offset", g.c_i64([0])])
    T_s = g.op("Squeeze", [T_1, g.c_i64([0])])
    zero_1 = g.c_i64([0])
    ax1 = g.c_i64([1])
    one_s = g.c_i64(1)
    zero_s = g.c_i64(0)

    x = g.op("Gather", [E, "tokens"], axis=0)  # [N, T, D]
    pos = g.op("Slice", [PE, "offset", end_1, zero_1])  # [T, D]
    x = g.op("Add", [x, pos])

    # cache slots [0, offset) hold earlier tokens; the rest (up to the cache's length S,
    # which the caller grows as the text does) is masked
    S_s = g.op("Squeeze", [g.op("Slice", [g.op("Shape", ["cache_k_0"]), g.c_i64([2]), g.c_i64([3])]), zero_1])
    S_1 = g.op("Unsqueeze", [S_s, zero_1])
    cross_b = g.op("Slice", [g.op("Shape", ["cross_k_0"]), zero_1, ax1])  # [1]: B
    slots = g.op("Range", [zero_s, S_s, one_s])  # [S]
    past_mask = g.op("Where", [g.op("Less", [slots, off_s]), g.c_f32(0.0), g.c_f32(neg)])  # [C]
    # causal mask among the T new tokens
    tpos = g.op("Range", [zero_s, T_s, one_s])
    future = g.op("Greater", [g.op("Unsqueeze", [tpos, zero_1]), g.op("Unsqueeze", [tpos, ax1])])  # [T,T]
    new_mask = g.op("Where", [future, g.c_f32(neg), g.c_f32(0.0)])
    split_sizes = g.op("Concat", [S_1, T_1], axis=0)

    k_new, v_new, qks = [], [], []
    for i in range(L):
        p = f"decoder/layer_{i}"
        n = f"dec{i}"
        # ---- self attention: earlier tokens from the cache inputs, new ones from this call
        h = g.layer_norm(x, W.get(f"{p}/self_attention/layer_norm/gamma"), W.get(f"{p}/self_attention/layer_norm/beta"), f"{n}.attn_ln")
        wqkv, bqkv = split_qkv_weights(W.get(f"{p}/self_attention/linear_0/weight"), W.get(f"{p}/self_attention/linear_0/bias"), D, scale)
        qkv = g.linear(h, wqkv, bqkv, f"{n}.attn.qkv")
        q, k, v = g.op("Split", [qkv, g.c_i64([D, D, D])], n_out=3, axis=-1)
        q, k, v = (attn_heads(g, t, H, dh) for t in (q, k, v))  # [N,H,T,dh]
        k_new.append(g.op("Unsqueeze", [k, zero_1]))  # [1,N,H,T,dh]
        v_new.append(g.op("Unsqueeze", [v, zero_1]))
        s_past = g.op("Add", [qkT(g, q, f"cache_k_{i}"), past_mask])  # [N,H,T,S]
        s_new = g.op("Add", [qkT(g, q, k), new_mask])  # [N,H,T,T]
        w = g.op("Softmax", [g.op("Concat", [s_past, s_new], axis=-1)], axis=-1)
        w_past, w_new = g.op("Split", [w, split_sizes], n_out=2, axis=-1)
        o = g.op("Add", [g.op("MatMul", [w_past, f"cache_v_{i}"]), g.op("MatMul", [w_new, v])])
        o = g.linear(attn_merge(g, o, D), W.get(f"{p}/self_attention/linear_1/weight"), W.get(f"{p}/self_attention/linear_1/bias"), f"{n}.attn.out")
        x = g.op("Add", [x, o])
        # ---- cross attention (K/V rows broadcast when one window feeds several rows)
        h = g.layer_norm(x, W.get(f"{p}/attention/layer_norm/gamma"), W.get(f"{p}/attention/layer_norm/beta"), f"{n}.cross_ln")
        q = g.linear(h, W.get(f"{p}/attention/linear_0/weight") * scale, W.get(f"{p}/attention/linear_0/bias") * scale, f"{n}.cross.q")
        # Rows that share a window (B = 1: the beams) are stacked along the query axis,
        # so each head's 1500-frame K and V are read once per step, not once per row:
        # [N,T,D] -> [B, N/B, T, H, dh] -> [B, H, (N/B)*T, dh]
        q = g.op("Reshape", [q, g.op("Concat", [cross_b, g.c_i64([-1]), T_1, g.c_i64([H, dh])], axis=0)])
        q = g.op("Reshape", [g.op("Transpose", [q], perm=[0, 3, 1, 2, 4]), g.op("Concat", [cross_b, g.c_i64([H, -1, dh])], axis=0)])
        w = g.op("Softmax", [qkT(g, q, f"cross_k_{i}")], axis=-1)  # [B,H,(N/B)*T,A]
        o = g.op("MatMul", [w, f"cross_v_{i}"])  # [B,H,(N/B)*T,dh]
        # back to row-major: [B,H,N/B,T,x] -> [N,H,T,x]
        w = g.op("Reshape", [g.op("Transpose", [g.op("Reshape", [w, g.op("Concat", [cross_b, g.c_i64([H, -1]), T_1, g.c_i64([A])], axis=0)])], perm=[0, 2, 1, 3, 4]),
                             g.op("Concat", [g.c_i64([-1, H]), T_1, g.c_i64([A])], axis=0)])
        qks.append(g.op("Unsqueeze", [g.op("Gather", [w, "positions"], axis=2), zero_1]))  # [1,N,H,P,A]
        o = g.op("Reshape", [g.op("Transpose", [g.op("Reshape", [o, g.op("Concat", [cross_b, g.c_i64([H, -1]), T_1, g.c_i64([dh])], axis=0)])], perm=[0, 2, 3, 1, 4]),
                             g.op("Concat", [g.c_i64([-1]), T_1, g.c_i64([D])], axis=0)])  # [N,T,D]
        o = g.linear(o, W.get(f"{p}/attention/linear_2/weight"), W.get(f"{p}/attention/linear_2/bias"), f"{n}.cross.out")
        x = g.op("Add", [x, o])
        # ---- MLP
        h = g.layer_norm(x, W.get(f"{p}/ffn/layer_norm/gamma"), W.get(f"{p}/ffn/layer_norm/beta"), f"{n}.mlp_ln")
        h = g.gelu(g.linear(h, W.get(f"{p}/ffn/linear_0/weight"), W.get(f"{p}/ffn/linear_0/bias"), f"{n}.mlp.fc1"))
        h = g.linear(h, W.get(f"{p}/ffn/linear_1/weight"), W.get(f"{p}/ffn/linear_1/bias"), f"{n}.mlp.fc2")
        x = g.op("Add", [x, h])

    # only the asked-for positions go on to the vocabulary projection (a prompt step needs
    # two of its up to 224 positions: the no-speech probe and the last one)
    x = g.op("Gather", [x, "positions"], axis=1)  # [N,P,D]
    x = g.layer_norm(x, W.get("decoder/layer_norm/gamma"), W.get("decoder/layer_norm/beta"), "decoder.ln")
    if logits_matmul:
        et = g.const("decoder.token_embedding_t", np.ascontiguousarray(emb.T))
        mm = g._name("logits.matmul")
        g.op("MatMul", [x, et], name=mm, outputs=["logits"])
        g.weight_matmuls.append(mm)
    else:
        x2 = g.op("Reshape", [x, g.c_i64([-1, D])])
        lg = g.op("Gemm", [x2, E], transB=1)
        out_shape = g.op("Concat", [g.op("Slice", [tok_shape, zero_1, ax1]), g.op("Shape", ["positions"]), g.c_i64([V])], axis=0)
        g.op("Reshape", [lg, out_shape], outputs=["logits"])
    g.op("Concat", k_new, axis=0, outputs=["new_k"])
    g.op("Concat", v_new, axis=0, outputs=["new_v"])
    g.op("Concat", qks, axis=0, outputs=["cross_qk"])

    F, I64 = TensorProto.FLOAT, TensorProto.INT64
    inputs = [helper.make_tensor_value_info("tokens", I64, ["N", "n_tokens"]), helper.make_tensor_value_info("offset", I64, [1]),
              helper.make_tensor_value_info("positions", I64, ["P"])]
    for i in range(L):
        inputs += [helper.make_tensor_value_info(f"cache_{kind}_{i}", F, ["N", H, "S", dh]) for kind in ("k", "v")]
    for i in range(L):
        inputs += [helper.make_tensor_value_info(f"cross_{kind}_{i}", F, ["B", H, A, dh]) for kind in ("k", "v")]
    outputs = [
        helper.make_tensor_value_info("logits", F, ["N", "P", V]),
        helper.make_tensor_value_info("new_k", F, [L, "N", H, "n_tokens", dh]),
        helper.make_tensor_value_info("new_v", F, [L, "N", H, "n_tokens", dh]),
        helper.make_tensor_value_info("cross_qk", F, [L, "N", H, "P", A]),
    ]
    return g.model(inputs, outputs, "whisper_decoder", "Whisper decoder (opentranscribe layout 2, with cross_qk)"), g.weight_matmuls


# --------------------------------------------------------------------------
# Tokenizer / metadata
# --------------------------------------------------------------------------


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2 byte-level BPE byte <-> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def load_vocab(ct2_dir: Path) -> list[str]:
    for name in ("vocabulary.json", "vocabulary.txt"):
        p = ct2_dir / name
        if p.exists():
            if name.endswith(".json"):
                return json.loads(p.read_text(encoding="utf-8"))
            lines = p.read_text(encoding="utf-8").split("\n")
            if lines and lines[-1] == "":
                lines.pop()
            return lines
    tok = ct2_dir / "tokenizer.json"
    if tok.exists():
        t = json.loads(tok.read_text(encoding="utf-8"))
        inv = {i: s for s, i in t["model"]["vocab"].items()}
        for a in t.get("added_tokens", []):
            inv[a["id"]] = a["content"]
        return [inv.get(i, "") for i in range(max(inv) + 1)]
    vocab = whisper_hf.load_vocab_files(ct2_dir)
    if vocab is not None:
        return vocab
    raise SystemExit(f"no vocabulary.json/vocabulary.txt/tokenizer.json/vocab.json in {ct2_dir}")


SPECIAL_RE = re.compile(r"^<\|[^|]*\|>$")


def with_timestamp_tokens(vocab: list[str], n_vocab: int) -> list[str]:
    """Fills the ids after <|notimestamps|> with Whisper's timestamp tokens <|0.00|> ...
    <|30.00|> where the vocabulary leaves them out (transformers' tokenizer.json often does;
    CTranslate2's vocabulary lists them)."""
    if "<|notimestamps|>" not in vocab:
        return vocab
    begin = vocab.index("<|notimestamps|>") + 1
    vocab = vocab + [""] * max(0, n_vocab - len(vocab))
    for i in range(begin, n_vocab):
        if not vocab[i]:
            vocab[i] = f"<|{(i - begin) * 0.02:.2f}|>"
    return vocab


def token_bytes(tok: str, b2u_inv: dict[str, int]) -> bytes:
    if SPECIAL_RE.match(tok):
        return tok.encode("utf-8")
    try:
        return bytes(b2u_inv[c] for c in tok)
    except KeyError:
        return tok.encode("utf-8")


def write_tokens_txt(vocab: list[str], n_vocab: int, path: Path) -> None:
    import base64

    inv = {v: k for k, v in bytes_to_unicode().items()}
    with open(path, "w", encoding="ascii", newline="\n") as f:
        for i in range(min(len(vocab), n_vocab)):
            b = token_bytes(vocab[i], inv)
            if b:
                f.write(f"{base64.b64encode(b).decode('ascii')} {i}\n")


def build_parameters(name: str, dims: dict, vocab: list[str], config: dict) -> dict:
    ids = {t: i for i, t in enumerate(vocab) if SPECIAL_RE.match(t)}

    def need(*names):
        for n in names:
            if n in ids:
                return ids[n]
        raise SystemExit(f"special token {names} not found in vocabulary")

    n_vocab = dims["n_vocab"]
    multilingual = n_vocab >= 51865
    sot = need("<|startoftranscript|>")
    translate = need("<|translate|>")
    no_ts = need("<|notimestamps|>")
    specials = {
        "eot": need("<|endoftext|>"),
        "sot": sot,
        "translate": translate,
        "transcribe": need("<|transcribe|>"),
        "sot_lm": need("<|startoflm|>"),
        "sot_prev": need("<|startofprev|>"),
        "no_speech": need("<|nospeech|>", "<|nocaptions|>"),
        "no_timestamps": no_ts,
        "timestamp_begin": ids.get("<|0.00|>", no_ts + 1),
    }
    langs = {}
    if multilingual:
        lang_ids = config.get("lang_ids") or [i for i in range(sot + 1, translate)]
        for i in lang_ids:
            t = vocab[i]
            if SPECIAL_RE.match(t):
                langs[t[2:-2]] = i
    specials["language_tokens"] = langs
    return {
        "name": name,
        **dims,
        "multilingual": multilingual,
        "sample_rate": 16000,
        "n_fft": 400,
        "hop_length": 160,
        "chunk_length": 30,
        "n_frames": 2 * dims["n_audio_ctx"],
        "decoder_layout": DECODER_LAYOUT,
        "alignment_heads": [list(map(int, h)) for h in config.get("alignment_heads", [])],
        "special_tokens": specials,
        "suppress_tokens": list(map(int, config.get("suppress_ids", []))),
        "begin_suppress": list(map(int, config.get("suppress_ids_begin", []))),
    }


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------


def source_stamp(files: list[Path], args) -> dict:
    h = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    key = "model_bin_sha256" if args.ct2_dir else "checkpoint_sha256"
    return {"format_version": FORMAT_VERSION, key: h.hexdigest(), "int8": not args.no_int8, "name": args.name}


def is_complete(out: Path, stamp: dict) -> bool:
    p = out / "parameters.json"
    if not p.exists():
        return False
    try:
        params = json.loads(p.read_text())
    except ValueError:
        return False
    if params.get("converter") != stamp:
        return False
    return all((out / f).is_file() and (out / f).stat().st_size > 0 for f in params.get("files", {}).values())


def find_mel_filters(arg: str | None, sdist: Path | None):
    """openai-whisper's mel_filters.npz: --mel-filters, a copy beside this script or in
    ~/.cache/opentranscribe/assets, else read straight out of the openai-whisper sdist."""
    cands = [Path(arg)] if arg else []
    cands += [Path(__file__).resolve().parent / "mel_filters.npz", Path.home() / ".cache/opentranscribe/assets/mel_filters.npz"]
    for c in cands:
        if c.is_file():
            return c
    if sdist is not None and sdist.is_file():
        import io
        import tarfile

        with tarfile.open(sdist) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith("/whisper/assets/mel_filters.npz")), None)
            if member is not None:
                return io.BytesIO(tar.extractfile(member).read())
    raise SystemExit("mel_filters.npz not found; pass --mel-filters or --openai-whisper-sdist (openai-whisper sdist: whisper/assets/mel_filters.npz)")


def find_openai_sdist(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    cached = sorted((Path.home() / ".cache/opentranscribe/downloads").glob("openai-whisper-*/openai_whisper-*.tar.gz"))
    return cached[-1] if cached else None


def read_ct2_source(ct2: Path) -> tuple[dict, dict, dict]:
    """(variables, dims, config) of a CTranslate2 directory."""
    spec, rev, variables = read_ct2_model(ct2 / "model.bin")
    if spec != "WhisperSpec":
        raise SystemExit(f"not a Whisper model: spec {spec}")
    W = Weights(variables)
    emb = variables["decoder/embeddings/weight"]
    conv1 = variables["encoder/conv1/weight"]
    dims = {
        "n_mels": int(conv1.shape[1]),
        "n_audio_ctx": int(variables["encoder/position_encodings/encodings"].shape[0]),
        "n_audio_state": int(conv1.shape[0]),
        "n_audio_head": W.scalar("encoder/num_heads"),
        "n_audio_layer": W.count_layers("encoder"),
        "n_text_ctx": int(variables["decoder/position_encodings/encodings"].shape[0]),
        "n_text_state": int(emb.shape[1]),
        "n_text_head": W.scalar("decoder/num_heads"),
        "n_text_layer": W.count_layers("decoder"),
        "n_vocab": int(emb.shape[0]),
    }
    log(f"     spec {spec} rev {rev}, weights dtype {emb.dtype}")
    if "decoder/projection/weight" in variables and variables["decoder/projection/weight"] is not variables["decoder/embeddings/weight"]:
        if not np.array_equal(variables["decoder/projection/weight"], emb):
            raise SystemExit("output projection is not tied to the token embedding (unsupported)")
    config_path = ct2 / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    return variables, dims, config


# protobuf cannot serialise a message over 2 GiB; stay clear of it
EXTERNAL_DATA_ABOVE = 1_800_000_000


def save_graph(model, path: Path) -> str | None:
    """Saves an ONNX graph, its weights in `<name>.data` beside it when they pass the protobuf
    limit (ONNX Runtime finds the file relative to the graph). Returns the data file's name."""
    import onnx

    size = sum(len(t.raw_data) for t in model.graph.initializer)
    if size < EXTERNAL_DATA_ABOVE:
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
        return None
    data = path.name + ".data"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data, size_threshold=1024)
    onnx.checker.check_model(str(path))  # by path: the checker reads big models from disk
    log(f"     {size / 1e9:.2f} GB of weights: external data file {data}")
    return data


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--ct2-dir", type=Path, help="CTranslate2 model dir (model.bin, config.json, vocabulary/tokenizer)")
    src.add_argument("--hf-dir", type=Path, help="transformers checkpoint dir (config.json, model.safetensors or shards, tokenizer.json)")
    ap.add_argument("--out", required=True, type=Path, help="output directory (created/replaced atomically)")
    ap.add_argument("--name", required=True, help="model name recorded in parameters.json")
    ap.add_argument("--mel-filters", help="openai-whisper mel_filters.npz")
    ap.add_argument("--openai-whisper-sdist", help="openai-whisper sdist (.tar.gz) for the official alignment-head table "
                    "(default: the one scripts/fetch-models cached)")
    ap.add_argument("--official", help="openai-whisper model key (tiny, base, large-v3, turbo, ...) for the alignment-head table")
    ap.add_argument("--no-int8", action="store_true", help="skip the int8 quantized models")
    ap.add_argument("--force", action="store_true", help="rebuild even if the output is up to date")
    args = ap.parse_args()

    t_start = time.perf_counter()
    source = args.ct2_dir or args.hf_dir
    out = args.out.resolve()
    if args.ct2_dir:
        if not (source / "model.bin").is_file():
            raise SystemExit(f"{source}/model.bin not found")
        source_files = [source / "model.bin"]
    else:
        if not (source / "config.json").is_file():
            raise SystemExit(f"{source}/config.json not found (not a transformers checkpoint directory?)")
        source_files = whisper_hf.source_files(source)
    sdist = find_openai_sdist(args.openai_whisper_sdist)
    mel_npz = find_mel_filters(args.mel_filters, sdist)

    with Step("hash source model"):
        stamp = source_stamp(source_files, args)
    if not args.force and is_complete(out, stamp):
        log(f"{out}: up to date")
        return 0

    import onnx

    with Step(f"read {source}"):
        if args.ct2_dir:
            variables, dims, config = read_ct2_source(source)
            official = args.official
        else:
            variables, dims, config = whisper_hf.read_hf_model(source)
            official = args.official or whisper_hf.official_key(config.get("name_or_path", ""))
        W = Weights(variables)
        log(f"     dims {dims}")

    heads, heads_source = whisper_hf.choose_alignment_heads(
        config.get("alignment_heads"), dims, official, sdist, log)
    config["alignment_heads"] = heads
    vocab = with_timestamp_tokens(load_vocab(source), dims["n_vocab"])
    if len(vocab) < dims["n_vocab"]:
        log(f"     note: the vocabulary has {len(vocab)} entries, the model {dims['n_vocab']} (unused ids stay without text)")
    params = build_parameters(args.name, dims, vocab, config)
    params["alignment_heads_source"] = heads_source
    dims["_sot"] = params["special_tokens"]["sot"]

    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.partial-*"):  # left by a killed run
        pid = stale.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(stale, ignore_errors=True)
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        files = {}
        with Step("build + save encoder.onnx"):
            enc_model, enc_mm = build_encoder(W, dims)
            data = save_graph(enc_model, tmp / "encoder.onnx")
            files["encoder"] = "encoder.onnx"
            if data:
                files["encoder_data"] = data
            del enc_model
        with Step("build + save decoder.onnx"):
            dec_model, _ = build_decoder(W, dims, logits_matmul=False)
            data = save_graph(dec_model, tmp / "decoder.onnx")
            files["decoder"] = "decoder.onnx"
            if data:
                files["decoder_data"] = data
            del dec_model
        with Step("self-check fp32 models with onnxruntime"):
            ref_check(W, dims, tmp / "encoder.onnx", tmp / "decoder.onnx")

        if not args.no_int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            with Step("quantize encoder.int8.onnx"):
                # Per-channel weights; the cross-attention K/V projection stays fp32:
                # quantizing it changed whisper-base's greedy tokens on real speech,
                # every other encoder MatMul could be quantized without a change.
                quantize_dynamic(str(tmp / "encoder.onnx"), str(tmp / "encoder.int8.onnx"), weight_type=QuantType.QInt8,
                                 op_types_to_quantize=["MatMul"], nodes_to_quantize=[n for n in enc_mm if not n.startswith("cross_kv")],
                                 per_channel=True, extra_options={"MatMulConstBOnly": True},
                                 use_external_data_format="encoder_data" in files)
                files["encoder_int8"] = "encoder.int8.onnx"
            with Step("quantize decoder.int8.onnx"):
                dec_model, dec_mm = build_decoder(W, dims, logits_matmul=True)
                mm_data = save_graph(dec_model, tmp / "decoder.mm.onnx")
                del dec_model
                quantize_dynamic(str(tmp / "decoder.mm.onnx"), str(tmp / "decoder.int8.onnx"), weight_type=QuantType.QInt8,
                                 op_types_to_quantize=["MatMul", "Gather"],
                                 nodes_to_quantize=dec_mm + [n for n in _gather_nodes(tmp / "decoder.mm.onnx")],
                                 per_channel=True, extra_options={"MatMulConstBOnly": True},
                                 use_external_data_format=mm_data is not None)
                (tmp / "decoder.mm.onnx").unlink()
                if mm_data:
                    (tmp / mm_data).unlink()
                files["decoder_int8"] = "decoder.int8.onnx"
            with Step("compare int8 with fp32"):
                compare_int8((tmp / "encoder.onnx", tmp / "decoder.onnx"), (tmp / "encoder.int8.onnx", tmp / "decoder.int8.onnx"), dims)
            for role in ("encoder_int8", "decoder_int8"):
                data = files[role] + ".data"
                if (tmp / data).exists():
                    files[role + "_data"] = data
        listed = set(files.values())
        for f in tmp.iterdir():
            if f.name not in listed:
                raise SystemExit(f"unexpected file {f.name} in the output")

        with Step("tokens.txt / tokenizer.json / mel_filters.bin"):
            write_tokens_txt(vocab, dims["n_vocab"], tmp / "tokens.txt")
            files["tokens"] = "tokens.txt"
            if (source / "tokenizer.json").exists():
                shutil.copyfile(source / "tokenizer.json", tmp / "tokenizer.json")
                files["tokenizer"] = "tokenizer.json"
            mf = np.load(mel_npz)
            key = f"mel_{dims['n_mels']}"
            if key not in mf:
                raise SystemExit(f"the mel filters have no {key}")
            filt = mf[key].astype("<f4")
            if filt.shape != (dims["n_mels"], 201):
                raise SystemExit(f"unexpected mel filter shape {filt.shape}")
            (tmp / "mel_filters.bin").write_bytes(filt.tobytes())
            files["mel_filters"] = "mel_filters.bin"

        dims.pop("_sot", None)
        params["files"] = files
        params["converter"] = stamp
        (tmp / "parameters.json").write_text(json.dumps(params, indent=2) + "\n")

        # atomic-ish replace
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    for f in sorted(out.iterdir()):
        log(f"     {f.name:22s} {f.stat().st_size / 1e6:9.1f} MB")
    log(f"done: {out} ({time.perf_counter() - t_start:.1f} s)")
    return 0


def _gather_nodes(path: Path) -> list[str]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    return [n.name for n in m.graph.node if n.op_type == "Gather" and n.input[0] in inits]


if __name__ == "__main__":
    sys.exit(main())
