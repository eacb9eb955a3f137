"""A real local HTTP server speaking the OpenAI chat-completions protocol (non-streaming),
answering from a list of canned replies and keeping every request body it received."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ChatCompletionsServer:
    """``replies``: each a dict ``{"content": str}`` or ``{"tool_calls": [(name, args)]}``,
    answered in order; ``received``: the JSON bodies of the requests, in order."""

    def __init__(self, replies: list[dict[str, Any]]):
        self.replies = list(replies)
        self.received: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.received.append(body)
                if not self.path.endswith("/chat/completions"):
                    self.send_error(404)
                    return
                index = len(server.received) - 1
                reply = server.replies[min(index, len(server.replies) - 1)]
                message: dict[str, Any] = {"role": "assistant", "content": reply.get("content")}
                if "tool_calls" in reply:
                    message["tool_calls"] = [
                        {
                            "id": f"call_{index}_{n}",
                            "type": "function",
                            "function": {"name": name, "arguments": json.dumps(args)},
                        }
                        for n, (name, args) in enumerate(reply["tool_calls"])
                    ]
                payload = {
                    "id": f"chatcmpl-{index}",
                    "object": "chat.completion",
                    "created": 1700000000,
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": message,
                            "finish_reason": "tool_calls" if "tool_calls" in reply else "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
                }
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> ChatCompletionsServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def texts(self) -> str:
        """Everything the provider was sent, as one string (to search for data)."""
        return json.dumps(self.received)
