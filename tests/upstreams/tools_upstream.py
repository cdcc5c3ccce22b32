#!/usr/bin/env python3
"""The home service the proxy tests talk to, on Python's http.server (which
reads no chunked request body): plain_upstream.py's echo for every path,
plus what curl and the OpenAI SDK are tested against:

- an OpenAI-compatible stand-in: `GET /v1/models`, `POST /v1/chat/completions`
  (JSON, or `"stream": true` for OpenAI's SSE format: one `chat.completion.chunk`
  per word, `--token-ms` apart, then `data: [DONE]`);
- `GET /test/sse?n=5&interval_ms=200`: n events, each sent (and flushed) when
  it is made, stamped with the send time;
- `GET /test/bytes?size=N&seed=S`: N deterministic bytes (a 1 MiB block from
  the seed, repeated) with Content-Length;
- `GET /test/status?code=204`: that status, no body;
- `GET /test/slow?id=X&interval_ms=50&ticks=600`: a line per tick; when the
  client goes away the time is recorded, and `GET /test/outcome?id=X` tells
  `{"started": t, "disconnected": t|null, "completed": bool}` (Unix seconds).

Usage: tools_upstream.py [--port 0] [--log FILE] [--token-ms 20]
Prints `listening <port>` once it accepts connections.
"""

import argparse
import json
import random
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, __import__("os").path.dirname(__file__))
import plain_upstream  # noqa: E402

OUTCOMES = {}
OUTCOMES_LOCK = threading.Lock()
BLOCKS = {}


def block(seed):
    if seed not in BLOCKS:
        BLOCKS[seed] = random.Random(seed).randbytes(1 << 20)
    return BLOCKS[seed]


class Handler(plain_upstream.Handler):
    token_ms = 20

    def _json(self, status, obj):
        out = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    def _stream_head(self, content_type):
        # HTTP/1.1 without a length: the body ends when the connection does.
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _send(self, text):
        self.wfile.write(text.encode() if isinstance(text, str) else text)
        self.wfile.flush()

    def _route(self):
        url = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        path = url.path
        if path == "/v1/models" and self.command == "GET":
            return self._json(200, {"object": "list", "data": [
                {"id": "beeline-test", "object": "model", "created": 0, "owned_by": "beeline"}]})
        if path == "/v1/chat/completions" and self.command == "POST":
            return self._completions()
        if path == "/test/sse":
            n, interval = int(q.get("n", 5)), int(q.get("interval_ms", 200)) / 1000
            self._stream_head("text/event-stream")
            for i in range(n):
                if i:
                    time.sleep(interval)
                self._send(f"data: {{\"i\": {i}, \"sent\": {time.time():.6f}}}\n\n")
            return None
        if path == "/test/bytes":
            size, seed = int(q.get("size", 0)), int(q.get("seed", 1))
            data = block(seed)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            if self.command == "HEAD":
                return None
            left = size
            while left > 0:
                piece = data[: min(left, len(data))]
                self.wfile.write(piece)
                left -= len(piece)
            return None
        if path == "/test/status":
            # A status without a body (204, 304) or with one.
            code = int(q.get("code", 204))
            self.send_response(code)
            if code not in (204, 304):
                self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if path == "/test/slow":
            return self._slow(q)
        if path == "/test/outcome":
            with OUTCOMES_LOCK:
                return self._json(200, OUTCOMES.get(q.get("id", ""), {}))
        return False

    def _slow(self, q):
        sid = q.get("id", "")
        interval, ticks = int(q.get("interval_ms", 50)) / 1000, int(q.get("ticks", 600))
        record = {"started": time.time(), "disconnected": None, "completed": False}
        with OUTCOMES_LOCK:
            OUTCOMES[sid] = record
        self._stream_head("text/plain")
        try:
            for i in range(ticks):
                self._send(f"tick {i}\n")
                time.sleep(interval)
            record["completed"] = True
        except (BrokenPipeError, ConnectionResetError):
            record["disconnected"] = time.time()
        return None

    def _completions(self):
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}")
        last = request.get("messages", [{}])[-1].get("content", "")
        words = f"You said: {last}".split(" ")
        model = request.get("model", "beeline-test")
        if not request.get("stream"):
            return self._json(200, {
                "id": "chatcmpl-beeline", "object": "chat.completion", "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": " ".join(words)}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": len(words), "total_tokens": 1 + len(words)},
            })
        self._stream_head("text/event-stream")

        def chunk(delta, finish=None):
            return "data: " + json.dumps({
                "id": "chatcmpl-beeline", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }) + "\n\n"

        self._send(chunk({"role": "assistant", "content": ""}))
        for i, w in enumerate(words):
            time.sleep(self.token_ms / 1000)
            self._send(chunk({"content": (" " if i else "") + w}))
        self._send(chunk({}, "stop"))
        self._send("data: [DONE]\n\n")
        return None

    def _dispatch(self):
        if self._route() is False:
            self._echo()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--log")
    p.add_argument("--token-ms", type=int, default=20)
    a = p.parse_args()
    Handler.log_path = a.log
    Handler.token_ms = a.token_ms
    server = plain_upstream.Server((a.host, a.port), Handler)
    print(f"listening {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
