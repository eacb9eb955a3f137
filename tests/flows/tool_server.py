"""An HTTP tool for flow tests, run in a thread of the test process: it counts side
effects per ``Idempotency-Key`` (a key seen before replays its first answer, no new
effect), and can fail, or hold a request, on demand.

Paths (POST, JSON body):
- ``/effect``: one side effect per new key; answers ``{"effect": n, "body": ...}``.
- ``/fail/<n>``: answers 503 to the first ``n`` requests (per key), then as ``/effect``.
- ``/always-fail``: always 503.
- ``/hold-after``: records the effect, then holds the answer until ``release()``.
- ``/hold-before``: holds until ``release()``; records the effect only if the caller is
  still connected then (a caller killed while held caused no side effect).
"""

from __future__ import annotations

import json
import select
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ToolServer:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[dict] = []  # every request: path, key, body
        self.effects: dict[str, dict] = {}  # key -> the answer of its one side effect
        self.failures: dict[str, int] = {}
        self.released = threading.Event()
        self.held = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                key = self.headers.get("Idempotency-Key", "")
                path = self.path
                with server.lock:
                    server.requests.append({"path": path, "key": key, "body": body})
                if path.startswith("/fail/") or path == "/always-fail":
                    limit = 10**9 if path == "/always-fail" else int(path.rsplit("/", 1)[1])
                    with server.lock:
                        seen = server.failures.get(key, 0)
                        server.failures[key] = seen + 1
                    if seen < limit:
                        return self._answer(503, {"error": "try later"})
                if path == "/hold-before":
                    server.held.set()
                    server.released.wait(60)
                    if not self._caller_connected():
                        return None
                answer = server.effect(key, body)
                if path == "/hold-after":
                    server.held.set()
                    server.released.wait(60)
                return self._answer(200, answer)

            def _caller_connected(self) -> bool:
                readable, _, _ = select.select([self.connection], [], [], 0)
                if not readable:
                    return True
                try:
                    return self.connection.recv(1, socket.MSG_PEEK) != b""
                except OSError:
                    return False

            def _answer(self, status: int, data: dict) -> None:
                payload = json.dumps(data).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def effect(self, key: str, body: dict) -> dict:
        with self.lock:
            if key and key in self.effects:
                return self.effects[key]
            answer = {"effect": len(self.effects) + 1, "body": body}
            self.effects[key or f"no-key-{len(self.effects)}"] = answer
            return answer

    def release(self) -> None:
        self.released.set()

    def stop(self) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()
