#!/usr/bin/env python3
"""One faster-whisper transcription for scripts/bench-asr, in its own process (so that its wall
time and peak RSS are measured like our binary's: imports, model load, audio decode, decode).

Prints one JSON object: text, segments [{start, end, text}], duration, and the in-process split
import_s / load_s / transcribe_s (transcribe_s consumes the segment generator: faster-whisper
decodes lazily).

Usage: bench_asr_fw.py --ct2-dir DIR --audio FILE [--beam 1] [--compute-type float32]
                       [--threads 2] [--language en] [--vad] [--words] [--batch N]
Run it with OMP_WAIT_POLICY=PASSIVE (bench-asr does) so idle OpenMP workers sleep instead of
spinning, which matters on a loaded 2-core machine.
"""

import argparse
import json
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ct2-dir", required=True)
    ap.add_argument("--audio", required=True)
    ap.add_argument("--beam", type=int, default=1)
    ap.add_argument("--compute-type", default="float32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--language", default="en")
    ap.add_argument("--vad", action="store_true")
    ap.add_argument("--words", action="store_true", help="word_timestamps=True (and words in the output)")
    ap.add_argument("--batch", type=int, default=0,
                    help="above 1: faster-whisper's BatchedInferencePipeline with batch_size=N (it always uses its VAD)")
    a = ap.parse_args()

    t0 = time.perf_counter()
    from faster_whisper import BatchedInferencePipeline, WhisperModel  # noqa: PLC0415 (timed on purpose)

    t1 = time.perf_counter()
    model = WhisperModel(a.ct2_dir, device="cpu", compute_type=a.compute_type,
                         cpu_threads=a.threads, num_workers=1)
    t2 = time.perf_counter()
    if a.batch > 1:
        segments, info = BatchedInferencePipeline(model=model).transcribe(
            a.audio,
            beam_size=a.beam,
            language=a.language,
            batch_size=a.batch,
            word_timestamps=a.words,
        )
    else:
        segments, info = model.transcribe(
            a.audio,
            beam_size=a.beam,
            language=a.language,
            vad_filter=a.vad,
            condition_on_previous_text=True,
            word_timestamps=a.words,
        )
    segs = []
    for s in segments:
        seg = {"start": s.start, "end": s.end, "text": s.text}
        if a.words:
            seg["words"] = [{"start": w.start, "end": w.end, "text": w.word.strip()} for w in (s.words or [])]
        segs.append(seg)
    t3 = time.perf_counter()
    json.dump({
        "text": " ".join(s["text"].strip() for s in segs),
        "segments": segs,
        "duration": info.duration,
        "import_s": t1 - t0,
        "load_s": t2 - t1,
        "transcribe_s": t3 - t2,
    }, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
