"""Whisper checkpoints in the Hugging Face transformers layout, for convert_whisper.py.

A directory as `openai/whisper-*` and `distil-whisper/*` publish it: config.json,
model.safetensors (or shards listed by model.safetensors.index.json), generation_config.json
(alignment heads, suppression lists, language ids) and tokenizer.json (or vocab.json +
added_tokens.json). The tensors are renamed into CTranslate2's variable names (fused
self-attention q/k/v, fused cross-attention k/v), so that one graph builder serves both
sources. safetensors files are read with a memory map: a 3 GB large-v3 checkpoint is not
loaded whole.

Also here: the alignment heads of the official models, decoded from the table in the
openai-whisper sdist (PyPI, data only: read with ast.literal_eval, never imported), and the
choice of alignment heads for a converted model.
"""

from __future__ import annotations

import ast
import base64
import gzip
import json
import struct
import tarfile
from pathlib import Path

import numpy as np

# safetensors dtype -> numpy dtype (BF16 is widened by hand)
ST_DTYPES = {"F32": "<f4", "F16": "<f2", "BF16": "BF16", "F64": "<f8"}
MAX_HEADER = 100 << 20


class CheckpointError(SystemExit):
    """A checkpoint that cannot be converted; the message says what and where."""


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The tensors of one safetensors file, as read-only views of a memory map."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        n = struct.unpack("<Q", head)[0]
        if n > MAX_HEADER or 8 + n > size:
            raise CheckpointError(f"{path}: not a safetensors file (header length {n} for a {size}-byte file)")
        try:
            header = json.loads(f.read(n))
        except ValueError as e:
            raise CheckpointError(f"{path}: corrupt safetensors header: {e}") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not an object)")
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    base = 8 + n
    out: dict[str, np.ndarray] = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = meta["dtype"], [int(d) for d in meta["shape"]], meta["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: tensor {name}: malformed entry {meta!r}") from None
        np_dtype = ST_DTYPES.get(dtype)
        if np_dtype is None:
            raise CheckpointError(f"{path}: tensor {name} has dtype {dtype}, not a float type this converter reads")
        itemsize = 2 if np_dtype == "BF16" else np.dtype(np_dtype).itemsize
        if not (0 <= start <= end and base + end <= size and end - start == int(np.prod(shape, dtype=np.int64)) * itemsize):
            raise CheckpointError(f"{path}: tensor {name}: offsets {start}..{end} do not fit its shape {shape} or the file (truncated?)")
        raw = mm[base + start : base + end]
        if np_dtype == "BF16":
            arr = (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            arr = raw.view(np_dtype)
        out[name] = arr.reshape(shape)
    return out


def read_checkpoint(hf_dir: Path) -> dict[str, np.ndarray]:
    """All tensors of model.safetensors or of the shards its index lists, prefix `model.` dropped."""
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError) as e:
            raise CheckpointError(f"{index}: no weight_map ({e})") from None
        files = sorted(set(weight_map.values()))
    elif (hf_dir / "model.safetensors").is_file():
        weight_map, files = None, ["model.safetensors"]
    else:
        raise CheckpointError(f"{hf_dir}: neither model.safetensors nor model.safetensors.index.json (PyTorch .bin checkpoints are not read)")
    tensors: dict[str, np.ndarray] = {}
    for f in files:
        if "/" in f or f.startswith("."):
            raise CheckpointError(f"{index}: shard name {f!r} is not a plain file name")
        p = hf_dir / f
        if not p.is_file():
            raise CheckpointError(f"{p}: shard listed in the index is missing")
        tensors.update(read_safetensors(p))
    if weight_map is not None:
        missing = [k for k in weight_map if k not in tensors]
        if missing:
            raise CheckpointError(f"{index}: {len(missing)} tensors listed but not in the shards, e.g. {missing[0]}")
    return {(k[len("model."):] if k.startswith("model.") else k): v for k, v in tensors.items()}


def dims_from_config(config: dict, path: Path) -> dict:
    def need(key):
        if key not in config:
            raise CheckpointError(f"{path}: no `{key}` (not a transformers Whisper config?)")
        return int(config[key])

    if config.get("model_type") not in (None, "whisper"):
        raise CheckpointError(f"{path}: model_type {config.get('model_type')!r}, not whisper")
    if config.get("activation_function", "gelu") != "gelu":
        raise CheckpointError(f"{path}: activation {config['activation_function']!r}; only gelu is converted")
    if config.get("scale_embedding"):
        raise CheckpointError(f"{path}: scale_embedding is set; Whisper checkpoints never scale embeddings")
    d_model = need("d_model")
    return {
        "n_mels": need("num_mel_bins"),
        "n_audio_ctx": need("max_source_positions"),
        "n_audio_state": d_model,
        "n_audio_head": need("encoder_attention_heads"),
        "n_audio_layer": need("encoder_layers"),
        "n_text_ctx": need("max_target_positions"),
        "n_text_state": d_model,
        "n_text_head": need("decoder_attention_heads"),
        "n_text_layer": need("decoder_layers"),
        "n_vocab": need("vocab_size"),
    }


def to_ct2_variables(t: dict[str, np.ndarray], dims: dict, where: Path) -> dict[str, np.ndarray]:
    """HF tensor names -> CTranslate2 variable names (fusing q/k/v and k/v as CT2 does).
    Every tensor must be used, every expected one present, each with the config's shape."""
    used: set[str] = set()
    D, V = dims["n_audio_state"], dims["n_vocab"]

    def take(name: str, shape: tuple) -> np.ndarray:
        if name not in t:
            raise CheckpointError(f"{where}: tensor {name} missing (checkpoint and config.json disagree?)")
        a = t[name]
        if tuple(a.shape) != tuple(shape):
            raise CheckpointError(f"{where}: tensor {name} has shape {list(a.shape)}, config.json implies {list(shape)}")
        used.add(name)
        return a

    v: dict[str, np.ndarray] = {}

    def linear(hf: str, ct2: str, out: int, inp: int, bias: bool = True):
        v[f"{ct2}/weight"] = take(f"{hf}.weight", (out, inp))
        if bias:
            v[f"{ct2}/bias"] = take(f"{hf}.bias", (out,))

    def norm(hf: str, ct2: str):
        v[f"{ct2}/gamma"] = take(f"{hf}.weight", (D,))
        v[f"{ct2}/beta"] = take(f"{hf}.bias", (D,))

    def fused(hf: str, parts: list[str], ct2: str):
        """q/k/v (or k/v) projections as one; k_proj has no bias in Whisper."""
        ws = [take(f"{hf}.{p}.weight", (D, D)) for p in parts]
        bs = [take(f"{hf}.{p}.bias", (D,)) if p != "k_proj" else np.zeros(D, ws[0].dtype) for p in parts]
        v[f"{ct2}/weight"] = np.concatenate(ws, axis=0)
        v[f"{ct2}/bias"] = np.concatenate([np.asarray(b, dtype=ws[0].dtype) for b in bs])

    n_mels = dims["n_mels"]
    v["encoder/conv1/weight"] = take("encoder.conv1.weight", (D, n_mels, 3))
    v["encoder/conv1/bias"] = take("encoder.conv1.bias", (D,))
    v["encoder/conv2/weight"] = take("encoder.conv2.weight", (D, D, 3))
    v["encoder/conv2/bias"] = take("encoder.conv2.bias", (D,))
    v["encoder/position_encodings/encodings"] = take("encoder.embed_positions.weight", (dims["n_audio_ctx"], D))
    for i in range(dims["n_audio_layer"]):
        hf, ct2 = f"encoder.layers.{i}", f"encoder/layer_{i}"
        norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
        fused(f"{hf}.self_attn", ["q_proj", "k_proj", "v_proj"], f"{ct2}/self_attention/linear_0")
        linear(f"{hf}.self_attn.out_proj", f"{ct2}/self_attention/linear_1", D, D)
        norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")
        ffn = t.get(f"{hf}.fc1.weight")
        F = ffn.shape[0] if ffn is not None else 4 * D
        linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0", F, D)
        linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1", D, F)
    norm("encoder.layer_norm", "encoder/layer_norm")

    v["decoder/embeddings/weight"] = take("decoder.embed_tokens.weight", (V, D))
    v["decoder/position_encodings/encodings"] = take("decoder.embed_positions.weight", (dims["n_text_ctx"], D))
    for i in range(dims["n_text_layer"]):
        hf, ct2 = f"decoder.layers.{i}", f"decoder/layer_{i}"
        norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
        fused(f"{hf}.self_attn", ["q_proj", "k_proj", "v_proj"], f"{ct2}/self_attention/linear_0")
        linear(f"{hf}.self_attn.out_proj", f"{ct2}/self_attention/linear_1", D, D)
        norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm")
        linear(f"{hf}.encoder_attn.q_proj", f"{ct2}/attention/linear_0", D, D)
        fused(f"{hf}.encoder_attn", ["k_proj", "v_proj"], f"{ct2}/attention/linear_1")
        linear(f"{hf}.encoder_attn.out_proj", f"{ct2}/attention/linear_2", D, D)
        norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")
        ffn = t.get(f"{hf}.fc1.weight")
        F = ffn.shape[0] if ffn is not None else 4 * D
        linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0", F, D)
        linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1", D, F)
    norm("decoder.layer_norm", "decoder/layer_norm")

    if "proj_out.weight" in t:
        proj = take("proj_out.weight", (V, D))
        if proj is not v["decoder/embeddings/weight"] and not np.array_equal(proj, v["decoder/embeddings/weight"]):
            raise CheckpointError(f"{where}: proj_out is not tied to the token embedding (unsupported)")
    extra = sorted(set(t) - used)
    if extra:
        raise CheckpointError(f"{where}: {len(extra)} tensors this converter does not know, e.g. {extra[0]} "
                              "(more layers than config.json says, or not a Whisper checkpoint)")
    # CT2 keeps the head counts as scalar variables; convert_whisper.py reads them from there
    v["encoder/num_heads"] = np.array(dims["n_audio_head"], np.int32)
    v["decoder/num_heads"] = np.array(dims["n_text_head"], np.int32)
    return v


def read_hf_model(hf_dir: Path) -> tuple[dict[str, np.ndarray], dict, dict]:
    """(CT2-named variables, dims, CT2-style config: alignment_heads, suppress_ids,
    suppress_ids_begin, lang_ids, name_or_path) of a transformers Whisper directory."""
    cfg_path = hf_dir / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{hf_dir}: no config.json")
    try:
        config = json.loads(cfg_path.read_text())
    except ValueError as e:
        raise CheckpointError(f"{cfg_path}: not JSON: {e}") from None
    dims = dims_from_config(config, cfg_path)
    variables = to_ct2_variables(read_checkpoint(hf_dir), dims, hf_dir)
    gen_path = hf_dir / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.is_file() else {}
    out = {"name_or_path": config.get("_name_or_path", "")}
    heads = gen.get("alignment_heads")
    if heads:
        out["alignment_heads"] = heads
    suppress = gen.get("suppress_tokens", config.get("suppress_tokens"))
    if suppress is not None:
        out["suppress_ids"] = suppress
    begin = gen.get("begin_suppress_tokens", config.get("begin_suppress_tokens"))
    if begin is not None:
        out["suppress_ids_begin"] = begin
    if isinstance(gen.get("lang_to_id"), dict):
        out["lang_ids"] = sorted(int(i) for i in gen["lang_to_id"].values())
    return variables, dims, out


def source_files(hf_dir: Path) -> list[Path]:
    """The files whose bytes define the converted model (hashed into the converter stamp)."""
    names = ["config.json", "generation_config.json", "tokenizer.json", "vocab.json", "added_tokens.json",
             "model.safetensors", "model.safetensors.index.json"]
    index = hf_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            names += sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError):
            pass
    return [hf_dir / n for n in names if (hf_dir / n).is_file()]


# ------------------------------------------------------------------------------ alignment heads


def openai_alignment_table(sdist: Path) -> dict[str, str]:
    """{model key: base85 gzip dump} from whisper/__init__.py of the openai-whisper sdist."""
    with tarfile.open(sdist) as tar:
        member = next((m for m in tar.getmembers() if m.name.endswith("/whisper/__init__.py")), None)
        if member is None:
            raise CheckpointError(f"{sdist}: no whisper/__init__.py")
        source = tar.extractfile(member).read().decode("utf-8")
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "_ALIGNMENT_HEADS" for t in node.targets):
            table = ast.literal_eval(node.value)
            return {k: (v.decode("ascii") if isinstance(v, bytes) else v) for k, v in table.items()}
    raise CheckpointError(f"{sdist}: no _ALIGNMENT_HEADS table")


def decode_alignment_dump(dump: str, n_layer: int, n_head: int) -> list[list[int]] | None:
    """openai-whisper's dump: a gzip'd boolean [n_text_layer, n_text_head] mask in base85.
    None when its size does not match the model's decoder."""
    mask = np.frombuffer(gzip.decompress(base64.b85decode(dump)), dtype=bool)
    if mask.size != n_layer * n_head:
        return None
    return [[int(layer), int(head)] for layer, head in np.argwhere(mask.reshape(n_layer, n_head))]


def official_key(name_or_path: str) -> str | None:
    """`openai/whisper-large-v3` -> `large-v3`; None for other checkpoints (distil-whisper, fine-tunes)."""
    base = name_or_path.rstrip("/").split("/")
    if len(base) >= 2 and base[-2] == "openai" and base[-1].startswith("whisper-"):
        return base[-1][len("whisper-"):]
    return None


def choose_alignment_heads(given, dims: dict, official: str | None, sdist: Path | None, log) -> tuple[list[list[int]], str]:
    """The checkpoint's own heads when they fit the decoder; else the official table's for the
    named model; else the last half of the decoder layers, all heads (what whisper.cpp and
    openai-whisper fall back to for unknown models). Returns (heads, where they came from)."""
    L, H = dims["n_text_layer"], dims["n_text_head"]
    if given:
        heads = [[int(a), int(b)] for a, b in given]
        if all(0 <= a < L and 0 <= b < H for a, b in heads):
            return heads, "checkpoint"
        log(f"     warning: the checkpoint's alignment heads {heads[:3]}... do not fit a {L}-layer, {H}-head decoder "
            "(copied from a larger model?); not used")
    if official and sdist is not None and sdist.is_file():
        dump = openai_alignment_table(sdist).get(official)
        heads = decode_alignment_dump(dump, L, H) if dump else None
        if heads:
            return heads, f"openai-whisper table ({official})"
        log(f"     warning: no fitting entry for {official!r} in the openai-whisper alignment table")
    heads = [[layer, head] for layer in range(L // 2, L) for head in range(H)]
    log(f"     warning: no alignment heads known for this model: using the last half of the decoder layers, all heads ({len(heads)})")
    return heads, "fallback: last half of the decoder layers, all heads"


def load_vocab_files(hf_dir: Path) -> list[str] | None:
    """vocab.json + added_tokens.json (the slow tokenizer's files), when there is no tokenizer.json."""
    vj = hf_dir / "vocab.json"
    if not vj.is_file():
        return None
    ids = dict(json.loads(vj.read_text(encoding="utf-8")))
    at = hf_dir / "added_tokens.json"
    if at.is_file():
        ids.update(json.loads(at.read_text(encoding="utf-8")))
    inv = {int(i): s for s, i in ids.items()}
    return [inv.get(i, "") for i in range(max(inv) + 1)]
