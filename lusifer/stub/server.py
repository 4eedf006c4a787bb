"""The HTTP side of the stub: a thread per connection, and the ``StubServer`` handle."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import socketserver
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlsplit

from lusifer.stub.api import Reply, handle_api, handle_control
from lusifer.stub.config import StubConfig
from lusifer.stub.state import CHAT_PATH, StubState


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps client connections alive, as real OpenAI-compatible servers do.
    protocol_version = "HTTP/1.1"
    server_version = "lusifer-stub/0.1"
    sys_version = ""
    # Idle keep-alive connections are closed after this; longer than httpx's 5 s pool expiry.
    timeout = 60.0
    # Headers and body go out in two writes; with Nagle on, each answer waits ~40 ms for an ACK.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def log_message(self, format: str, *args: Any) -> None:
        # Silent: the request log is the record, and stderr noise hides test failures.
        return

    def _serve(self, method: str) -> None:
        state = cast(_HTTPServer, self.server).state
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = 0
        raw = self.rfile.read(length) if length > 0 else b""
        path = urlsplit(self.path).path.rstrip("/") or "/"
        if path.startswith("/_stub/"):
            self._answer(state, handle_control(state, method, path, raw))
            return
        chat = path == CHAT_PATH
        if chat:
            state.chat_started()
        try:
            reply = handle_api(
                state,
                method,
                path,
                raw,
                self.headers.get("Authorization"),
                self.headers.get("Content-Type"),
            )
            self._answer(state, reply)
        finally:
            if chat:
                state.chat_finished()

    def _answer(self, state: StubState, reply: Reply) -> None:
        if reply.delay_s > 0:
            # Waiting on the stop event lets a stopping server cut every sleep short.
            state.stopping.wait(reply.delay_s)
        if reply.status is None:
            self._drop()
            return
        if self._client_gone():
            # The client hung up while the answer was delayed (timed out, or was killed).
            self._note(state, reply, delivered=False)
            self.close_connection = True
            return
        try:
            self._send(reply)
        except OSError:
            self._note(state, reply, delivered=False)
            raise
        self._note(state, reply, delivered=True)

    @staticmethod
    def _note(state: StubState, reply: Reply, *, delivered: bool) -> None:
        if reply.entry is not None:
            state.mark(reply.entry, delivered=delivered)

    def _client_gone(self) -> bool:
        """Whether the client closed its end: readable with nothing to read, or reset."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            peeked: bytes = self.connection.recv(1, socket.MSG_PEEK)
            return peeked == b""
        except OSError:
            return True

    def _send(self, reply: Reply) -> None:
        data = reply.raw if reply.raw is not None else json.dumps(reply.body).encode()
        self.send_response(reply.status or 200)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _drop(self) -> None:
        # Linger 0 makes close() send a RST: the client sees a reset, not a clean end.
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    # Handlers may sleep for a timeout fault; stopping must not wait for them.
    block_on_close = False
    # Many clients connect at once in benchmarks; a short backlog would refuse some.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], state: StubState) -> None:
        self.state = state
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Cut open keep-alive connections so a stopped stub answers nothing more."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by its handler
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up (timeout fault, reset, stop) is expected, not an error.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class StubServer:
    """An OpenAI-compatible stub served from a background thread; also a context manager."""

    def __init__(
        self, config: StubConfig | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._state = StubState(config or StubConfig())
        self._address = (host, port)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> StubServer:
        """Bind and start serving; the port is known when this returns."""
        if self._httpd is not None:
            raise RuntimeError("the stub server is already running")
        self._state.stopping.clear()
        httpd = _HTTPServer(self._address, self._state)
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"lusifer-stub:{httpd.server_port}",
            daemon=True,
        )
        self._httpd = httpd
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake sleeping handlers and cut open connections; idempotent."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._state.stopping.set()
        httpd.shutdown()
        httpd.server_close()
        httpd.close_connections()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> StubServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The bound port."""
        if self._httpd is None:
            raise RuntimeError("the stub server is not running; call start() first")
        return self._httpd.server_port

    @property
    def url(self) -> str:
        """The root URL, where the ``/_stub/...`` control routes live."""
        return f"http://{self._address[0]}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL to give a client, ending in ``/v1``."""
        return f"{self.url}/v1"

    @property
    def config(self) -> StubConfig:
        """The config in force."""
        return self._state.config

    def requests(self) -> list[dict[str, Any]]:
        """The request log of the OpenAI routes, oldest first."""
        return self._state.requests()

    def chat_request_count(self) -> int:
        """How many chat completion requests arrived."""
        return self._state.chat_request_count()

    def stats(self) -> dict[str, int]:
        """Chat requests in flight now and at most since start or reset."""
        return self._state.stats()

    def reset(self) -> None:
        """Clear the request log and restart the fault sequence."""
        self._state.reset()

    def update(self, **fields: Any) -> StubConfig:
        """Change config fields at run time (validated); returns the new config."""
        return self._state.update(**fields)
