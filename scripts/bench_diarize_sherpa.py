#!/usr/bin/env python3
"""sherpa-onnx offline speaker diarization on one file, with our cached ONNX models.

Usage: bench_diarize_sherpa.py --models-dir DIR --work-dir DIR --threads N [--num-speakers N]
       [--threshold T] WAV > RTTM

sherpa-onnx reads parameters from ONNX metadata that our exports do not carry, so copies with
that metadata added are written into --work-dir (the cache is never modified):
  segmentation: model_type, num_speakers, powerset_max_classes, num_classes, sample_rate,
    window_size, window_shift (0.1 of the window, as sherpa's own export), receptive_field_size,
    receptive_field_shift;
  embedding: framework=3d-speaker, sample_rate, output_dim, normalize_samples=1,
    feature_normalize_type=global-mean, language.
sherpa-onnx takes the embedding model's first output, `embedding` (after the ReLU).
Prints timings (model load, diarization) as JSON on stderr.
"""

import argparse
import hashlib
import json
import os
import sys
import time
import wave

import numpy as np
import onnx


def with_metadata(src, dst, meta):
    stamp = dst + ".src-sha256"
    digest = hashlib.sha256(open(src, "rb").read()).hexdigest()
    if os.path.exists(dst) and os.path.exists(stamp) and open(stamp).read() == digest:
        return dst
    model = onnx.load(src)
    existing = {p.key: p for p in model.metadata_props}
    for key, value in meta.items():
        if key in existing:
            existing[key].value = str(value)
        else:
            p = model.metadata_props.add()
            p.key, p.value = key, str(value)
    onnx.save(model, dst + ".tmp")
    os.replace(dst + ".tmp", dst)
    open(stamp, "w").write(digest)
    return dst


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("wav")
    parser.add_argument("--models-dir", required=True)
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--num-speakers", type=int, default=-1)
    parser.add_argument("--threshold", type=float, default=0.5)
    args = parser.parse_args()
    t0 = time.perf_counter()
    import sherpa_onnx

    os.makedirs(args.work_dir, exist_ok=True)
    seg = with_metadata(
        os.path.join(args.models_dir, "pyannote-segmentation-3.0", "model.onnx"),
        os.path.join(args.work_dir, "segmentation-sherpa.onnx"),
        {"model_type": "pyannote-segmentation-3.0", "num_speakers": 3, "powerset_max_classes": 2,
         "num_classes": 7, "sample_rate": 16000, "window_size": 160000, "window_shift": 16000,
         "receptive_field_size": 991, "receptive_field_shift": 270, "version": 1},
    )
    emb = with_metadata(
        os.path.join(args.models_dir, "campplus-zh-en", "model.onnx"),
        os.path.join(args.work_dir, "campplus-sherpa.onnx"),
        {"framework": "3d-speaker", "sample_rate": 16000, "output_dim": 192,
         "normalize_samples": 1, "feature_normalize_type": "global-mean", "language": "English"},
    )
    config = sherpa_onnx.OfflineSpeakerDiarizationConfig(
        segmentation=sherpa_onnx.OfflineSpeakerSegmentationModelConfig(
            pyannote=sherpa_onnx.OfflineSpeakerSegmentationPyannoteModelConfig(model=seg),
            num_threads=args.threads,
        ),
        embedding=sherpa_onnx.SpeakerEmbeddingExtractorConfig(model=emb, num_threads=args.threads),
        clustering=sherpa_onnx.FastClusteringConfig(
            num_clusters=args.num_speakers, threshold=args.threshold),
        min_duration_on=0.3,
        min_duration_off=0.5,
    )
    if not config.validate():
        sys.exit("sherpa-onnx rejected the config")
    sd = sherpa_onnx.OfflineSpeakerDiarization(config)
    t1 = time.perf_counter()
    with wave.open(args.wav) as w:
        if w.getframerate() != 16000 or w.getnchannels() != 1 or w.getsampwidth() != 2:
            sys.exit("need 16 kHz mono 16-bit WAV")
        samples = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768
    result = sd.process(samples).sort_by_start_time()
    t2 = time.perf_counter()
    name = os.path.splitext(os.path.basename(args.wav))[0]
    for r in result:
        print("SPEAKER %s 1 %.3f %.3f <NA> <NA> SPEAKER_%02d <NA> <NA>" % (name, r.start, r.end - r.start, r.speaker))
    print(json.dumps({"load_s": t1 - t0, "diarize_s": t2 - t1}), file=sys.stderr)


if __name__ == "__main__":
    main()
