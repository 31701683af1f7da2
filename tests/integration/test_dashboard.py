"""The dashboard in a real browser (headless Chromium through Playwright): sign-in, a running
job's loss curve gaining points and its cancel, a blocked file's findings, a webhook replay,
another team's job as a 404 page, and the other pages, each kept as a screenshot."""

from __future__ import annotations

import datetime as dt
import http.server
import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import CHAT_EXAMPLES
from tests.integration.dashboard_browser import browser, page, screenshot, sign_in
from tests.integration.stack import Stack, Team, wait_for
from tests.integration.test_keys_and_audit import call

pytestmark = pytest.mark.integration
__all__ = ["browser", "page"]  # fixtures, re-exported for pytest

MODEL = "gpt-4o-mini-2024-07-18"


def _chat_lines(extra: list[str] | None = None) -> bytes:
    rows = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": q},
                    {"role": "assistant", "content": a},
                ]
            }
        )
        for q, a in CHAT_EXAMPLES
    ]
    return ("\n".join([*rows, *(extra or [])]) + "\n").encode()


def _upload(stack: Stack, key: str, content: bytes, name: str) -> str:
    client = stack.client(key)
    file_id = client.files.create(file=(name, io.BytesIO(content)), purpose="fine-tune").id

    def done() -> bool:
        status, body, _ = call(stack, "GET", f"/v1/files/{file_id}/validation", key)
        return status == 200 and body["status"] in ("completed", "error")

    wait_for(done, timeout=60, what=f"the report of {file_id}")
    return file_id


def test_sign_in_refuses_bad_keys_and_expired_sessions_with_a_clear_page(
    page: Any, stack: Stack, team: Team, tmp_path: Path
) -> None:
    answer = page.goto(f"{stack.api_url}/dashboard/jobs")
    assert answer.status == 401
    assert page.locator("#sign-in h1").inner_text() == "Sign in to ftq"
    screenshot(page, tmp_path, "sign-in")

    page.fill("#api_key", "ftq_sk_not-a-real-key")
    page.click("#sign-in button[type=submit]")
    assert "Incorrect API key provided." in page.locator(".alert").inner_text()

    sign_in(page, stack.api_url, team.keys["viewer"], start="/dashboard/models")
    assert page.url.endswith("/dashboard/models")
    assert page.locator("#models").is_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "ftq_dashboard")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/dashboard"

    def expire(session: Any) -> None:
        import sqlalchemy as sa

        from service.dashboard.models import DashboardSession

        session.execute(
            sa.update(DashboardSession)
            .where(DashboardSession.key_id == team.key_ids["viewer"])  # type: ignore[arg-type]
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )

    stack.db(expire)
    answer = page.goto(f"{stack.api_url}/dashboard/usage")
    assert answer.status == 401
    assert "expired" in page.locator(".alert").inner_text()
    assert "Traceback" not in page.content()
    # Signing in again lands on the page that was asked for.
    page.fill("#api_key", team.keys["viewer"])
    page.click("#sign-in button[type=submit]")
    page.wait_for_url("**/dashboard/usage")
    assert page.locator("#usage").is_visible()


def test_running_job_curve_gains_points_then_cancel_with_confirmation(
    page: Any, stack: Stack, team: Team, tmp_path: Path
) -> None:
    key = team.keys["member"]
    client = stack.client(key)
    file_id = _upload(stack, key, _chat_lines(), "curve.jsonl")
    # A quick job at the default pace: done (with its checkpoints) by the end of this test.
    quick = client.fine_tuning.jobs.create(model=MODEL, training_file=file_id, suffix="quick")
    wait_for(  # created upstream (its pace fixed there) before the sandbox slows down
        lambda: client.fine_tuning.jobs.retrieve(quick.id).status in ("running", "succeeded"),
        timeout=60,
        what="the quick job to start",
    )
    # About two seconds a step for minutes: the page sees the curve grow while the job runs.
    with stack.sandbox.configured(
        step_seconds=8.0, max_running_seconds=4000.0, max_steps_per_epoch=10
    ):
        job = client.fine_tuning.jobs.create(
            model=MODEL, training_file=file_id, metadata={"purpose": "dashboard-test"}
        )
        wait_for(
            lambda: client.fine_tuning.jobs.retrieve(job.id).status == "running",
            timeout=60,
            what="the job to run",
        )
    sign_in(page, stack.api_url, key, start=f"/dashboard/jobs/{job.id}")
    assert page.locator("#status").inner_text() == "running"
    chart = page.locator("#loss-chart")

    def points() -> int:
        return int(chart.get_attribute("data-points") or 0)

    wait_for(lambda: points() >= 2, timeout=30, what="points on the loss curve")
    first = points()
    wait_for(lambda: points() >= first + 2, timeout=30, what="the curve to gain points")
    drawn = page.evaluate(
        "() => Chart.getChart(document.getElementById('loss-chart')).data.datasets[0].data.length"
    )
    assert drawn >= first + 2
    assert page.locator("#events tbody tr").count() >= first
    assert (
        "step" in page.locator("#steps").inner_text() or "/" in page.locator("#steps").inner_text()
    )
    screenshot(page, tmp_path, "job-running")

    page.goto(f"{stack.api_url}/dashboard/jobs?q=dashboard-test")
    assert page.locator(f"#jobs a[href='/dashboard/jobs/{job.id}']").count() == 1
    page.goto(f"{stack.api_url}/dashboard/jobs?status=failed&q=dashboard-test")
    assert page.locator(f"#jobs a[href='/dashboard/jobs/{job.id}']").count() == 0
    page.goto(f"{stack.api_url}/dashboard/jobs")
    screenshot(page, tmp_path, "jobs")

    page.goto(f"{stack.api_url}/dashboard/jobs/{job.id}")
    assert page.locator("#cancel").count() == 1, page.locator("#job-facts").inner_text()
    page.click("#cancel")
    page.locator("#confirm-cancel").wait_for()
    assert client.fine_tuning.jobs.retrieve(job.id).status == "running"  # asked, not done
    page.click("#confirm-cancel button[type=submit]")
    assert "Cancellation requested" in page.locator(".notice").inner_text()
    wait_for(
        lambda: client.fine_tuning.jobs.retrieve(job.id).status == "cancelled",
        timeout=60,
        what="the job to be cancelled",
    )
    # The page follows by itself (its CSP forbids string eval, so poll the text from here).
    wait_for(
        lambda: page.locator("#status").inner_text() == "cancelled",
        timeout=20,
        what="the page to show the cancel",
    )

    # A finished job: its whole curve, the checkpoints marked on it and listed below it.
    wait_for(
        lambda: client.fine_tuning.jobs.retrieve(quick.id).status == "succeeded",
        timeout=90,
        what="the quick job to succeed",
    )
    marks = client.fine_tuning.jobs.checkpoints.list(quick.id).data
    page.goto(f"{stack.api_url}/dashboard/jobs/{quick.id}")
    assert page.locator("#checkpoints tbody tr").count() == len(marks) >= 1
    page.wait_for_function("() => Chart.getChart(document.getElementById('loss-chart'))")
    marked = page.evaluate(
        "() => Chart.getChart(document.getElementById('loss-chart')).data.datasets[3].data"
    )
    assert sorted(m["x"] for m in marked) == sorted(c.step_number for c in marks)
    assert page.locator("#lineage", has_text=file_id).count() == 1
    screenshot(page, tmp_path, "job")


def test_blocked_file_report_shows_the_finding_and_its_line(
    page: Any, stack: Stack, team: Team, tmp_path: Path
) -> None:
    key = team.keys["viewer"]
    file_id = _upload(stack, team.keys["member"], _chat_lines(["{not json"]), "broken.jsonl")
    sign_in(page, stack.api_url, key, start="/dashboard/files")
    page.click(f"a[href='/dashboard/files/{file_id}']")
    assert page.locator("#verdict").inner_text() == "block"
    row = page.locator("#findings tbody tr", has_text="invalid_json")
    assert row.get_attribute("data-line") == str(len(CHAT_EXAMPLES) + 1)
    assert row.locator("td.line").inner_text().strip() == str(len(CHAT_EXAMPLES) + 1)
    assert page.locator("#counts", has_text="invalid_json").is_visible()
    assert page.locator(".sample").count() >= 1  # the review sample
    screenshot(page, tmp_path, "file-report")
    page.goto(f"{stack.api_url}/dashboard/files")
    screenshot(page, tmp_path, "files")


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: list[bytes] = []

    def do_POST(self) -> None:
        _Receiver.received.append(self.rfile.read(int(self.headers.get("content-length", 0))))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()


def test_replay_a_webhook_delivery(
    page: Any, stack: Stack, team: Team, tmp_path: Path, receiver: str
) -> None:
    admin = team.keys["admin"]
    status, endpoint, _ = call(stack, "POST", "/v1/webhook_endpoints", admin, {"url": receiver})
    assert status == 200, endpoint
    status, delivery, _ = call(stack, "POST", f"/v1/webhook_endpoints/{endpoint['id']}/test", admin)
    assert status == 200, delivery
    deliveries = f"/v1/webhook_endpoints/{endpoint['id']}/deliveries"
    wait_for(
        lambda: (
            call(stack, "GET", f"{deliveries}/{delivery['id']}", admin)[1]["status"] == "succeeded"
        ),
        timeout=30,
        what="the test delivery",
    )

    sign_in(page, stack.api_url, admin, start="/dashboard/webhooks")
    screenshot(page, tmp_path, "webhooks")
    page.click(f"a[href='/dashboard/webhooks/{endpoint['id']}']")
    row = page.locator(f"#delivery-{delivery['id']}")
    assert "succeeded" in row.inner_text()
    row.locator("button.replay").click()
    assert delivery["id"] in page.locator("#replayed").inner_text()
    attempts = f"{deliveries}/{delivery['id']}/attempts"

    def replayed() -> bool:
        data = call(stack, "GET", attempts, admin)[1]["data"]
        return len(data) == 2 and all(a["ok"] for a in data)  # the test send, then the replay

    wait_for(replayed, timeout=30, what="the replay's attempt")
    assert len(_Receiver.received) >= 2  # the receiver got the event twice
    page.reload()
    attempts_row = page.locator(f"#delivery-{delivery['id']} + tr.attempts")
    assert attempts_row.locator(".attempt.ok").count() == 2
    screenshot(page, tmp_path, "webhook-deliveries")

    # A forged POST (no CSRF token) changes nothing; a member sees no replay button.
    before = len(call(stack, "GET", f"{deliveries}?limit=100", admin)[1]["data"])
    forged = page.request.post(
        f"{stack.api_url}/dashboard/webhooks/{endpoint['id']}/deliveries/{delivery['id']}/replay",
        form={"csrf_token": "guessed"},
    )
    assert forged.status == 403
    assert len(call(stack, "GET", f"{deliveries}?limit=100", admin)[1]["data"]) == before


def test_another_teams_job_is_a_404_page(
    page: Any, stack: Stack, team: Team, other_team: Team, tmp_path: Path
) -> None:
    owner = stack.client(team.keys["member"])
    file_id = _upload(stack, team.keys["member"], _chat_lines(), "mine.jsonl")
    job = owner.fine_tuning.jobs.create(model=MODEL, training_file=file_id)

    sign_in(page, stack.api_url, other_team.keys["admin"], start="/dashboard/jobs")
    assert page.locator(f"a[href='/dashboard/jobs/{job.id}']").count() == 0
    foreign = page.goto(f"{stack.api_url}/dashboard/jobs/{job.id}")
    assert foreign.status == 404
    assert page.locator(".error-page h1").inner_text() == "404 · Not found"
    foreign_text = page.locator(".error-page p").first.inner_text()
    screenshot(page, tmp_path, "not-found")
    missing_id = job.id[:-6] + "zzzzzz"
    missing = page.goto(f"{stack.api_url}/dashboard/jobs/{missing_id}")
    assert missing.status == 404
    # Answered exactly like an id that does not exist.
    assert page.locator(".error-page p").first.inner_text() == foreign_text.replace(
        job.id, missing_id
    )
    assert page.goto(f"{stack.api_url}/dashboard/files/{file_id}").status == 404
    live = page.request.get(f"{stack.api_url}/dashboard/jobs/{job.id}/live.json")
    assert live.status == 404 and live.json()["error"]["code"] == "fine_tune_not_found"
    owner.fine_tuning.jobs.cancel(job.id)


def test_models_and_usage_pages(page: Any, stack: Stack, team: Team, tmp_path: Path) -> None:
    sign_in(page, stack.api_url, team.keys["admin"], start="/dashboard/models")
    row = page.locator("#models tr", has_text=MODEL)
    assert row.count() == 1 and "days" in row.inner_text()  # its shutdown date, days left
    screenshot(page, tmp_path, "models")
    page.goto(f"{stack.api_url}/dashboard/usage")
    assert page.locator("#budget").inner_text()
    screenshot(page, tmp_path, "usage")
    # Sign-out ends the session on the server, not only in this browser.
    page.click(".signout button")
    page.wait_for_url("**/dashboard/login")
    assert page.goto(f"{stack.api_url}/dashboard/usage").status == 401


PARAPHRASED = [
    ("Which city is the capital of France?", "Paris."),
    ("How do you say 'hello' in French? Translate it.", "Bonjour."),
    ("On a clear day, what colour is the sky?", "Blue."),
    ("A spider has how many legs?", "Eight."),
    ("Hamlet was written by whom?", "William Shakespeare."),
    ("Compute 12 times 12.", "144."),
    ("Which ocean is the largest?", "The Pacific Ocean."),
    ("Plants absorb which gas?", "Carbon dioxide."),
    ("In Fahrenheit, what is the freezing point of water?", "32 degrees Fahrenheit."),
    ("At room temperature, which metal is liquid?", "Mercury."),
]


def test_evaluation_page_compares_base_and_fine_tune(
    page: Any, stack: Stack, team: Team, tmp_path: Path
) -> None:
    key = team.keys["member"]
    client = stack.client(key)
    training = _upload(stack, key, _chat_lines(), "train.jsonl")
    held_out = [
        json.dumps(
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        )
        for q, a in PARAPHRASED
    ]
    seen = _upload(stack, key, ("\n".join(held_out) + "\n").encode(), "seen.jsonl")
    template: Any = client.post(
        "/evals/templates",
        cast_to=object,
        body={"template": "question_answering", "file_id": seen},
    )
    job = client.fine_tuning.jobs.create(
        model=MODEL,
        training_file=training,
        validation_file=seen,
        suffix="gated",
        extra_body={
            "evaluation": {
                "eval_id": template["id"],
                "gate": {"criterion": "exact_match", "min_delta": 0.5},
            }
        },
    )

    def recorded() -> bool:
        body: Any = client.get(f"/fine_tuning/jobs/{job.id}/evaluation", cast_to=object)
        return body["status"] == "recorded"

    wait_for(recorded, timeout=180, interval=1, what="the evaluation to be recorded")
    sign_in(page, stack.api_url, key, start="/dashboard/jobs")
    link = page.locator(f"#jobs a[href='/dashboard/jobs/{job.id}/evaluation']")
    assert link.inner_text() == "promoted"
    link.click()
    assert page.locator("#verdict").inner_text() == "promoted"
    assert page.locator("#scores tbody tr").count() == 2  # the base and the fine-tune
    low, high = (float(x) for x in page.locator("#interval").inner_text().strip("[]").split(","))
    assert low <= float(page.locator("#difference").inner_text()) <= high
    flips = page.locator(".flip-improvement")
    assert flips.count() >= 1
    first = flips.first.locator(".flip-pair pre")
    assert first.nth(0).inner_text() and first.nth(1).inner_text()  # both answers, side by side
    # The chart is drawn by the page's script: wait for it before reading it.
    page.wait_for_function("() => Chart.getChart(document.getElementById('scores-chart'))")
    assert page.evaluate(
        "() => Chart.getChart(document.getElementById('scores-chart')).data.labels"
    ) == ["base", "fine_tuned"]
    screenshot(page, tmp_path, "evaluation")

    page.click(f"a[href='/dashboard/evals/{template['id']}']")
    page.locator("#runs").wait_for()  # count() does not wait for the navigation
    assert page.locator("#runs tbody tr").count() == 2
    screenshot(page, tmp_path, "eval")
    page.locator("#runs tbody tr a").first.click()
    page.locator("#output-items").wait_for()
    assert page.locator("#output-items tbody tr").count() == len(PARAPHRASED)
