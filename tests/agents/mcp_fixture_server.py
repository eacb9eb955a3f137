"""A real MCP server (the SDK's MCPServer) for connector tests: streamable HTTP in a thread, or stdio.

``RunningMCPServer(build_server(), token=...)`` serves on 127.0.0.1 with a free port and
records the ``Authorization`` headers it receives; tests change the tool set between syncs
with ``server.mcp.add_tool`` / ``remove_tool``. Run this file as a script to serve the same
tools over stdio.
"""

from __future__ import annotations

import socket
import threading
import time

import anyio
import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel
from starlette.responses import PlainTextResponse


class Sum(BaseModel):
    sum: int


def add(a: int, b: int) -> Sum:
    """Add two integers."""
    return Sum(sum=a + b)


def add_three(a: int, b: int, c: int = 0) -> Sum:
    """Add two or three integers."""
    return Sum(sum=a + b + c)


def greet(name: str) -> str:
    """Greet someone by name."""
    return f"hello {name}"


def shout(text: str) -> str:
    """Upper-case the text (served as text content only, no structured content)."""
    return text.upper()


def refuse(reason: str) -> str:
    """Always fails, with the given reason."""
    raise ToolError(f"refused: {reason}")


# Arguments of every call of ``slow`` the in-thread server received (timeout tests).
slow_calls: list[float] = []


async def slow(seconds: float) -> str:
    """Answer after ``seconds``."""
    slow_calls.append(seconds)
    await anyio.sleep(seconds)
    return "done"


def nine_lives() -> str:
    """A tool whose name is not a valid registry tool name (starts with a digit)."""
    return "meow"


def build_server() -> MCPServer:
    server = MCPServer("fixture", log_level="WARNING")
    server.add_tool(add, annotations=ToolAnnotations(read_only_hint=True))
    server.add_tool(greet)
    server.add_tool(shout, structured_output=False)
    server.add_tool(refuse, annotations=ToolAnnotations(destructive_hint=False))
    server.add_tool(slow, annotations=ToolAnnotations(read_only_hint=True))
    server.add_tool(nine_lives, name="9lives")
    return server


class _BearerCheck:
    """ASGI wrapper: records each request's Authorization header; 401 unless it matches."""

    def __init__(self, app, token: str, seen: list[str]):
        self.app, self.token, self.seen = app, token, seen

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            auth = dict(scope["headers"]).get(b"authorization", b"").decode()
            self.seen.append(auth)
            if self.token and auth != f"Bearer {self.token}":
                await PlainTextResponse("unauthorized", status_code=401)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class RunningMCPServer:
    """``mcp`` served over streamable HTTP by uvicorn in a daemon thread (context manager)."""

    def __init__(self, mcp: MCPServer, *, token: str = ""):
        self.mcp = mcp
        self.authorization_headers: list[str] = []
        app = _BearerCheck(mcp.streamable_http_app(), token, self.authorization_headers)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def __enter__(self) -> RunningMCPServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the MCP fixture server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()


if __name__ == "__main__":
    build_server().run("stdio")
