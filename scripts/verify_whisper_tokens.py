#!/usr/bin/env python3
"""Check that a converted Whisper ONNX model (convert_whisper.py) decodes the
same tokens as the CTranslate2 original in faster-whisper.

On the first 30 s of real speech it runs
  1. faster-whisper greedy (beam_size=1, temperature 0, without_timestamps,
     no VAD, condition_on_previous_text=False) on the CTranslate2 model;
  2. ctranslate2's Whisper.generate on *our* log-mel (isolates the model
     conversion from front-end differences);
  3. our own greedy decoder in numpy + onnxruntime on encoder.onnx/decoder.onnx
     (and, reported only, on the int8 models);
and compares the token sequences. Prints MATCH or the first difference and
exits non-zero when the fp32 ONNX tokens differ from faster-whisper's.

The log-mel front end below is the reference for the Rust side. It is
Whisper's (n_fft 400, hop 160, periodic Hann, |STFT|^2 without the last frame,
mel_filters.bin, log10(max(x, 1e-10)), max(x, x.max() - 8), (x + 4) / 4) with
faster-whisper's padding convention: 160 zero samples are appended before the
STFT, the last frame is dropped ("content frames"), and the window is zero-padded
(after normalisation) to 3000 frames.

Usage:
    verify_whisper_tokens.py --onnx-dir DIR --ct2-dir DIR [--audio a.wav ...]
                             [--threads 2] [--no-int8]
Default audio: the five LibriVox clips of Debian's pocketsphinx-testdata,
joined with 0.5 s of silence (about 27 s).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import wave
from pathlib import Path

import numpy as np

SR = 16000
N_FFT = 400
HOP = 160
DEFAULT_AUDIO_DIR = Path("/usr/share/pocketsphinx/test/data/librivox")


def load_wav(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        if w.getframerate() != SR or w.getsampwidth() != 2:
            raise SystemExit(f"{path}: need 16 kHz 16-bit PCM wav (got {w.getframerate()} Hz, {8 * w.getsampwidth()} bit)")
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        if w.getnchannels() > 1:
            pcm = pcm.reshape(-1, w.getnchannels()).mean(axis=1)
    return pcm.astype(np.float32) / 32768.0


def log_mel(audio: np.ndarray, filters: np.ndarray, n_frames: int = 3000) -> np.ndarray:
    """[n_mels, n_frames] float32, faster-whisper padding convention."""
    x = np.concatenate([audio.astype(np.float32), np.zeros(HOP, np.float32)])
    x = np.pad(x, (N_FFT // 2, N_FFT // 2), mode="reflect")
    n = 1 + (len(x) - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(x, (n, N_FFT), (x.strides[0] * HOP, x.strides[0]))
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float32)  # periodic Hann
    spec = np.fft.rfft(frames * window, axis=-1).astype(np.complex64)
    power = (np.abs(spec[:-1]) ** 2).T  # [201, n-1]
    mel = filters @ power
    logm = np.log10(np.maximum(mel, 1e-10))
    logm = np.maximum(logm, logm.max() - 8.0)
    logm = (logm + 4.0) / 4.0
    logm = logm[:, : logm.shape[1] - 1]  # faster-whisper's content_frames
    out = np.zeros((filters.shape[0], n_frames), np.float32)
    k = min(n_frames, logm.shape[1])
    out[:, :k] = logm[:, :k]
    return out


class OnnxWhisper:
    def __init__(self, model_dir: Path, params: dict, int8: bool, threads: int):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        f = params["files"]
        enc = f["encoder_int8" if int8 else "encoder"]
        dec = f["decoder_int8" if int8 else "decoder"]
        t0 = time.perf_counter()
        self.enc = ort.InferenceSession(str(model_dir / enc), so, providers=["CPUExecutionProvider"])
        self.dec = ort.InferenceSession(str(model_dir / dec), so, providers=["CPUExecutionProvider"])
        self.load_s = time.perf_counter() - t0
        self.p = params

    def greedy(self, mel: np.ndarray, prompt: list[int], suppress: list[int], begin_suppress: list[int]):
        p = self.p
        L, C, D, H = p["n_text_layer"], p["n_text_ctx"], p["n_text_state"], p["n_text_head"]
        eot = p["special_tokens"]["eot"]
        t0 = time.perf_counter()
        cross = {o.name: v for o, v in zip(self.enc.get_outputs(), self.enc.run(None, {"mel": mel[None]}))}
        t_enc = time.perf_counter() - t0
        # layout 2: per-layer caches [1, H, C, dh]; each step's new K/V go in at `offset`
        caches = {f"cache_{kind}_{l}": np.zeros((1, H, C, D // H), np.float32) for l in range(L) for kind in ("k", "v")}
        toks = np.array([prompt], np.int64)
        offset = 0
        out: list[int] = []
        qk_shape = None
        sup = np.array(suppress, np.int64)
        bsup = np.array(begin_suppress, np.int64)
        while True:
            logits, new_k, new_v, qk = self.dec.run(None, {
                "tokens": toks, "offset": np.array([offset], np.int64),
                "positions": np.array([toks.shape[1] - 1], np.int64), **caches, **cross})
            n = toks.shape[1]
            for l in range(L):
                caches[f"cache_k_{l}"][:, :, offset:offset + n] = new_k[l]
                caches[f"cache_v_{l}"][:, :, offset:offset + n] = new_v[l]
            if qk_shape is None:
                qk_shape = list(qk.shape)
            offset += toks.shape[1]
            lg = logits[0, -1].copy()
            lg[sup] = -np.inf
            if not out:
                lg[bsup] = -np.inf
            t = int(np.argmax(lg))
            if t == eot or offset >= C:
                break
            out.append(t)
            toks = np.array([[t]], np.int64)
        return out, qk_shape, t_enc, time.perf_counter() - t0


def decode_text(tokens: list[int], model_dir: Path, params: dict) -> str:
    import base64

    table = {}
    for line in (model_dir / params["files"]["tokens"]).read_text().splitlines():
        b64, i = line.rsplit(" ", 1)
        table[int(i)] = base64.b64decode(b64)
    eot = params["special_tokens"]["eot"]
    return b"".join(table.get(t, b"") for t in tokens if t < eot).decode("utf-8", errors="replace")


def first_diff(a: list[int], b: list[int]) -> str | None:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"position {i}: {x} vs {y}"
    if len(a) != len(b):
        return f"lengths differ: {len(a)} vs {len(b)}"
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--onnx-dir", required=True, type=Path)
    ap.add_argument("--ct2-dir", required=True, type=Path)
    ap.add_argument("--audio", nargs="*", type=Path, help="16 kHz 16-bit wav files, joined with 0.5 s silence")
    ap.add_argument("--language", default="en")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-int8", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="timing runs (interleaved)")
    args = ap.parse_args()

    params = json.loads((args.onnx_dir / "parameters.json").read_text())
    st = params["special_tokens"]
    files = args.audio or sorted(DEFAULT_AUDIO_DIR.glob("*.wav"))
    if not files:
        raise SystemExit("no audio: apt-get install pocketsphinx-testdata or pass --audio")
    parts = []
    for f in files:
        parts += [load_wav(f), np.zeros(SR // 2, np.float32)]
    audio = np.concatenate(parts[:-1])[: 30 * SR]
    print(f"audio: {len(files)} file(s), {len(audio) / SR:.2f} s")

    n_mels = params["n_mels"]
    filters = np.fromfile(args.onnx_dir / params["files"]["mel_filters"], dtype="<f4").reshape(n_mels, -1)
    mel = log_mel(audio, filters, params["n_frames"])

    # ---- faster-whisper reference
    import ctranslate2
    import faster_whisper
    from faster_whisper import WhisperModel

    print(f"faster-whisper {faster_whisper.__version__}, ctranslate2 {ctranslate2.__version__}")
    fw = WhisperModel(str(args.ct2_dir), device="cpu", compute_type="float32", cpu_threads=args.threads, num_workers=1)
    fw_kwargs = dict(language=args.language if params["multilingual"] else None, task="transcribe", beam_size=1,
                     temperature=0.0, without_timestamps=True, vad_filter=False, condition_on_previous_text=False)

    def run_fw(model=fw):
        segs, _info = model.transcribe(audio, **fw_kwargs)
        return [t for s in segs for t in s.tokens]

    fw_tokens = [t for t in run_fw() if t < st["eot"]]  # also the warm-up

    fw_mel = fw.feature_extractor(audio)
    fw_mel = fw_mel[:, : fw_mel.shape[1] - 1][:, :3000]
    mel_diff = float(np.abs(fw_mel - mel[:, : fw_mel.shape[1]]).max())
    print(f"log-mel: max |ours - faster-whisper| = {mel_diff:.2e} (mel filters differ by "
          f"{float(np.abs(fw.feature_extractor.mel_filters - filters).max()):.2e})")

    # same prompt and suppression lists as faster-whisper
    tok = faster_whisper.tokenizer.Tokenizer(fw.hf_tokenizer, fw.model.is_multilingual,
                                             task="transcribe", language=args.language if params["multilingual"] else None)
    prompt = fw.get_prompt(tok, [], without_timestamps=True)
    suppress = list(faster_whisper.transcribe.get_suppressed_tokens(tok, [-1]))
    expected_prompt = [st["sot"]] + ([st["language_tokens"][args.language], st["transcribe"]] if params["multilingual"] else []) + [st["no_timestamps"]]
    print(f"prompt {prompt} (parameters.json gives {expected_prompt}: {'same' if prompt == expected_prompt else 'DIFFERENT'})")
    p_sup = set(params["suppress_tokens"])
    print(f"suppress list: faster-whisper {len(suppress)} ids, parameters.json {len(p_sup)} ids, "
          f"{'identical' if set(suppress) == p_sup else 'differ: only fw ' + str(sorted(set(suppress) - p_sup)) + ' only params ' + str(sorted(p_sup - set(suppress)))}")
    begin_suppress = params["begin_suppress"] or [tok.encode(" ")[0], st["eot"]]

    # ---- ctranslate2 on our mel (conversion-only check)
    ct = fw.model
    res = ct.generate(ctranslate2.StorageView.from_array(mel[None]), [prompt], beam_size=1, suppress_blank=True,
                      suppress_tokens=suppress, max_length=params["n_text_ctx"])[0]
    ct_tokens = [t for t in res.sequences_ids[0] if t < st["eot"]]

    ok = True
    models = {}
    for int8 in ([False] if args.no_int8 else [False, True]):
        label = "int8" if int8 else "fp32"
        m = models[label] = OnnxWhisper(args.onnx_dir, params, int8, args.threads)
        toks, qk_shape, _, _ = m.greedy(mel, prompt, suppress, begin_suppress)  # also the warm-up
        # greedy() asks for one position (the prompt's last), so cross_qk has P = 1
        want_qk = [params["n_text_layer"], 1, params["n_text_head"], 1, params["n_audio_ctx"]]
        print(f"\n[{label}] onnx session load {m.load_s:.2f} s, {len(toks)} tokens")
        print(f"[{label}] cross_qk shape {qk_shape} ({'ok' if qk_shape == want_qk else 'EXPECTED ' + str(want_qk)})")
        if qk_shape != want_qk:
            ok = False
        d_fw = first_diff(toks, fw_tokens)
        d_ct = first_diff(toks, ct_tokens)
        print(f"[{label}] vs faster-whisper: {'MATCH' if d_fw is None else 'DIFFER at ' + d_fw}")
        print(f"[{label}] vs ctranslate2 on the same log-mel: {'MATCH' if d_ct is None else 'DIFFER at ' + d_ct}")
        print(f"[{label}] text: {decode_text(toks, args.onnx_dir, params)!r}")
        if not int8 and d_fw is not None:
            ok = False
            print(f"faster-whisper text: {decode_text(fw_tokens, args.onnx_dir, params)!r}")

    fw8 = None
    if not args.no_int8:
        fw8 = WhisperModel(str(args.ct2_dir), device="cpu", compute_type="int8", cpu_threads=args.threads, num_workers=1)
        d = first_diff([t for t in run_fw(fw8) if t < st["eot"]], fw_tokens)
        print(f"\n[faster-whisper int8] vs faster-whisper float32: {'MATCH' if d is None else 'DIFFER at ' + d}")

    # ---- timing, interleaved so that background load hits all alike
    load0 = os.getloadavg()[0]
    times = {"faster-whisper fp32": [], **({"faster-whisper int8": []} if fw8 else {}), **{f"onnx {k}": [] for k in models}, **{f"onnx {k} encoder": [] for k in models}}
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        run_fw()
        times["faster-whisper fp32"].append(time.perf_counter() - t0)
        if fw8:
            t0 = time.perf_counter()
            run_fw(fw8)
            times["faster-whisper int8"].append(time.perf_counter() - t0)
        for k, m in models.items():
            t0 = time.perf_counter()
            mm = log_mel(audio, filters, params["n_frames"])
            _, _, t_enc, _ = m.greedy(mm, prompt, suppress, begin_suppress)
            times[f"onnx {k}"].append(time.perf_counter() - t0)
            times[f"onnx {k} encoder"].append(t_enc)
    print(f"\ntiming over {args.repeat} runs, {args.threads} threads, {len(audio) / SR:.1f} s audio, "
          f"load average {load0:.1f} -> {os.getloadavg()[0]:.1f} (median / min, seconds; onnx = log-mel + encoder + greedy decode):")
    for k, v in times.items():
        print(f"  {k:22s} {np.median(v):6.2f} / {min(v):6.2f}")
    print("\nMATCH" if ok else "\nMISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
