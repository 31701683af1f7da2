"""Real HTTP(S) listeners on 127.0.0.1 that record what reaches them, for delivery tests."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


# A behaviour writes the whole response; it gets the handler and the receiver.
Behaviour = Callable[[BaseHTTPRequestHandler, "Receiver"], None]


def reply(status: int, body: bytes = b"ok", headers: dict[str, str] | None = None) -> Behaviour:
    def respond(handler: BaseHTTPRequestHandler, receiver: Receiver) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return respond


def stall(handler: BaseHTTPRequestHandler, receiver: Receiver) -> None:
    """Never answer (until the test ends)."""
    receiver.released.wait(10)


def stall_body(handler: BaseHTTPRequestHandler, receiver: Receiver) -> None:
    """Complete headers promising a body that never comes."""
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
    handler.wfile.flush()
    receiver.released.wait(10)


def trickle_headers(handler: BaseHTTPRequestHandler, receiver: Receiver) -> None:
    """A slow-loris reply: one header byte every 50 ms, never finishing the headers."""
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    handler.wfile.flush()
    while not receiver.released.wait(0.05):
        try:
            handler.wfile.write(b"a")
            handler.wfile.flush()
        except OSError:
            return


def endless_body(handler: BaseHTTPRequestHandler, receiver: Receiver) -> None:
    """A 200 whose close-delimited body never ends (bounded here at 64 MB)."""
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
    chunk = b"x" * 65536
    try:
        for _ in range(1024):
            handler.wfile.write(chunk)
            if receiver.released.is_set():
                return
    except OSError:
        return


@dataclass
class Receiver:
    behaviour: Behaviour = field(default_factory=lambda: reply(200))
    tls: ssl.SSLContext | None = None
    requests: list[RecordedRequest] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                receiver.requests.append(
                    RecordedRequest(
                        self.command,
                        self.path,
                        {k.lower(): v for k, v in self.headers.items()},
                        body,
                    )
                )
                receiver.behaviour(self, receiver)
                self.close_connection = True

            do_POST = do_GET = do_PUT = _record

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    def url(self, path: str = "/hook", host: str = "127.0.0.1") -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    """A loopback port with (almost certainly) nothing listening on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
