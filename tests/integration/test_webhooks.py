"""Webhooks on real processes: API, Celery worker and beat on Postgres and Redis, delivering
to real loopback receivers that verify every request with the ``standardwebhooks`` library,
as a team's receiver would. Schedules are shrunk to seconds through settings."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from cli.processes import api_command, free_port, wait_http_ok
from tests.integration.stack import Stack, Team, wait_for

TERMINAL = ("succeeded", "failed", "cancelled")

WEBHOOK_ENV = {
    # attempts at 0, ~0.5, ~1.5, ~3, ~7 s (+-20% each); disabled after 5 s of failures
    "FTQ_WEBHOOKS__RETRY_SCHEDULE_SECONDS": "[0.5, 1, 1.5, 4]",
    "FTQ_WEBHOOKS__DISABLE_AFTER_SECONDS": "5",
    "FTQ_WEBHOOKS__TIMEOUT_SECONDS": "5",
    "FTQ_WEBHOOKS__OVERLOAD_PENALTY_SECONDS": "1",
    "FTQ_LEASE_SECONDS": "4",
}


@dataclass
class Hit:
    headers: dict[str, str]
    body: bytes
    verified: bool
    status: int = 0

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


# respond(receiver, hit) -> status, or (status, headers); it may block to stall a sender.
Respond = Callable[["Receiver", Hit], int | tuple[int, dict[str, str]]]


@dataclass
class Receiver:
    respond: Respond = lambda _receiver, _hit: 200
    port: int = 0
    secret: str | None = None
    hits: list[Hit] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    verified = receiver.secret is not None and bool(
                        Webhook(receiver.secret).verify(body, headers)
                    )
                except WebhookVerificationError:
                    verified = False
                hit = Hit(headers, body, verified)
                receiver.hits.append(hit)
                answer = receiver.respond(receiver, hit)
                status, extra = answer if isinstance(answer, tuple) else (answer, {})
                hit.status = status
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def successes(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for hit in self.hits:
            if 200 <= hit.status < 300:
                counts[hit.webhook_id] = counts.get(hit.webhook_id, 0) + 1
        return counts

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def wh() -> Iterator[Stack]:
    stack = Stack("webhooks", extra_env=WEBHOOK_ENV)
    try:
        stack.start()
        yield stack
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    started: list[Receiver] = []

    def start(*args: Any, **kwargs: Any) -> Receiver:
        started.append(Receiver(*args, **kwargs))
        return started[-1]

    yield start
    for receiver in started:
        receiver.close()


@dataclass
class Response:
    status_code: int
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


@dataclass
class Api:
    """Just enough of an HTTP client for ftq's extension routes (the SDK has none)."""

    base: str
    key: str

    def request(self, method: str, path: str, json: Any = None, params: Any = None) -> Response:
        url = self.base + path
        if params:
            url += "?" + "&".join(f"{k}={v}" for k, v in params.items())
        data = None if json is None else _dumps(json)
        request = urllib.request.Request(
            url,
            data=data if data is not None else (b"" if method == "POST" else None),
            method=method,
            headers={"Authorization": f"Bearer {self.key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return Response(answer.status, answer.read().decode())
        except urllib.error.HTTPError as error:
            return Response(error.code, error.read().decode())

    def get(self, path: str, params: Any = None) -> Response:
        return self.request("GET", path, params=params)

    def post(self, path: str, json: Any = None) -> Response:
        return self.request("POST", path, json=json)


def _dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def api(stack: Stack, key: str) -> Api:
    return Api(f"{stack.api_url}/v1", key)


def register(client: Api, receiver: Receiver | str, **options: Any) -> dict[str, Any]:
    url = receiver if isinstance(receiver, str) else receiver.url
    response = client.post("/webhook_endpoints", json={"url": url, **options})
    assert response.status_code == 200, response.text
    endpoint = response.json()
    if isinstance(receiver, Receiver):
        receiver.secret = endpoint["secret"]
    return endpoint


def deliveries(client: Api, endpoint_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/webhook_endpoints/{endpoint_id}/deliveries", params={"limit": 100})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def attempts(client: Api, endpoint_id: str, delivery_id: str) -> list[dict[str, Any]]:
    path = f"/webhook_endpoints/{endpoint_id}/deliveries/{delivery_id}/attempts"
    response = client.get(path, params={"limit": 100})
    assert response.status_code == 200, response.text
    return response.json()["data"]


def settled(client: Api, endpoint_id: str, count: int) -> list[dict[str, Any]]:
    """Wait until ``count`` deliveries are recorded as succeeded (the receiver answers
    before the worker writes the outcome down)."""

    def done() -> list[dict[str, Any]]:
        found = deliveries(client, endpoint_id)
        return found if sum(d["status"] == "succeeded" for d in found) >= count else []

    return wait_for(done, timeout=60, what=f"{count} recorded successes")


def record_synthetic_event(stack: Stack, team: Team, object_id: str, sequence: int = 1) -> None:
    """A domain event written to the outbox exactly as ``service.jobs.transitions`` does."""

    def write(session: Any) -> None:
        from service.webhooks.outbox import record_event

        record_event(
            session,
            team_id=team.id,
            event_type="fine_tuning.job.running",
            object_id=object_id,
            sequence=sequence,
            data={"id": object_id, "object": "fine_tuning.job", "status": "running"},
        )

    stack.db(write)


def upload(stack: Stack, team: Team, dataset: Path) -> str:
    with dataset.open("rb") as handle:
        return stack.client(team.keys["member"]).files.create(file=handle, purpose="fine-tune").id


def test_a_job_run_delivers_every_status_event_once_in_order(
    wh: Stack, receivers: Callable[..., Receiver], dataset: Path
) -> None:
    team = wh.create_team()
    receiver = receivers()
    admin = api(wh, team.keys["admin"])
    register(admin, receiver, description="all events")
    client = wh.client(team.keys["member"])
    file_id = upload(wh, team, dataset)
    job = client.fine_tuning.jobs.create(model="gpt-4o-mini-2024-07-18", training_file=file_id)
    done = wait_for(
        lambda: (j := client.fine_tuning.jobs.retrieve(job.id)).status in TERMINAL and j,
        timeout=150,
        what="the job to finish",
    )
    assert done.status == "succeeded"
    wait_for(
        lambda: any(h.event["type"] == "fine_tuning.job.succeeded" for h in receiver.hits),
        timeout=60,
        what="the succeeded event",
    )

    assert receiver.hits and all(h.verified for h in receiver.hits)
    assert all(count == 1 for count in receiver.successes().values())
    assert len(receiver.hits) == len({h.webhook_id for h in receiver.hits})  # no retries needed
    job_events = [h.event for h in receiver.hits if h.event["data"].get("id") == job.id]
    job_events += [
        h.event
        for h in receiver.hits
        if h.event["type"] == "fine_tuning.job.checkpoint.created"
        and h.event["data"].get("fine_tuning_job_id") == job.id
    ]
    job_events.sort(key=lambda e: [h.event["id"] for h in receiver.hits].index(e["id"]))
    sequences = [e["sequence"] for e in job_events]
    assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)
    statuses = [e["type"].rsplit(".", 1)[1] for e in job_events if "checkpoint" not in e["type"]]
    # The poller records the statuses it sees; on a busy machine a short sandbox job can
    # finish between two polls, so intermediate statuses may be absent but never reordered.
    assert statuses[-1] == "succeeded"
    assert statuses == [s for s in ("queued", "running", "succeeded") if s in statuses]
    assert job_events[-1]["data"]["fine_tuned_model"] == done.fine_tuned_model
    validated = [h.event for h in receiver.hits if h.event["type"] == "file.validated"]
    assert [e["data"]["id"] for e in validated] == [file_id]


def test_down_then_500_then_recovered_gets_each_event_once_with_a_stable_id(
    wh: Stack, receivers: Callable[..., Receiver]
) -> None:
    team = wh.create_team()
    admin = api(wh, team.keys["admin"])
    port = free_port()  # nothing listens yet: connection refused
    endpoint = register(admin, f"http://127.0.0.1:{port}/hook")
    # Two events at once (a real upload's validation time would vary with the load).
    object_ids = {"ftjob-down-a", "ftjob-down-b"}
    for object_id in object_ids:
        record_synthetic_event(wh, team, object_id)

    def refused_once() -> bool:
        found = deliveries(admin, endpoint["id"])
        return len(found) == 2 and all(d["attempts"] >= 1 for d in found)

    wait_for(refused_once, timeout=60, what="a refused attempt for both events")

    def first_500_then_ok(receiver: Receiver, hit: Hit) -> int:
        seen = [h for h in receiver.hits if h.webhook_id == hit.webhook_id]
        return 500 if len(seen) == 1 else 200

    # The secret before the port opens: a retry may arrive the moment it listens.
    secret = admin.get(f"/webhook_endpoints/{endpoint['id']}/secret").json()["secret"]
    receiver = receivers(first_500_then_ok, port=port, secret=secret)
    wait_for(lambda: len(receiver.successes()) == 2, timeout=60, what="both events delivered")
    settled(admin, endpoint["id"], 2)

    assert receiver.successes() == dict.fromkeys(receiver.successes(), 1)
    assert {h.event["data"]["id"] for h in receiver.hits} == object_ids
    assert all(h.verified for h in receiver.hits)
    for found in deliveries(admin, endpoint["id"]):
        assert found["status"] == "succeeded"
        tried = attempts(admin, endpoint["id"], found["id"])[::-1]  # oldest first
        assert tried[0]["status_code"] is None and tried[0]["error"] == "connection refused"
        assert [a["status_code"] for a in tried[-2:]] == [500, 200]
        ids = {h.webhook_id for h in receiver.hits if h.event["data"]["id"] == found["object_id"]}
        assert ids == {found["webhook_id"]}
    assert admin.get(f"/webhook_endpoints/{endpoint['id']}").json()["enabled"] is True


def test_410_disables_the_endpoint_and_the_team_is_told(
    wh: Stack, receivers: Callable[..., Receiver]
) -> None:
    team = wh.create_team()
    admin = api(wh, team.keys["admin"])
    gone, watcher = receivers(lambda _r, _h: 410), receivers()
    gone_endpoint = register(admin, gone)
    register(admin, watcher, event_types=["webhook_endpoint.disabled"])

    assert admin.post(f"/webhook_endpoints/{gone_endpoint['id']}/test").status_code == 200
    wait_for(lambda: watcher.hits, timeout=60, what="the disabled notice")
    endpoint = admin.get(f"/webhook_endpoints/{gone_endpoint['id']}").json()
    assert endpoint["enabled"] is False and "410" in endpoint["disabled_reason"]
    (notice,) = [h.event for h in watcher.hits]
    assert notice["type"] == "webhook_endpoint.disabled" and watcher.hits[0].verified
    assert notice["data"]["id"] == gone_endpoint["id"]
    listed = admin.get("/webhook_endpoints/notices").json()["data"]
    assert [n["endpoint_id"] for n in listed] == [gone_endpoint["id"]]
    assert len(gone.hits) == 1


def test_sustained_failure_disables_then_recover_and_replay_are_team_scoped(
    wh: Stack, receivers: Callable[..., Receiver], other_team_on: Callable[[Stack], Team]
) -> None:
    team, intruder = wh.create_team(), other_team_on(wh)
    admin, foreign = api(wh, team.keys["admin"]), api(wh, intruder.keys["admin"])
    healthy = False
    receiver = receivers(lambda _r, _h: 200 if healthy else 500)
    endpoint = register(admin, receiver)
    base = f"/webhook_endpoints/{endpoint['id']}"
    since = int(time.time()) - 1
    record_synthetic_event(wh, team, "ftjob-sustained")

    wait_for(lambda: admin.get(base).json()["enabled"] is False, timeout=60, what="auto-disable")
    assert "failed since" in admin.get(base).json()["disabled_reason"]
    (failed,) = deliveries(admin, endpoint["id"])
    assert failed["status"] == "failed" and failed["attempts"] >= 4
    assert all(h.status == 500 for h in receiver.hits)
    assert [n["kind"] for n in admin.get("/webhook_endpoints/notices").json()["data"]] == [
        "disabled"
    ]

    # Another team sees none of it: every id answers 404, exactly like a missing one.
    replay_path = f"{base}/deliveries/{failed['id']}/replay"
    for method, path, body in [
        ("GET", base, None),
        ("GET", f"{base}/deliveries", None),
        ("GET", f"{base}/deliveries/{failed['id']}/attempts", None),
        ("POST", replay_path, None),
        ("POST", f"{base}/recover", {"since": since}),
        ("POST", f"{base}/test", None),
        ("GET", f"{base}/secret", None),
        ("DELETE", base, None),
        ("POST", "/webhook_endpoints/we_doesnotexist/test", None),
    ]:
        response = foreign.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "not_found"
    assert admin.get("/webhook_endpoints/notices").json()["data"]  # untouched
    assert foreign.get("/webhook_endpoints/notices").json()["data"] == []

    # Members and viewers read but cannot write or see secrets.
    viewer = api(wh, team.keys["viewer"])
    assert viewer.get(base).status_code == 200 and "secret" not in viewer.get(base).json()
    assert viewer.get(f"{base}/secret").status_code == 403
    assert viewer.post(f"{base}/recover", json={"since": since}).status_code == 403

    healthy = True
    assert admin.post(f"{base}/recover", json={"since": since}).status_code == 409  # disabled
    assert admin.post(base, json={"enabled": True}).json()["enabled"] is True
    recovered = admin.post(f"{base}/recover", json={"since": since}).json()
    assert recovered["recovered"] == 1
    wait_for(lambda: receiver.successes(), timeout=60, what="the recovered delivery")
    assert receiver.successes() == {failed["webhook_id"]: 1}
    settled(admin, endpoint["id"], 1)  # recorded, so the replay below is a new send

    replayed = admin.post(replay_path)
    assert replayed.status_code == 200 and replayed.json()["webhook_id"] == failed["webhook_id"]
    wait_for(lambda: receiver.successes()[failed["webhook_id"]] == 2, timeout=60, what="replay")
    assert {h.webhook_id for h in receiver.hits} == {failed["webhook_id"]}
    assert all(h.verified for h in receiver.hits)
    assert len(set(h.headers["webhook-timestamp"] for h in receiver.hits)) >= 2


@pytest.fixture
def other_team_on() -> Callable[[Stack], Team]:
    return lambda stack: stack.create_team("other")


def test_redirects_are_never_followed(wh: Stack, receivers: Callable[..., Receiver]) -> None:
    team = wh.create_team()
    admin = api(wh, team.keys["admin"])
    internal = receivers()
    redirector = receivers(lambda _r, _h: (302, {"Location": internal.url}))
    endpoint = register(admin, redirector)
    sent = admin.post(f"/webhook_endpoints/{endpoint['id']}/test").json()

    def finished() -> list[dict[str, Any]]:
        return [d for d in deliveries(admin, endpoint["id"]) if d["status"] == "failed"]

    wait_for(finished, timeout=60, what="the redirected attempt")
    (attempt,) = attempts(admin, endpoint["id"], sent["id"])
    assert attempt["status_code"] == 302 and attempt["error"] == "redirect not followed"
    assert len(redirector.hits) == 1
    assert internal.hits == []  # the redirect target saw nothing


def test_a_worker_killed_mid_delivery_loses_nothing(
    wh: Stack, receivers: Callable[..., Receiver]
) -> None:
    team = wh.create_team()
    admin = api(wh, team.keys["admin"])

    def stall_first(receiver: Receiver, hit: Hit) -> int:
        if len(receiver.hits) == 1:
            receiver.release.wait(30)  # hold the first attempt open while its worker dies
        return 200

    receiver = receivers(stall_first)
    endpoint = register(admin, receiver)
    record_synthetic_event(wh, team, "ftjob-killed")
    wait_for(lambda: receiver.hits, timeout=60, interval=0.02, what="the first attempt")
    wh.kill("worker0")
    wh.start_worker("worker1")

    wait_for(lambda: receiver.successes(), timeout=40, what="delivery by the new worker")
    (delivered,) = settled(admin, endpoint["id"], 1)
    assert delivered["status"] == "succeeded"
    assert {h.webhook_id for h in receiver.hits} == {delivered["webhook_id"]}
    assert len(receiver.hits) == 2 and all(h.verified for h in receiver.hits)
    # The killed attempt never finished, so only the completed one is on record.
    assert [a["status_code"] for a in attempts(admin, endpoint["id"], delivered["id"])] == [200]


SSRF_URLS = [
    "http://127.0.0.1/hook",
    "http://0x7f000001/hook",
    "http://2130706433/hook",
    "http://0177.0.0.1/hook",
    "http://127.1/hook",
    "http://[::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://[::ffff:10.0.0.1]/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/hook",
    "http://10.0.0.5/hook",
    "http://192.168.1.1/hook",
    "http://0.0.0.0/hook",
    "http://localhost:8080/hook",
    "http://metadata.localhost/hook",
    "http://user:pass@hooks.example.com/hook",
    "ftp://hooks.example.com/hook",
]


def test_unsafe_urls_are_refused_at_registration_and_update() -> None:
    # Only the API is needed; no allow-list here, as in production.
    stack = Stack("ssrf", extra_env={"FTQ_WEBHOOKS__ALLOWED_NETWORKS": ""})
    try:
        stack.migrate()
        port = int(stack.api_url.rsplit(":", 1)[1])
        proc = stack.group.start("api", api_command("127.0.0.1", port))
        wait_http_ok(f"{stack.api_url}/healthz", timeout=60, proc=proc)
        team = stack.create_team()
        admin = api(stack, team.keys["admin"])
        for url in SSRF_URLS:
            response = admin.post("/webhook_endpoints", json={"url": url})
            assert response.status_code == 400, (url, response.text)
            error = response.json()["error"]
            assert error["code"] == "unsafe_webhook_url" and error["param"] == "url", url
            assert error["type"] == "invalid_request_error"
        assert admin.get("/webhook_endpoints").json()["data"] == []

        # An endpoint that was fine cannot be pointed inside later either.
        def make_endpoint(session: Any) -> str:
            from service.crypto import encrypt
            from service.webhooks.models import WebhookEndpoint

            endpoint = WebhookEndpoint(
                id="we_public",
                team_id=team.id,
                url="https://93.184.215.14/hook",
                secret_encrypted=encrypt("whsec_x"),
            )
            session.add(endpoint)
            return endpoint.id

        endpoint_id = stack.db(make_endpoint)
        response = admin.post(f"/webhook_endpoints/{endpoint_id}", json={"url": SSRF_URLS[8]})
        assert response.status_code == 400 and response.json()["error"]["param"] == "url"
        assert admin.get(f"/webhook_endpoints/{endpoint_id}").json()["url"].startswith("https://93")
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()
