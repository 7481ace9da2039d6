#!/usr/bin/env python3
"""A webhook receiver for deploy/bench/webhooks.sh (Python standard library only).

    webhook-sink.py --port P --stats-file F [--secret-file S] [--mode fast|blackhole]

fast       answers every POST at once with 204 (threads, HTTP/1.1 keep-alive), checks each
           delivery's Standard Webhooks signature with the secret in --secret-file
           (`v1,` + base64(HMAC-SHA256(base64decode(secret without "whsec_"),
           "{webhook-id}.{webhook-timestamp}.{body}")), any of the space-separated
           signatures may match) and counts deliveries by event type: distinct
           webhook-ids, duplicates, bad signatures, webhook-id ≠ the body's id, per
           appliance events whose position is below one already received (order), the
           first and last arrival of each type, and event timestamp → arrival latency.
           GET answers the counters as JSON too.
blackhole  accepts every connection, reads and discards what comes, never answers (every
           attempt times out at the sender); counts connections and requests seen.

Either way the counters are written as one JSON object to --stats-file (replaced
atomically) every 0.2 s and on SIGTERM/SIGINT.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import selectors
import signal
import socket
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATS = {
    "mode": None,
    "started_unix": time.time(),
    "requests": 0,          # POSTs received (fast) / request lines seen (blackhole)
    "connections": 0,
    "bad_signatures": 0,
    "missing_headers": 0,
    "id_mismatch": 0,       # webhook-id differs from the body's id
    "bad_body": 0,
    "duplicates": 0,        # deliveries of a webhook-id received before
    "out_of_order": 0,      # an appliance's event below a position already received for it
    "types": {},            # type → {"distinct", "first_unix", "last_unix"} (first arrivals)
    "last_request_unix": None,
}
SEEN = set()
LAST_POSITION = {}          # appliance_id → highest position received
LATENCIES = {}              # type → [seconds from the event's timestamp to its first arrival]
PER_SECOND = {}             # type → {unix second: first arrivals}


def write_stats(path):
    with LOCK:
        snap = json.loads(json.dumps(STATS))
        lat = {t: sorted(v) for t, v in LATENCIES.items()}
        peak = {t: max(v.values()) for t, v in PER_SECOND.items() if v}
    snap["distinct"] = sum(t["distinct"] for t in snap["types"].values())
    for t, v in lat.items():
        if v:
            pick = lambda q: round(v[min(len(v) - 1, int(q * len(v)))], 3)
            snap["types"][t]["latency_s"] = {"p50": pick(0.5), "p99": pick(0.99), "max": round(v[-1], 3)}
    for t, v in peak.items():
        snap["types"][t]["peak_per_s"] = v
    snap["written_unix"] = time.time()
    tmp = "%s.%d.tmp" % (path, threading.get_ident())
    with open(tmp, "w") as f:
        json.dump(snap, f)
    os.replace(tmp, path)
    return snap


def parse_ts(s):
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except (AttributeError, TypeError, ValueError):
        return None


def make_handler(key):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def setup(self):
            super().setup()
            with LOCK:
                STATS["connections"] += 1

        def do_GET(self):
            body = json.dumps(write_stats(ARGS.stats_file)).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            now = time.time()
            n = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(n) if n else b""
            # Answer first: the receiver must be fast; the checks below are its own business.
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()
            wid = self.headers.get("webhook-id")
            wts = self.headers.get("webhook-timestamp")
            wsig = self.headers.get("webhook-signature")
            good = False
            if wid and wts and wsig:
                msg = wid.encode() + b"." + wts.encode() + b"." + body
                want = "v1," + base64.b64encode(hmac.new(key, msg, hashlib.sha256).digest()).decode()
                good = any(hmac.compare_digest(want, s) for s in wsig.split(" "))
            try:
                ev = json.loads(body)
            except ValueError:
                ev = None
            with LOCK:
                STATS["requests"] += 1
                STATS["last_request_unix"] = now
                if not (wid and wts and wsig):
                    STATS["missing_headers"] += 1
                elif not good:
                    STATS["bad_signatures"] += 1
                if not isinstance(ev, dict):
                    STATS["bad_body"] += 1
                    return
                if ev.get("id") != wid:
                    STATS["id_mismatch"] += 1
                if wid in SEEN:
                    STATS["duplicates"] += 1
                    return
                SEEN.add(wid)
                kind = str(ev.get("type"))
                t = STATS["types"].setdefault(kind, {"distinct": 0, "first_unix": now, "last_unix": now})
                t["distinct"] += 1
                t["last_unix"] = now
                sec = PER_SECOND.setdefault(kind, {})
                sec[int(now)] = sec.get(int(now), 0) + 1
                at = parse_ts(ev.get("timestamp"))
                if at is not None:
                    LATENCIES.setdefault(kind, []).append(now - at)
                app, pos = ev.get("appliance_id"), ev.get("position")
                if app is not None and isinstance(pos, int):
                    if pos < LAST_POSITION.get(app, -1):
                        STATS["out_of_order"] += 1
                    else:
                        LAST_POSITION[app] = pos

    return Handler


def blackhole(port):
    """Accepts and holds every connection; reads and drops what comes; never answers."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1024)
    srv.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ)
    while True:
        for k, _ in sel.select(timeout=1):
            if k.fileobj is srv:
                try:
                    conn, _ = srv.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(False)
                sel.register(conn, selectors.EVENT_READ)
                with LOCK:
                    STATS["connections"] += 1
                continue
            try:
                data = k.fileobj.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(k.fileobj)
                k.fileobj.close()
                continue
            with LOCK:
                STATS["requests"] += data.count(b"POST ")
                STATS["last_request_unix"] = time.time()


def main():
    global ARGS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--stats-file", required=True)
    p.add_argument("--secret-file")
    p.add_argument("--mode", choices=["fast", "blackhole"], default="fast")
    ARGS = p.parse_args()
    STATS["mode"] = ARGS.mode

    def stop(*_):
        write_stats(ARGS.stats_file)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def flusher():
        while True:
            time.sleep(0.2)
            write_stats(ARGS.stats_file)

    write_stats(ARGS.stats_file)
    threading.Thread(target=flusher, daemon=True).start()
    if ARGS.mode == "blackhole":
        blackhole(ARGS.port)
        return
    secret = open(ARGS.secret_file).read().strip()
    if not secret.startswith("whsec_"):
        sys.exit("webhook-sink: the secret does not start with whsec_")
    key = base64.b64decode(secret[len("whsec_"):])
    ThreadingHTTPServer.daemon_threads = True
    ThreadingHTTPServer.request_queue_size = 1024
    server = ThreadingHTTPServer(("127.0.0.1", ARGS.port), make_handler(key))
    server.serve_forever()


if __name__ == "__main__":
    main()
