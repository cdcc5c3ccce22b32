#!/usr/bin/env python3
"""A cookie-login home app on Python's http.server, for the sealed cookie jar
tests (docs/cookies.md): it authenticates with an HttpOnly session cookie,
exactly as a small web app would, and knows nothing of beeline.

    GET  /         a small page that loads /webrtc/client.js (served through
                   signal-api's relay, so it is same-origin with signaling)
    POST /login    form (user=..&password=..) or JSON {"user", "password"};
                   200 {"user"} with Set-Cookie: sid=<random>; HttpOnly;
                   Path=/; SameSite=Lax, or 401
    GET  /me       200 {"user"} with a valid sid cookie, else 401
    GET  /favicon.ico  204 (so browsers log no 404)
    POST /logout   forgets the session; Set-Cookie: sid=; Max-Age=0

Users: alice / wonderland, bob / builder.

The app listens on two ports that share one session store: the test points
signal-api's relay at one (--relay-port) and home-peer at the other
(--channel-port), so the request log can say which path each request took
without guessing from forwarding headers. Each request is appended to --log
as one JSON line:

    {"via": "channel"|"relay", "method": "GET", "path": "/me",
     "cookie": "sid=...", "user": "alice"|null, "status": 200,
     "headers": [["Host", "..."], ...]}

Prints `listening relay=<port> channel=<port>` once both accept connections.

The page: `window.__client` is the beeline client. With `?hold` in its URL
the page holds its WebRTC offer until `window.__releaseSetup()` is called,
so a test can make requests on the normal path after the session (and its
cookie jar) exists but before the channel opens.
"""

import argparse
import json
import secrets
import sys
import threading
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs

from plain_upstream import Server

USERS = {"alice": "wonderland", "bob": "builder"}
SESSIONS = {}  # sid -> user
LOCK = threading.Lock()

PAGE = b"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>cookie app</title></head>
<body>
<p>cookie app <span id="beeline-indicator" hidden></span></p>
<script type="module">
import { createClient } from '/webrtc/client.js';
const options = { enabled: true, signalBase: '/webrtc', indicator: '#beeline-indicator' };
if (new URLSearchParams(location.search).has('hold')) {
  let release;
  const released = new Promise((resolve) => { release = resolve; });
  window.__releaseSetup = release;
  options.budgetMs = 30000;
  options.signalFetch = async (url, init) => {
    if (typeof init?.body === 'string' && JSON.parse(init.body).type === 'offer') await released;
    return fetch(url, init);
  };
}
window.__client = createClient(options);
</script>
</body>
</html>
"""


def session_of(cookie_header):
    """The sid cookie's user, or None."""
    for part in (cookie_header or "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == "sid":
            with LOCK:
                user = SESSIONS.get(value)
            if user:
                return value, user
    return None, None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    log_path = None
    via = None

    def log_message(self, format, *args):  # the JSON log is the record
        pass

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _answer(self, status, payload, content_type="application/json", cookies=(), user=None):
        # The record is written before the answer: a test reads the log as
        # soon as its response arrives.
        record = {
            "via": self.via,
            "method": self.command,
            "path": self.path,
            "cookie": self.headers.get("Cookie"),
            "user": user,
            "status": status,
            "headers": [[k, v] for k, v in self.headers.items()],
        }
        if self.log_path:
            with LOCK, open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        out = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(out)))
        self.send_header("Cache-Control", "no-store")
        for cookie in cookies:
            self.send_header("Set-Cookie", cookie)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._answer(200, PAGE, "text/html; charset=utf-8")
        elif path == "/favicon.ico":
            self._answer(204, b"", "image/x-icon")
        elif path == "/me":
            _, user = session_of(self.headers.get("Cookie"))
            if user:
                self._answer(200, {"user": user}, user=user)
            else:
                self._answer(401, {"error": "log in first"})
        else:
            self._answer(404, {"error": "no such page"})

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        body = self._body()
        if path == "/login":
            kind = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            try:
                if kind == "application/json":
                    fields = json.loads(body or b"{}")
                else:
                    fields = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            except (ValueError, UnicodeDecodeError):
                fields = {}
            user, password = fields.get("user"), fields.get("password")
            if not isinstance(user, str) or USERS.get(user) != password:
                self._answer(401, {"error": "wrong user or password"})
                return
            sid = secrets.token_urlsafe(24)
            with LOCK:
                SESSIONS[sid] = user
            self._answer(200, {"user": user}, cookies=[f"sid={sid}; HttpOnly; Path=/; SameSite=Lax"], user=user)
        elif path == "/logout":
            sid, user = session_of(self.headers.get("Cookie"))
            if sid:
                with LOCK:
                    SESSIONS.pop(sid, None)
            self._answer(200, {"user": None}, cookies=["sid=; HttpOnly; Path=/; SameSite=Lax; Max-Age=0"], user=user)
        else:
            self._answer(404, {"error": "no such endpoint"})


def serve(host, port, via, log):
    handler = type(f"{via.title()}Handler", (Handler,), {"via": via, "log_path": log})
    server = Server((host, port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--relay-port", type=int, default=0)
    p.add_argument("--channel-port", type=int, default=0)
    p.add_argument("--log")
    a = p.parse_args()
    relay = serve(a.host, a.relay_port, "relay", a.log)
    channel = serve(a.host, a.channel_port, "channel", a.log)
    print(f"listening relay={relay} channel={channel}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
