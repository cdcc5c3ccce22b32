#!/usr/bin/env python3
"""beeline-proxy as its users meet it: curl and the official OpenAI Python
SDK pointed at a local port that tunnels home over the data channel.

Run by tests/proxy/run.sh inside a network namespace with only loopback:
signal-api, home-peer and beeline-proxy are the real binaries; the home
service is tests/upstreams/tools_upstream.py (Python's http.server, which
reads no chunked request body). Every wait is bounded.
"""

import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
BIN = os.environ.get("BEELINE_BIN_DIR", os.path.join(REPO, "target", "debug"))
UPSTREAMS = os.path.join(REPO, "tests", "upstreams")
TOKEN = "proxy-test-home-token"
LOOPBACK = "127.0.0.1"

SIGNAL_PORT = 18080
UPSTREAM_PORT = 18765
PROXY_PORT = 18000          # with --relay-url
PROXY_NO_RELAY_PORT = 18001  # without, short setup budget
SETUP_BUDGET_S = 8.0
MAX_BODY = 200_000_000

SIGNAL_URL = f"http://{LOOPBACK}:{SIGNAL_PORT}"
UPSTREAM_URL = f"http://{LOOPBACK}:{UPSTREAM_PORT}"
PROXY_URL = f"http://{LOOPBACK}:{PROXY_PORT}"
PROXY_NO_RELAY_URL = f"http://{LOOPBACK}:{PROXY_NO_RELAY_PORT}"


def wait_http(url, timeout=20.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{url} did not answer within {timeout} s")


def get_json(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def curl(*args, timeout=120, input=None):
    """Runs curl; returns (exit code, stdout bytes, stderr text)."""
    p = subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=timeout, input=input)
    return p.returncode, p.stdout, p.stderr.decode(errors="replace")


def header_values(echo, name):
    return [v for k, v in echo["headers"] if k.lower() == name.lower()]


class Stack:
    """The processes of one run; each can be stopped and started again."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="beeline-proxy-test-")
        self.procs = {}
        self.logs = {}
        self.upstream_log = os.path.join(self.dir, "upstream.jsonl")

    def spawn(self, name, argv, env=None):
        full_env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "info"), **(env or {}))
        with open(os.path.join(self.dir, f"{name}.log"), "ab") as log:
            self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=full_env)
            self.logs[name] = log.name

    def stop(self, name, sig=signal.SIGTERM):
        p = self.procs.pop(name, None)
        if p and p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def start_upstream(self):
        self.spawn("upstream", [sys.executable, os.path.join(UPSTREAMS, "tools_upstream.py"),
                                "--host", LOOPBACK, "--port", str(UPSTREAM_PORT),
                                "--log", self.upstream_log, "--token-ms", "40"])
        wait_http(f"{UPSTREAM_URL}/v1/models")

    def start_signal(self):
        self.spawn("signal-api", [os.path.join(BIN, "signal-api"),
                                  "--listen", f"{LOOPBACK}:{SIGNAL_PORT}",
                                  "--db", os.path.join(self.dir, "signal.db"),
                                  "--home-token", TOKEN, "--browser-auth", "open",
                                  "--relay-upstream", UPSTREAM_URL])
        wait_http(f"{SIGNAL_URL}/webrtc/client.js")

    def start_home(self):
        self.spawn("home-peer", [os.path.join(BIN, "home-peer"),
                                 "--signal-url", f"{SIGNAL_URL}/webrtc", "--token", TOKEN,
                                 "--upstream", UPSTREAM_URL, "--allow-ip", LOOPBACK,
                                 "--max-body-bytes", str(MAX_BODY),
                                 "--strip-header", "X-Auth-Token"])

    def start_proxy(self, name, port, extra):
        self.spawn(name, [os.path.join(BIN, "beeline-proxy"),
                          "--signal-url", f"{SIGNAL_URL}/webrtc",
                          "--listen", f"{LOOPBACK}:{port}", "--allow-ip", LOOPBACK, *extra])
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection((LOOPBACK, port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"{name} did not listen")

    def log_text(self, name):
        with open(self.logs[name], "rb") as f:
            return f.read().decode(errors="replace")

    def close(self):
        for name in list(self.procs):
            self.stop(name, signal.SIGKILL)


STACK = None


def setUpModule():
    global STACK
    STACK = Stack()
    STACK.start_upstream()
    STACK.start_signal()
    STACK.start_home()
    STACK.start_proxy("proxy", PROXY_PORT, ["--relay-url", SIGNAL_URL])
    # The proxy logs the path it took once its first attempt ends.
    deadline = time.time() + 15
    while "direct path open" not in STACK.log_text("proxy"):
        if time.time() > deadline:
            raise AssertionError("the proxy opened no direct path:\n" + STACK.log_text("proxy"))
        time.sleep(0.05)


def tearDownModule():
    if STACK:
        STACK.close()
        if os.environ.get("BEELINE_KEEP_LOGS"):
            print(f"logs in {STACK.dir}", file=sys.stderr)
        else:
            shutil.rmtree(STACK.dir, ignore_errors=True)


def expected_bytes(size, seed):
    block = random.Random(seed).randbytes(1 << 20)
    h = hashlib.sha256()
    left = size
    while left:
        piece = block[: min(left, len(block))]
        h.update(piece)
        left -= len(piece)
    return h.hexdigest()


def listen_overflows():
    """The namespace's count of connections a full accept queue dropped."""
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split()))["ListenOverflows"])
    return 0


class ProxyTest(unittest.TestCase):
    def test_methods_and_exact_bodies(self):
        """GET, POST, PUT, DELETE: the http.server home service receives each
        body whole, with Content-Length and without chunked encoding."""
        body = os.urandom(150_000)
        with tempfile.NamedTemporaryFile() as f:
            f.write(body)
            f.flush()
            for method in ["GET", "POST", "PUT", "DELETE"]:
                args = ["-X", method, f"{PROXY_URL}/things/1?x=y"]
                if method in ("POST", "PUT"):
                    args += ["--data-binary", f"@{f.name}", "-H", "Content-Type: application/octet-stream"]
                code, out, err = curl(*args)
                self.assertEqual(code, 0, err)
                echo = json.loads(out)
                self.assertEqual(echo["method"], method)
                self.assertEqual(echo["path"], "/things/1?x=y")
                self.assertFalse(echo["chunked"], echo)
                if method in ("POST", "PUT"):
                    self.assertEqual(header_values(echo, "content-length"), [str(len(body))])
                    self.assertEqual(echo["body_sha256"], hashlib.sha256(body).hexdigest())
                else:
                    self.assertEqual(echo["body_len"], 0)

    def test_expect_100_continue_and_empty_post(self):
        code, out, err = curl("-H", "Expect: 100-continue", "--data-binary", "hello there",
                              f"{PROXY_URL}/expect")
        self.assertEqual(code, 0, err)
        echo = json.loads(out)
        self.assertEqual(base64_body(echo), b"hello there")
        self.assertEqual(header_values(echo, "expect"), [])
        code, out, err = curl("-X", "POST", f"{PROXY_URL}/empty")
        echo = json.loads(out)
        self.assertEqual(header_values(echo, "content-length"), ["0"])

    def test_head_204_304(self):
        code, out, err = curl("-I", f"{PROXY_URL}/test/bytes?size=1234&seed=3")
        self.assertEqual(code, 0, err)
        head = out.decode().lower()
        self.assertIn("200", head.splitlines()[0])
        self.assertIn("content-length: 1234", head)
        for status in (204, 304):
            code, out, err = curl("-i", f"{PROXY_URL}/test/status?code={status}", timeout=20)
            self.assertEqual(code, 0, err)
            text = out.decode()
            self.assertIn(str(status), text.splitlines()[0])
            self.assertEqual(text.split("\r\n\r\n", 1)[1], "")

    def test_sse_events_arrive_as_sent(self):
        """curl -N prints each event when the home service sends it."""
        p = subprocess.Popen(["curl", "-sSN", f"{PROXY_URL}/test/sse?n=5&interval_ms=300"],
                             stdout=subprocess.PIPE)
        arrivals = []
        try:
            for line in p.stdout:
                if line.startswith(b"data: "):
                    event = json.loads(line[6:])
                    arrivals.append((event["i"], event["sent"], time.time()))
        finally:
            p.wait(timeout=20)
            p.stdout.close()
        self.assertEqual([a[0] for a in arrivals], [0, 1, 2, 3, 4])
        delays = [arrived - sent for _, sent, arrived in arrivals]
        print(f"\n  SSE through the proxy: first event {delays[0] * 1e3:.1f} ms after it was sent, "
              f"worst {max(delays) * 1e3:.1f} ms", file=sys.stderr)
        # Each event arrives long before the next is even made (300 ms).
        self.assertLess(delays[0], 0.15, delays)
        self.assertLess(max(delays), 0.15, delays)

    def test_100mb_download_is_byte_identical(self):
        size, seed = 100_000_000, 7
        started = time.time()
        p = subprocess.Popen(["curl", "-sS", f"{PROXY_URL}/test/bytes?size={size}&seed={seed}"],
                             stdout=subprocess.PIPE)
        h, n = hashlib.sha256(), 0
        for piece in iter(lambda: p.stdout.read(1 << 20), b""):
            h.update(piece)
            n += len(piece)
        self.assertEqual(p.wait(timeout=300), 0)
        p.stdout.close()
        secs = time.time() - started
        print(f"\n  100 MB download through the proxy: {size / secs / 1e6:.1f} MB/s", file=sys.stderr)
        self.assertEqual(n, size)
        self.assertEqual(h.hexdigest(), expected_bytes(size, seed))

    def test_100mb_upload_is_byte_identical(self):
        size = 100_000_000
        with tempfile.NamedTemporaryFile() as f:
            h = hashlib.sha256()
            rng = random.Random(11)
            for _ in range(size // (1 << 20)):
                piece = rng.randbytes(1 << 20)
                h.update(piece)
                f.write(piece)
            tail = rng.randbytes(size % (1 << 20))
            h.update(tail)
            f.write(tail)
            f.flush()
            started = time.time()
            code, out, err = curl("-T", f.name, f"{PROXY_URL}/upload", timeout=300)
            secs = time.time() - started
        self.assertEqual(code, 0, err)
        echo = json.loads(out)
        print(f"\n  100 MB upload through the proxy: {size / secs / 1e6:.1f} MB/s", file=sys.stderr)
        self.assertFalse(echo["chunked"])
        self.assertEqual(header_values(echo, "content-length"), [str(size)])
        self.assertEqual(echo["body_len"], size)
        self.assertEqual(echo["body_sha256"], h.hexdigest())

    def test_killing_curl_cancels_the_upstream_request(self):
        sid = f"kill-{time.time()}"
        p = subprocess.Popen(["curl", "-sSN", f"{PROXY_URL}/test/slow?id={sid}&interval_ms=20&ticks=3000"],
                             stdout=subprocess.PIPE)
        for _ in range(3):
            self.assertTrue(p.stdout.readline().startswith(b"tick"))
        killed = time.time()
        p.kill()
        p.wait()
        p.stdout.close()
        deadline = killed + 5
        outcome = {}
        while time.time() < deadline:
            outcome = get_json(f"{UPSTREAM_URL}/test/outcome?id={sid}")
            if outcome.get("disconnected"):
                break
            time.sleep(0.01)
        self.assertTrue(outcome.get("disconnected"), f"the upstream request still runs: {outcome}")
        latency = outcome["disconnected"] - killed
        print(f"\n  curl killed → upstream request cancelled in {latency * 1e3:.0f} ms "
              f"(the upstream notices at its next 20 ms tick)", file=sys.stderr)
        self.assertLess(latency, 1.0)

    def test_openai_sdk(self):
        """The official SDK, base_url at the proxy, against a stand-in."""
        from openai import OpenAI

        client = OpenAI(base_url=f"{PROXY_URL}/v1", api_key="sk-test", max_retries=0, timeout=30)
        models = [m.id for m in client.models.list()]
        self.assertEqual(models, ["beeline-test"])
        prompt = "hello from the couch"
        expected = f"You said: {prompt}"
        done = client.chat.completions.create(model="beeline-test",
                                              messages=[{"role": "user", "content": prompt}])
        self.assertEqual(done.choices[0].message.content, expected)
        stream = client.chat.completions.create(model="beeline-test", stream=True,
                                                messages=[{"role": "user", "content": prompt}])
        pieces, times = [], []
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
                times.append(time.time())
        self.assertEqual("".join(pieces), expected)
        self.assertEqual(len(pieces), len(expected.split(" ")))
        # Chunk by chunk: the tokens are 40 ms apart at the source, so the
        # arrivals must spread out instead of landing together at the end.
        spread = times[-1] - times[0]
        self.assertGreater(spread, 0.04 * (len(pieces) - 1) * 0.6, times)

    def test_forwarding_headers_are_true_and_identity_cannot_be_forged(self):
        forged = ["X-Forwarded-For: 10.9.9.9", "x-forwarded-for: 10.8.8.8", "X-Forwarded-Proto: https",
                  "X-FORWARDED-PROTO: gopher", "X-Forwarded-Host: evil.example", "X-Forwarded-User: admin",
                  "X-Real-IP: 10.7.7.7", "Forwarded: for=10.6.6.6", "X-Auth-Token: me"]
        args = []
        for h in forged:
            args += ["-H", h]
        code, out, err = curl(*args, f"{PROXY_URL}/whoami")
        self.assertEqual(code, 0, err)
        echo = json.loads(out)
        self.assertEqual(header_values(echo, "x-forwarded-for"), [LOOPBACK])
        self.assertEqual(header_values(echo, "x-forwarded-proto"), ["http"])
        self.assertEqual(header_values(echo, "x-forwarded-host"), [f"{LOOPBACK}:{PROXY_PORT}"])
        for name in ["x-forwarded-user", "x-real-ip", "forwarded", "x-auth-token"]:
            self.assertEqual(header_values(echo, name), [], name)

    def test_prefix_escapes_are_refused(self):
        for path in ["/../admin", "/%2e%2e/admin", "/a/%2E%2E/%2e%2e/admin"]:
            code, out, err = curl("--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", f"{PROXY_URL}{path}")
            self.assertEqual(out.decode(), "400", path)

    def test_bad_input(self):
        # A head over the home's limit: 431.
        code, out, err = curl("-o", "/dev/null", "-w", "%{http_code}", "-H", "X-Big: " + "a" * 20_000,
                              f"{PROXY_URL}/big-head")
        self.assertEqual(out.decode(), "431")
        # A body over the home's limit: 413, and the upload stops.
        with tempfile.NamedTemporaryFile() as f:
            f.truncate(MAX_BODY + 1_000_000)
            started = time.time()
            code, out, err = curl("-o", "-", "-w", "\n%{http_code}", "-T", f.name, f"{PROXY_URL}/too-big", timeout=60)
            text = out.decode()
            self.assertTrue(text.endswith("\n413"), text)
            self.assertIn("body_too_large", text)
            self.assertLess(time.time() - started, 10)
        # Bytes that are not HTTP: 400, and the proxy keeps serving.
        s = socket.create_connection((LOOPBACK, PROXY_PORT), timeout=5)
        s.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        reply = s.recv(1024)
        s.close()
        self.assertTrue(reply.startswith(b"HTTP/1.1 400"), reply)
        code, out, err = curl(f"{PROXY_URL}/after-bad-input")
        self.assertEqual(code, 0, err)

    def test_100_concurrent_requests_on_one_channel(self):
        results = [None] * 100

        def one(i):
            try:
                with urllib.request.urlopen(f"{PROXY_URL}/test/sse?n=2&interval_ms=1000", timeout=30) as r:
                    results[i] = (r.status, r.read().count(b"data: "))
            except Exception as e:  # noqa: BLE001
                results[i] = ("error", str(e))

        overflows = listen_overflows()
        started = time.time()
        threads = [threading.Thread(target=one, args=(i,)) for i in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        took = time.time() - started
        # A full accept queue (the proxy's, or the home service's) drops
        # SYNs, and each waits 1, 3, 7, 15 s for a retry.
        dropped = listen_overflows() - overflows
        self.assertEqual(results, [(200, 2)] * 100, f"{dropped} connections dropped by a full accept queue")
        # Each takes 1 s: run one after another they would take 100 s.
        self.assertLess(took, 8, f"took {took:.1f} s; {dropped} connections dropped by a full accept queue")
        sessions = STACK.log_text("proxy").count("direct path open")
        self.assertEqual(sessions, 1, "the proxy reconnected during the test")

    def test_a_window_out_of_range_is_refused_at_start(self):
        for window in ("1000", "20000000", "lots"):
            p = subprocess.run([os.path.join(BIN, "beeline-proxy"), "--signal-url", SIGNAL_URL,
                                "--listen", f"{LOOPBACK}:0", "--window", window],
                               capture_output=True, timeout=20)
            err = p.stderr.decode(errors="replace")
            self.assertNotEqual(p.returncode, 0, f"--window {window} was taken: {err}")
            self.assertIn("--window", err)


def base64_body(echo):
    import base64
    return base64.b64decode(echo["body_b64"])


class RestartTest(unittest.TestCase):
    """Runs last (unittest sorts classes by name: ProxyTest, RestartTest)."""

    def test_restart_home_peer_under_load(self):
        # In flight: streams whose heads have arrived.
        inflight = []
        for i in range(3):
            p = subprocess.Popen(["curl", "-sSN", "-o", "/dev/null", "-w", "%{http_code}",
                                  f"{PROXY_URL}/test/slow?id=restart-{i}&interval_ms=50&ticks=400"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            inflight.append(p)
        time.sleep(0.5)
        results = []
        stop = threading.Event()

        def arrivals():
            n = 0
            while not stop.is_set() and n < 200:
                started = time.time()
                code, out, err = curl("-o", "/dev/null", "-w", "%{http_code}", "-m", "30",
                                      f"{PROXY_URL}/test/sse?n=1", timeout=40)
                results.append((started, time.time() - started, code, out.decode(), err))
                n += 1
                time.sleep(0.1)

        t = threading.Thread(target=arrivals)
        t.start()
        time.sleep(0.5)
        restarted = time.time()
        STACK.stop("home-peer", signal.SIGKILL)
        time.sleep(1.0)
        STACK.start_home()
        time.sleep(SETUP_BUDGET_S + 3)
        stop.set()
        t.join(timeout=60)
        # The streams in flight fail with an error curl reports.
        for p in inflight:
            out, err = p.communicate(timeout=SETUP_BUDGET_S + 5)
            self.assertNotEqual(p.returncode, 0, f"an in-flight stream finished normally: {err}")
        after = [r for r in results if r[0] >= restarted]
        self.assertGreater(len(after), 5)
        worst = max(r[1] for r in results)
        failed = [r for r in results if r[2] != 0 or r[3] != "200"]
        print(f"\n  restart: {len(results)} requests during the restart, worst {worst:.2f} s, "
              f"{len(failed)} failed", file=sys.stderr)
        self.assertEqual(failed, [])
        self.assertLess(worst, SETUP_BUDGET_S + 1.0)
        # The proxy found the new home peer.
        self.assertGreaterEqual(STACK.log_text("proxy").count("direct path open"), 2)

    def test_without_relay_a_request_gets_502_json(self):
        STACK.stop("home-peer", signal.SIGKILL)
        try:
            STACK.start_proxy("proxy-no-relay", PROXY_NO_RELAY_PORT, ["--setup-budget-ms", "1500"])
            started = time.time()
            code, out, err = curl("-w", "\n%{http_code}", f"{PROXY_NO_RELAY_URL}/anything", timeout=30)
            took = time.time() - started
            body, status = out.decode().rsplit("\n", 1)
            self.assertEqual(status, "502")
            error = json.loads(body)
            self.assertIn(error["error"], ("unavailable", "setup_timeout"))
            self.assertTrue(error["message"])
            self.assertLess(took, 1.5 * 2 + 1)
        finally:
            STACK.stop("proxy-no-relay")
            STACK.start_home()


if __name__ == "__main__":
    unittest.main()
