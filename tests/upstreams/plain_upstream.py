#!/usr/bin/env python3
"""A home service built on Python's http.server, which does not read chunked
request bodies: it reads exactly `Content-Length` bytes, or nothing.

Every request, whatever its method and path, is answered with a JSON echo of
what arrived, and appended as one JSON line to the request log (--log), so a
test can check the body and the headers the home service really saw:

    {"method": "POST", "path": "/x?y=1", "headers": [["Host", "..."], ...],
     "body_len": 5, "body_sha256": "...", "body_b64": "aGVsbG8=",
     "chunked": false}

`body_b64` is present up to 1 MiB. A request sent with
`Transfer-Encoding: chunked` is echoed with `chunked: true` and an empty body,
as the small servers this stands in for would see it.

Usage: plain_upstream.py [--host 127.0.0.1] [--port 0] [--log FILE]
Prints `listening <port>` on stdout once it accepts connections.
"""

import argparse
import base64
import hashlib
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Server(ThreadingHTTPServer):
    """http.server with a real service's accept queue: its default of 5
    overflows when a bridge opens many upstream connections at once, and
    each dropped SYN waits 1, 3, 7, 15, 31 s for a retry."""

    request_queue_size = 128
    daemon_threads = True

LOG_LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    log_path = None

    def log_message(self, format, *args):  # quiet: the JSON log is the record
        pass

    def _echo(self):
        length = self.headers.get("Content-Length")
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        body = b""
        if length is not None:
            try:
                body = self.rfile.read(int(length))
            except ValueError:
                self.send_error(400, "bad Content-Length")
                return
        record = {
            "method": self.command,
            "path": self.path,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "chunked": chunked,
        }
        if len(body) <= 1 << 20:
            record["body_b64"] = base64.b64encode(body).decode()
        if self.log_path:
            with LOG_LOCK, open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        out = json.dumps(record).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        if chunked:
            # The unread chunked body is still on the socket.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _echo


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--log")
    a = p.parse_args()
    Handler.log_path = a.log
    server = Server((a.host, a.port), Handler)
    print(f"listening {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
