#!/usr/bin/env python3
"""A STUB of an OpenAI-compatible language model server, for tests only: no model runs here.

It answers POST /v1/chat/completions deterministically from the prompt's content and records
every request (headers that matter, the JSON body, the prompt's size) as one JSON line in
STUB_RECORD. It prints "PORT <n>" once it listens on 127.0.0.1.

- map requests (system prompt "take notes on one part"): notes built from the transcript lines
  of the chunk ("[12.3s] Speaker: text"): the first line's text as summary, an action item from
  the second line, a decision from the last, a topic from the longest word; a line saying
  "thanks, <Name>" suggests <Name> for the previous other speaker, plus an invented name
  ("Zebulon") that the transcript never says.
- reduce requests ("combine notes"): the notes merged, the summary prefixed with
  "Stubsummary:" (a word no transcript contains, for the search test).
- ask requests ("answer a question"): the excerpt line sharing most words with the question,
  cited by its time, plus a citation of a time that names no segment ([9999.0s]).
- GET /v1/models lists STUB_MODEL.

STUB_MODE: ok (default), malformed (prose instead of JSON), error (HTTP 500), hang (sleep
STUB_HANG_SECS, default 30, before answering). STUB_KEY: when set, requests without
"Authorization: Bearer <key>" get 401.
"""

import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RECORD = os.environ.get("STUB_RECORD", "/dev/null")
MODE = os.environ.get("STUB_MODE", "ok")
HANG = float(os.environ.get("STUB_HANG_SECS", "30"))
KEY = os.environ.get("STUB_KEY", "")
MODEL = os.environ.get("STUB_MODEL", "stub-model")
LOCK = threading.Lock()
LINE = re.compile(r"^\[(\d+(?:\.\d+)?)s\] ([^:]+): (.*)$")


def lines_of(text):
    out = []
    for raw in text.splitlines():
        m = LINE.match(raw.strip())
        if m:
            out.append((float(m.group(1)), m.group(2), m.group(3)))
    return out


def words(text):
    return {w for w in re.findall(r"[a-z0-9]+", text.lower()) if len(w) >= 3}


def map_notes(user):
    lines = lines_of(user)
    if not lines:
        return {"summary": "", "action_items": [], "decisions": [], "topics": [], "speaker_names": []}
    first, last = lines[0], lines[-1]
    second = lines[1] if len(lines) > 1 else first
    longest = max((w for l in lines for w in re.findall(r"[A-Za-z]+", l[2])), key=len, default="talk")
    names = []
    for i, (t, speaker, text) in enumerate(lines):
        for m in re.finditer(r"\b[Tt]hanks?,?\s+([A-Z][a-z]+)", text):
            others = [l[1] for l in lines[:i] if l[1] != speaker][-1:] or [l[1] for l in lines[i + 1:] if l[1] != speaker][:1]
            if others:
                names.append({"speaker": others[0], "name": m.group(1), "time": t})
                names.append({"speaker": others[0], "name": "Zebulon", "time": t})
    return {
        "summary": first[2],
        "action_items": [{"text": "Follow up: " + " ".join(second[2].split()[:6]), "owner": second[1], "time": second[0]}],
        "decisions": [{"text": "Agreed: " + " ".join(last[2].split()[:6]), "time": last[0]}],
        "topics": [{"text": longest.lower(), "time": first[0]}],
        "speaker_names": names,
    }


def reduce_notes(user):
    merged = {"summary": [], "action_items": [], "decisions": [], "topics": [], "speaker_names": []}
    for m in re.finditer(r"^Part \d+: (\{.*\})$", user, re.M):
        try:
            note = json.loads(m.group(1))
        except ValueError:
            continue
        summary = note.get("summary") or ""
        merged["summary"].append(summary[len("Stubsummary: "):] if summary.startswith("Stubsummary: ") else summary)
        for key in ("action_items", "decisions", "topics", "speaker_names"):
            merged[key].extend(note.get(key) or [])
    merged["summary"] = "Stubsummary: " + " ".join(s for s in merged["summary"] if s)
    return merged


def ask_answer(user):
    question = user.rsplit("Question:", 1)[-1]
    wanted = words(question)
    lines = lines_of(user)
    if not lines:
        return "The excerpts do not say."
    best = max(lines, key=lambda l: (len(wanted & words(l[2])), -l[0]))
    return "According to the transcript: %s [%.1fs]. Also see [9999.0s]." % (best[2], best[0])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def authorized(self):
        return not KEY or self.headers.get("Authorization") == "Bearer " + KEY

    def do_GET(self):
        if not self.authorized():
            return self.send(401, {"error": {"message": "bad key"}})
        if self.path.rstrip("/").endswith("/models"):
            return self.send(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        self.send(404, {"error": {"message": "no such path"}})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        messages = (body or {}).get("messages") or []
        system = " ".join(m.get("content", "") for m in messages if m.get("role") == "system")
        user = " ".join(m.get("content", "") for m in messages if m.get("role") == "user")
        if "take notes on one part" in system.lower():
            kind = "map"
        elif "combine notes" in system.lower():
            kind = "reduce"
        elif "answer a question" in system.lower():
            kind = "ask"
        else:
            kind = "other"
        with LOCK, open(RECORD, "a") as f:
            f.write(json.dumps({
                "t": time.time(),
                "path": self.path,
                "authorization": self.headers.get("Authorization"),
                "kind": kind,
                "model": (body or {}).get("model"),
                "max_tokens": (body or {}).get("max_tokens"),
                "prompt_bytes": len(system.encode()) + len(user.encode()),
                "user": user,
            }) + "\n")
        if not self.authorized():
            return self.send(401, {"error": {"message": "bad key"}})
        if not self.path.endswith("/chat/completions") or body is None:
            return self.send(404, {"error": {"message": "no such path"}})
        if MODE == "hang":
            time.sleep(HANG)
        if MODE == "error":
            return self.send(500, {"error": {"message": "stub failure"}})
        if MODE == "malformed":
            content = "Sure! Here is a summary of the meeting, but not as JSON."
        elif kind == "map":
            content = "```json\n" + json.dumps(map_notes(user), indent=1) + "\n```"
        elif kind == "reduce":
            content = "Here you go:\n" + json.dumps(reduce_notes(user))
        elif kind == "ask":
            content = ask_answer(user)
        else:
            content = "stub"
        self.send(200, {
            "id": "stub-1",
            "object": "chat.completion",
            "model": MODEL,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        })


def main():
    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("STUB_PORT", "0"))), Handler)
    server.daemon_threads = True
    print("PORT %d" % server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
