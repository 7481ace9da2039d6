#!/usr/bin/env python3
"""A webhook receiver for the tests: verifies every delivery with the Standard Webhooks
reference library (the `standardwebhooks` package on PyPI), not with Hearth's code.

    webhook_receiver.py            prints "PORT <n>" once listening on 127.0.0.1

Control (JSON bodies):
    POST /_secrets/<name>   ["whsec_…", …]   the secrets to check deliveries to /<name> with
    POST /_mode/<name>      {"mode": "ok" | "fail" | "gone" | "slow", "fail_first": n}
    GET  /_log                               every delivery received, in arrival order
Deliveries: POST /<name> answers per its mode ("ok": 200; "fail_first": n: 500 for the
first n, then 200; "fail": always 500; "gone": 410; "slow": sleeps 5 s, then 200).
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

LOCK = threading.Lock()
SECRETS = {}
MODES = {}
SEEN = {}
LOG = []


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/_log":
            with LOCK:
                body = json.dumps(LOG).encode()
            self.reply(200, body)
        else:
            self.reply(404)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        name = self.path.strip("/")
        if name.startswith("_secrets/"):
            with LOCK:
                SECRETS[name[len("_secrets/"):]] = json.loads(body)
            return self.reply(204)
        if name.startswith("_mode/"):
            with LOCK:
                MODES[name[len("_mode/"):]] = json.loads(body)
            return self.reply(204)
        headers = {k.lower(): v for k, v in self.headers.items()}
        with LOCK:
            secrets = list(SECRETS.get(name, []))
            mode = dict(MODES.get(name, {"mode": "ok"}))
            count = SEEN.get(name, 0) + 1
            SEEN[name] = count
        # Which of the configured secrets verify this delivery, each on its own.
        verified_by = []
        for i, secret in enumerate(secrets):
            try:
                Webhook(secret).verify(body, headers)
                verified_by.append(i)
            except WebhookVerificationError:
                pass
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        entry = {
            "endpoint": name,
            "webhook_id": headers.get("webhook-id"),
            "signatures": headers.get("webhook-signature", "").split(),
            "verified_by": verified_by,
            "payload": payload,
            "at": time.time(),
        }
        with LOCK:
            LOG.append(entry)
        kind = mode.get("mode", "ok")
        if kind == "gone":
            return self.reply(410, b'{"error":"gone"}')
        if kind == "fail" or count <= mode.get("fail_first", 0):
            return self.reply(500, b'{"error":"receiver failure on purpose"}')
        if kind == "slow":
            time.sleep(5)
        self.reply(200, b'{"ok":true}')


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
