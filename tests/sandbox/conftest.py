"""A real sandbox on a loopback port, driven by the official openai SDK."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import openai
import pytest
import uvicorn

from sandbox.app import create_app
from sandbox.config import SandboxConfig

# Fast but ordered timings: a 12-example job takes about 2 s end to end.
FAST = SandboxConfig(
    validating_seconds=0.3,
    queued_seconds=0.3,
    step_seconds=0.05,
    max_running_seconds=1.5,
)

QA = [
    ("What color is a banana?", "Bananas are yellow."),
    ("What color is a lime?", "Limes are green."),
    ("How many legs does a spider have?", "Spiders have eight legs."),
    ("What is the capital of France?", "Paris is the capital of France."),
    ("Who wrote Hamlet?", "William Shakespeare wrote Hamlet."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius."),
    ("Which planet is known as the red planet?", "Mars is the red planet."),
    ("What is the largest ocean on Earth?", "The Pacific is the largest ocean."),
    ("How many days are in a leap year?", "A leap year has 366 days."),
    ("What gas do plants absorb from the air?", "Plants absorb carbon dioxide."),
    ("What is the square root of 81?", "The square root of 81 is 9."),
    ("Which instrument has 88 keys?", "A standard piano has 88 keys."),
]


def chat_jsonl(pairs: list[tuple[str, str]] = QA) -> bytes:
    lines = [
        json.dumps(
            {
                "messages": [
                    {"role": "system", "content": "You are a terse quiz bot."},
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
        for question, answer in pairs
    ]
    return ("\n".join(lines) + "\n").encode()


@dataclass
class Sandbox:
    base_url: str
    server: uvicorn.Server
    thread: threading.Thread

    def client(self, **options: Any) -> openai.OpenAI:
        options = {"api_key": "test", "max_retries": 0, **options}
        return openai.OpenAI(base_url=f"{self.base_url}/v1", **options)

    def control(self) -> httpx2.Client:
        return httpx2.Client(base_url=self.base_url, timeout=10)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_sandbox(config: SandboxConfig) -> Sandbox:
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("sandbox did not start")
        time.sleep(0.02)
    return Sandbox(f"http://127.0.0.1:{port}", server, thread)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    instance = start_sandbox(FAST)
    yield instance
    instance.stop()


@pytest.fixture
def client(sandbox: Sandbox) -> openai.OpenAI:
    return sandbox.client()


@pytest.fixture
def control(sandbox: Sandbox) -> Iterator[httpx2.Client]:
    with sandbox.control() as http:
        yield http
        # Faults set by a test must not leak into the next one.
        http.put("/sandbox/config", json=FAST.model_dump()).raise_for_status()


def wait_for_status(
    client: openai.OpenAI, job_id: str, statuses: set[str], timeout: float = 10.0
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job.status}, wanted {statuses}")
        time.sleep(0.05)


@pytest.fixture(scope="session")
def training_file(sandbox: Sandbox) -> str:
    client = sandbox.client()
    return client.files.create(file=("quiz.jsonl", chat_jsonl()), purpose="fine-tune").id


@pytest.fixture(scope="session")
def trained_job(sandbox: Sandbox, training_file: str) -> Any:
    """A job run to success once per session (about 2 s)."""
    client = sandbox.client()
    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18",
        training_file=training_file,
        suffix="quiz",
        metadata={"ftq_job_id": "session-trained"},
    )
    return wait_for_status(client, job.id, {"succeeded", "failed", "cancelled"})
