"""A real local HTTP server that records JSON POSTs: webhooks of the notification tests,
the HTTP tool of the end-to-end tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Recorder:
    """``statuses``: the answers to give, in order (then 200); ``received``: JSON bodies."""

    statuses: list[int] = field(default_factory=list)
    received: list[dict] = field(default_factory=list)
    url: str = ""


@contextmanager
def webhook_server(statuses: list[int] | None = None) -> Iterator[Recorder]:
    recorder = Recorder(statuses=list(statuses or []))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            recorder.received.append(body)
            status = recorder.statuses.pop(0) if recorder.statuses else 200
            data = json.dumps({"ok": status < 400}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    recorder.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
