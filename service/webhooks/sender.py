"""Concurrent webhook sends over a thread pool, capped per endpoint; no database here.

A pump (``service.webhooks.pump``) hands over signed-at-send-time requests and collects
their results; this class decides when each one starts:

* at most ``threads`` sends run at once (each is one ``http.deliver``: SSRF check, pinned
  connection, one time budget);
* at most ``per_endpoint`` of them go to the same endpoint, so a slow or dead endpoint ties
  up that many threads and no more: the other endpoints' sends start beside it instead of
  queueing behind its timeouts. Sends over the cap wait here, in order;
* a send that could not start before its ``not_after`` (its lease would no longer cover
  the whole attempt) comes back unsent, for the pump to hand back.

Only the pump's thread calls the public methods; the pool threads only send and report.
"""

from __future__ import annotations

import queue
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import structlog

from service.webhooks import http
from service.webhooks.settings import WebhookSettings
from service.webhooks.signing import build_headers
from service.webhooks.ssrf import Resolver

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Send:
    delivery_id: str
    endpoint_id: str
    url: str
    msg_id: str  # the webhook-id header, the same on every attempt
    body: bytes
    secrets: tuple[str, ...]  # every secret that signs right now
    not_after: float  # time.monotonic() by which the send must start
    failing: bool = False  # the endpoint's failure clock was running when it was claimed


# (send, result); result None: never sent (its start came too late, or it was cancelled).
Outcome = tuple[Send, http.DeliveryResult | None]
Deliver = Callable[[Send], http.DeliveryResult]


class Sender:
    def __init__(
        self,
        settings: WebhookSettings,
        *,
        threads: int,
        per_endpoint: int,
        resolver: Resolver | None = None,
        deliver: Deliver | None = None,
    ) -> None:
        self._settings = settings
        self._resolver = resolver
        self._deliver = deliver or self._http_deliver
        self._threads = threads
        self._per_endpoint = per_endpoint
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="ftq-webhook")
        self._done: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
        self._running: dict[str, int] = {}  # endpoint -> sends handed to the pool
        self._waiting: dict[str, deque[Send]] = {}  # endpoint -> sends held behind its cap
        self._outstanding = 0  # submitted and not yet collected

    # What the pump asks before claiming more -----------------------------------------
    def room(self) -> int:
        """How many more sends to take: enough to keep every thread busy, with one
        thread's worth queued behind each so none idles while the next claim runs."""
        return max(0, 2 * self._threads - self._outstanding)

    def idle(self) -> bool:
        return self._outstanding == 0

    def saturated(self) -> list[str]:
        """Endpoints at their cap: claiming more of theirs would only make them wait here."""
        return [e for e, n in self._running.items() if n >= self._per_endpoint]

    # Work in, results out ------------------------------------------------------------
    def submit(self, send: Send) -> None:
        self._outstanding += 1
        if self._running.get(send.endpoint_id, 0) < self._per_endpoint:
            self._start(send)
        else:
            self._waiting.setdefault(send.endpoint_id, deque()).append(send)

    def collect(self, timeout: float, linger: float = 0.0) -> list[Outcome]:
        """Finished sends: waits up to ``timeout`` for the first, then up to ``linger`` more
        for the rest of those running (one recording for a whole batch costs about what
        one for a single send does)."""
        outcomes: list[Outcome] = []
        if self._outstanding == 0:
            return outcomes
        try:
            first = self._done.get(timeout=timeout)
        except queue.Empty:
            return outcomes
        finished = [first]
        running = sum(self._running.values())
        until = time.monotonic() + linger
        while len(finished) < running:
            try:
                finished.append(self._done.get(timeout=max(0.0, until - time.monotonic())))
            except queue.Empty:
                break
        for send, result in finished:
            self._outstanding -= 1
            outcomes.append((send, result))
            self._running[send.endpoint_id] -= 1
            outcomes.extend(self._start_waiting(send.endpoint_id))
        return outcomes

    def cancel_waiting(self) -> list[Outcome]:
        """Give back every send still held behind an endpoint cap, unsent."""
        outcomes: list[Outcome] = []
        for sends in self._waiting.values():
            while sends:
                outcomes.append((sends.popleft(), None))
                self._outstanding -= 1
        self._waiting.clear()
        return outcomes

    def close(self) -> None:
        # Sends already running finish on their own time budget; nothing waits for them.
        self._pool.shutdown(wait=False, cancel_futures=False)

    # Internals ------------------------------------------------------------------------
    def _start(self, send: Send) -> None:
        self._running[send.endpoint_id] = self._running.get(send.endpoint_id, 0) + 1
        self._pool.submit(self._run, send)

    def _start_waiting(self, endpoint_id: str) -> list[Outcome]:
        """Start the next held send of ``endpoint_id``; the ones whose time passed come back."""
        late: list[Outcome] = []
        sends = self._waiting.get(endpoint_id)
        now = time.monotonic()
        while sends:
            send = sends.popleft()
            if send.not_after < now:
                self._outstanding -= 1
                late.append((send, None))
                continue
            self._start(send)
            break
        if sends is not None and not sends:
            del self._waiting[endpoint_id]
        if not self._running.get(endpoint_id):
            self._running.pop(endpoint_id, None)
        return late

    def _run(self, send: Send) -> None:
        result: http.DeliveryResult | None
        if send.not_after < time.monotonic():
            result = None  # queued in the pool past its start-by time
        else:
            try:
                result = self._deliver(send)
            except Exception as exc:  # a bug must not leave the pump waiting forever
                log.exception("webhook_send_crashed", delivery_id=send.delivery_id)
                result = http.DeliveryResult(
                    None, False, 0.0, "", f"internal error: {type(exc).__name__}"
                )
        self._done.put((send, result))

    def _http_deliver(self, send: Send) -> http.DeliveryResult:
        # Signed here, at the start of the attempt: webhook-timestamp is when it was sent.
        headers = build_headers(list(send.secrets), send.msg_id, send.body)
        return http.deliver(send.url, headers, send.body, self._settings, resolver=self._resolver)
