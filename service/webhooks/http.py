"""One webhook delivery attempt over HTTP(S), pinned to a checked address.

``deliver`` resolves the endpoint's host once, refuses unless every address passes the
SSRF policy, then opens the TCP connection to that checked address itself: the HTTP client
never sees a name it could look up again, so DNS rebinding has no window. The URL's host
still goes out as ``Host`` and, for HTTPS, as SNI and the name the certificate must match.

Redirects are never followed (a 3xx is a failed attempt, recorded with its ``Location``).
The whole attempt (connect, send, response) shares one ``timeout_seconds`` budget, and at
most ``max_response_body_bytes`` of the response body is read. Network failures never
raise; they come back as ``DeliveryResult.error``.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import heapq
import http.client
import itertools
import os
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from service.webhooks.settings import WebhookSettings
from service.webhooks.ssrf import Resolver, UnsafeWebhookURL, ValidatedURL, validate_webhook_url

# Headers that describe the connection or the framing are ours to set, not the caller's.
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_RETRY_AFTER_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class DeliveryResult:
    status_code: int | None  # None when no HTTP response was received
    ok: bool  # a complete 2xx response within the timeout
    latency_ms: float
    response_body: str  # at most max_response_body_bytes, decoded leniently, NULs stripped
    error: str | None  # e.g. "timeout", "connection refused", "blocked address: loopback"
    retry_after_seconds: float | None = None  # from Retry-After on a 429 or 503
    gone: bool = False  # 410: the receiver asks us to stop (Standard Webhooks)
    connected_ip: str | None = None  # the checked address the connection went to
    location: str | None = None  # a 3xx's Location, recorded, never followed


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After value: delta-seconds or an HTTP-date."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" dates come back naive; HTTP-dates are always GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


@functools.cache
def _default_tls_context() -> ssl.SSLContext:
    # Built once: loading the system CA store is the expensive part, and contexts are
    # safe to share between threads.
    return ssl.create_default_context()


def _open_socket(ip: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to exactly ``ip``: AI_NUMERICHOST guarantees no DNS lookup."""
    family, kind, proto, _, sockaddr = socket.getaddrinfo(
        ip, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.settimeout(timeout)
        sock.connect(sockaddr)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


class _Watchdog:
    """One thread per process that expires every attempt's deadline on time.

    A timer thread per attempt cost a thread start per send (the largest part of a
    send's CPU on a busy machine); this keeps the deadlines in a heap instead."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._counter = itertools.count()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def watch(self, deadline: _Deadline, expires: float) -> None:
        with self._lock:
            if self._thread is None or self._pid != os.getpid():  # first use, or forked
                self._heap = []
                self._pid = os.getpid()
                self._thread = threading.Thread(
                    target=self._run, name="ftq-webhook-deadlines", daemon=True
                )
                self._thread.start()
            heapq.heappush(self._heap, (expires, next(self._counter), deadline))
            if self._heap[0][2] is deadline:
                self._lock.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    wait = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._lock.wait(wait)
                _, _, deadline = heapq.heappop(self._heap)
            deadline._expire()  # a cancelled one ignores it


_WATCHDOG = _Watchdog()


class _Deadline:
    """The attempt's single time budget, enforced even against a trickling receiver.

    Socket timeouts only bound each read, so a receiver sending a byte a second could hold
    us indefinitely; when the budget runs out the watchdog shuts the socket down under the
    blocked read, which then fails and is reported as a timeout.
    """

    def __init__(self, seconds: float) -> None:
        self._expires = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self.expired = False
        self._cancelled = False
        _WATCHDOG.watch(self, self._expires)

    def remaining(self) -> float:
        left = self._expires - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline exceeded")
        return left

    def guard(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            if self.expired:
                self._shutdown()

    def _expire(self) -> None:
        with self._lock:
            if self._cancelled:
                return
            self.expired = True
            self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            # The plain socket's shutdown: SSLSocket.shutdown would also drop its TLS
            # state while another thread is reading through it.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)

    def cancel(self) -> None:
        # The heap entry stays until its time and is then ignored; it holds no socket
        # once the attempt is over.
        with self._lock:
            self._cancelled = True
            self._sock = None


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, *, ip: str, deadline: _Deadline) -> None:
        super().__init__(host, port, timeout=deadline.remaining())
        self._pinned_ip = ip
        self._deadline = deadline

    def connect(self) -> None:
        self.sock = _open_socket(self._pinned_ip, self.port, self._deadline.remaining())
        self._deadline.guard(self.sock)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(
        self, host: str, port: int, *, ip: str, deadline: _Deadline, context: ssl.SSLContext
    ) -> None:
        super().__init__(host, port, timeout=deadline.remaining(), context=context)
        self._pinned_ip = ip
        self._deadline = deadline
        self._tls_context = context

    def connect(self) -> None:
        raw = _open_socket(self._pinned_ip, self.port, self._deadline.remaining())
        self._deadline.guard(raw)
        try:
            # SNI and certificate verification are for the URL's host, not the pinned IP.
            self.sock = self._tls_context.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


def _describe(exc: BaseException) -> str:
    # Order matters: several of these are subclasses of the later ones.
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "connection closed without a response"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"tls certificate verification failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"tls error: {exc.reason or exc}"
    if isinstance(exc, http.client.HTTPException):
        return f"invalid http response: {type(exc).__name__}"
    if isinstance(exc, OSError):
        return f"network error: {exc.strerror or type(exc).__name__}"
    # ValueError from http.client: a header name or value it refuses to send (CR/LF).
    return f"invalid request: {type(exc).__name__}"


def _clean_headers(headers: Mapping[str, str]) -> dict[str, str]:
    cleaned = {
        name: value for name, value in headers.items() if name.lower() not in _RESERVED_HEADERS
    }
    cleaned["Connection"] = "close"
    return cleaned


def _read_prefix(response: http.client.HTTPResponse, limit: int) -> bytes:
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = response.read(remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _decode_body(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").replace("\x00", "")


def _elapsed_ms(started: float) -> float:
    return (time.monotonic() - started) * 1000.0


def deliver(
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    settings: WebhookSettings,
    *,
    resolver: Resolver | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> DeliveryResult:
    """POST ``body`` to ``url`` once and report what happened; never raises for I/O errors.

    ``resolver`` replaces getaddrinfo (tests); ``ssl_context`` replaces the default
    verifying context (e.g. a private CA). The address is resolved exactly once here.
    """
    started = time.monotonic()
    try:
        target = validate_webhook_url(url, settings, resolve=True, resolver=resolver)
    except UnsafeWebhookURL as exc:
        return DeliveryResult(None, False, _elapsed_ms(started), "", exc.reason)

    deadline = _Deadline(settings.timeout_seconds)
    try:
        return _attempt(target, headers, body, settings, deadline, ssl_context, started)
    finally:
        deadline.cancel()


def _connect(
    target: ValidatedURL, deadline: _Deadline, ssl_context: ssl.SSLContext | None
) -> tuple[http.client.HTTPConnection | None, str | None, BaseException | None]:
    """The first checked address that accepts a connection, in resolver order."""
    failure: BaseException | None = None
    for ip in target.addresses:
        conn: http.client.HTTPConnection
        try:
            if target.scheme == "https":
                context = ssl_context or _default_tls_context()
                conn = _PinnedHTTPSConnection(
                    target.host, target.port, ip=ip, deadline=deadline, context=context
                )
            else:
                conn = _PinnedHTTPConnection(target.host, target.port, ip=ip, deadline=deadline)
            conn.connect()
        except (OSError, http.client.HTTPException) as exc:
            failure = exc
            if deadline.expired or isinstance(exc, ssl.SSLError):
                break  # out of time, or the certificate is wrong for every address alike
            continue
        return conn, ip, None
    return None, None, failure


def _attempt(
    target: ValidatedURL,
    headers: Mapping[str, str],
    body: bytes,
    settings: WebhookSettings,
    deadline: _Deadline,
    ssl_context: ssl.SSLContext | None,
    started: float,
) -> DeliveryResult:
    conn, connected_ip, failure = _connect(target, deadline, ssl_context)
    if conn is None:
        reason = "timeout" if deadline.expired else _describe(failure or TimeoutError())
        return DeliveryResult(None, False, _elapsed_ms(started), "", reason)

    status: int | None = None
    location: str | None = None
    retry_after: float | None = None
    raw = b""
    error: str | None = None
    try:
        conn.request("POST", target.target, body=body, headers=_clean_headers(headers))
        response = conn.getresponse()
        if deadline.expired:
            # The watchdog's shutdown reads as a clean EOF to http.client, which then
            # parses whatever arrived as complete: cut-off headers are not a response.
            raise TimeoutError
        status = response.status
        if 300 <= status < 400:
            location = response.getheader("location")
        if status in _RETRY_AFTER_STATUSES:
            retry_after = parse_retry_after(response.getheader("retry-after"))
        raw = _read_prefix(response, settings.max_response_body_bytes)
        deadline.cancel()
        if deadline.expired:
            error = "timeout"  # the body was cut short the same way
    except (OSError, http.client.HTTPException, ValueError) as exc:
        error = "timeout" if deadline.expired else _describe(exc)
    finally:
        conn.close()

    if error is None and status is not None and 300 <= status < 400:
        error = "redirect not followed"
    return DeliveryResult(
        status_code=status,
        ok=error is None and status is not None and 200 <= status < 300,
        latency_ms=_elapsed_ms(started),
        response_body=_decode_body(raw),
        error=error,
        retry_after_seconds=retry_after,
        gone=status == 410,
        connected_ip=connected_ip,
        location=location,
    )
