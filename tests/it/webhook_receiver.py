#!/usr/bin/env python3
"""A webhook receiver for the integration tests, independent of the daemon's code: it checks
X-OpenTranscribe-Signature (t=<unix>,v1=<hex HMAC-SHA256 over "<t>.<body>">) with Python's own
hmac module and answers the statuses it is told, in order (200 once the list is used up; 401
for a signature that does not verify), after --hang seconds. It prints "PORT <n>" once
listening, then one JSON line per request received (before answering it)."""

import argparse
import hashlib
import hmac
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import threading

PRINT_LOCK = threading.Lock()


def verify(secret, header, body):
    fields = {}
    signatures = []
    for part in (header or "").split(","):
        key, _, value = part.partition("=")
        if key == "v1":
            signatures.append(value)
        elif key:
            fields[key] = value
    timestamp = fields.get("t", "")
    if not timestamp.isdigit():
        return None, False
    expected = hmac.new(
        secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return int(timestamp), any(hmac.compare_digest(expected, s) for s in signatures)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--secret", required=True)
    parser.add_argument("--statuses", default="", help="comma-separated, e.g. 500,500,200")
    parser.add_argument("--hang", type=float, default=0.0, help="seconds to wait before answering")
    args = parser.parse_args()
    script = [int(s) for s in args.statuses.split(",") if s]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            timestamp, valid = verify(
                args.secret, self.headers.get("X-OpenTranscribe-Signature"), body
            )
            if not valid:
                status = 401
            elif script:
                status = script.pop(0)
            else:
                status = 200
            try:
                payload = json.loads(body)
            except ValueError:
                payload = None
            record = {
                "path": self.path,
                "t": timestamp,
                "valid": valid,
                "answered": status,
                "content_type": self.headers.get("Content-Type"),
                "delivery_header": self.headers.get("X-OpenTranscribe-Delivery"),
                "payload": payload,
                "received_at": time.time(),
            }
            # One whole line per request: the server is threaded, and print() writes the text
            # and the newline separately, so two answers at once could share a line.
            with PRINT_LOCK:
                sys.stdout.write(json.dumps(record) + "\n")
                sys.stdout.flush()
            time.sleep(args.hang)
            try:
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                pass  # the daemon gave up waiting (its timeout), as the test wants

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
