"""Drives the appliance with OpenAI's official Python client (PyPI `openai`).

Usage: openai_client.py BASE_URL TOKEN CA_CERT AUDIO_FILE
Prints one JSON object with what each call returned, for the Rust test to check.
"""
import json
import sys

import openai

try:  # openai 3.x ships its HTTP client as `httpx2`; 1.x/2.x used `httpx`.
    import httpx2 as httpx
except ImportError:
    import httpx

base_url, token, ca_cert, audio = sys.argv[1:5]
client = openai.OpenAI(
    base_url=base_url,
    api_key=token,
    http_client=httpx.Client(verify=ca_cert, timeout=600),
    max_retries=0,
)
out = {"models": [m.id for m in client.models.list()]}
with open(audio, "rb") as f:
    out["json"] = client.audio.transcriptions.create(model="whisper-1", file=f).text
with open(audio, "rb") as f:
    verbose = client.audio.transcriptions.create(
        model="whisper-1",
        file=f,
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
        language="en",
    )
    out["verbose"] = {
        "language": verbose.language,
        "duration": verbose.duration,
        "text": verbose.text,
        "segments": [{"start": s.start, "end": s.end, "text": s.text} for s in verbose.segments],
        "words": [{"word": w.word, "start": w.start, "end": w.end} for w in verbose.words],
    }
with open(audio, "rb") as f:
    out["srt"] = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="srt")
# Another installed model by name, on the translation route (English speech stays English).
with open(audio, "rb") as f:
    out["translation"] = client.audio.translations.create(model="whisper-base", file=f).text
try:  # whisper-1 is the configured whisper-tiny.en here: English-only, it cannot translate
    with open(audio, "rb") as f:
        client.audio.translations.create(model="whisper-1", file=f)
    out["translate_english_only"] = "accepted"
except openai.BadRequestError as e:
    out["translate_english_only"] = e.body.get("code") if isinstance(e.body, dict) else str(e.body)
try:
    with open(audio, "rb") as f:
        client.audio.transcriptions.create(model="gpt-4o-transcribe", file=f)
    out["bad_model"] = "accepted"
except openai.BadRequestError as e:
    out["bad_model"] = e.body.get("code") if isinstance(e.body, dict) else str(e.body)
bad = openai.OpenAI(base_url=base_url, api_key="otk_wrong", http_client=httpx.Client(verify=ca_cert), max_retries=0)
try:
    bad.models.list()
    out["bad_key"] = "accepted"
except openai.AuthenticationError:
    out["bad_key"] = "refused"
print(json.dumps(out))
