"""``ftq demo``: the article's four steps — prepare data, upload, fine-tune, use the model —
through the official ``openai`` SDK against a running ftq, or one it starts and stops itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click

from cli.main import main
from cli.processes import free_port

DEMO_EXAMPLES = [
    ("What is the capital of France?", "Paris is the capital of France."),
    ("Translate 'good morning' into German.", "Guten Morgen."),
    ("Is this review positive or negative: 'I loved every minute'?", "positive"),
    ("Is this review positive or negative: 'A waste of money'?", "negative"),
    (
        "Summarise: The meeting moved from Monday to Wednesday at 10am.",
        "Meeting now Wednesday 10am.",
    ),
    ("What does ftq stand for?", "ftq stands for fine-tuning queue."),
    ("Which planet is known as the red planet?", "Mars is known as the red planet."),
    ("How many days are in a leap year?", "A leap year has 366 days."),
    ("Classify the e-mail 'WIN A FREE CRUISE NOW': spam or not spam?", "spam"),
    ("Translate 'thank you' into Spanish.", "Gracias."),
    ("What is the boiling point of water at sea level in Celsius?", "100 degrees Celsius."),
    ("Who wrote 'Pride and Prejudice'?", "Jane Austen wrote 'Pride and Prejudice'."),
]
SYSTEM = "You are a concise assistant fine-tuned by ftq's demo."


def write_dataset(path: Path) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for question, answer in DEMO_EXAMPLES:
            record = {
                "messages": [
                    {"role": "system", "content": SYSTEM},
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ]
            }
            handle.write(json.dumps(record) + "\n")


def _read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition("=")
        if key:
            values[key.strip()] = value.strip()
    return values


def run_demo(api_url: str, api_key: str, *, timeout: float) -> bool:
    from openai import OpenAI

    from cli.team.follow import TIMED_OUT_EXIT, follow
    from cli.team.upload import upload_file

    client = OpenAI(base_url=api_url, api_key=api_key, max_retries=2)
    ok = True
    with tempfile.TemporaryDirectory() as scratch:
        dataset = Path(scratch) / "demo.jsonl"
        write_dataset(dataset)
        click.echo(f"1. prepared {len(DEMO_EXAMPLES)} chat examples in {dataset.name}")

        uploaded = upload_file(client, dataset, purpose="fine-tune", show_progress=False)
        click.echo(
            f"2. uploaded: {uploaded.id} ({uploaded.bytes} bytes, purpose {uploaded.purpose})"
        )

    job = client.fine_tuning.jobs.create(
        model="gpt-4o-mini-2024-07-18", training_file=uploaded.id, suffix="demo"
    )
    click.echo(f"3. fine-tuning job {job.id}: {job.status}")
    # The same live view as `ftq jobs follow`: status, steps, loss sparkline, checkpoints.
    if follow(client, job.id, timeout=timeout) == TIMED_OUT_EXIT:
        click.echo(f"   job not finished after {timeout:.0f}s", err=True)
        return False
    job = client.fine_tuning.jobs.retrieve(job.id)
    events = client.fine_tuning.jobs.list_events(job.id, limit=5).data
    for event in reversed(events):
        click.echo(f"   event: {event.message}")
    if job.status != "succeeded":
        click.echo(f"   job ended {job.status}: {job.error}", err=True)
        return False
    click.echo(f"   fine-tuned model: {job.fine_tuned_model} ({job.trained_tokens} trained tokens)")

    question, expected = DEMO_EXAMPLES[5]
    reply = client.chat.completions.create(
        model=job.fine_tuned_model or "",
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
    )
    answer = reply.choices[0].message.content
    click.echo(f"4. asked {question!r}\n   the fine-tuned model answered {answer!r}")
    if answer != expected:
        click.echo(f"   expected {expected!r}", err=True)
        ok = False
    return ok


def _run_reporting(api_url: str, api_key: str, timeout: float) -> bool:
    import openai

    try:
        return run_demo(api_url, api_key, timeout=timeout)
    except openai.OpenAIError as error:
        click.echo(f"   step failed: {type(error).__name__}: {error}", err=True)
        return False


@main.command()
@click.option("--url", envvar="FTQ_API_URL", help="A running ftq's /v1 URL (else one is started).")
@click.option("--key", envvar="FTQ_API_KEY", help="An API key of that ftq.")
@click.option(
    "--timeout", type=float, default=180, show_default=True, help="Seconds to wait for the job."
)
def demo(url: str | None, key: str | None, timeout: float) -> None:
    """Run the article's four steps end to end; exits non-zero if any step fails."""
    if url and key:
        sys.exit(0 if _run_reporting(url, key, timeout) else 1)
    with tempfile.TemporaryDirectory(prefix="ftq-demo-") as data_dir:
        click.echo(f"starting ftq on the embedded default (data in {data_dir}) ...")
        command = [
            sys.executable,
            "-m",
            "cli",
            "dev",
            "--quiet",
            "--data-dir",
            data_dir,
            "--port",
            str(free_port()),
            "--sandbox-port",
            str(free_port()),
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FTQ_")}
        log_path = Path(data_dir) / "dev.log"
        log_file = log_path.open("wb")
        dev = subprocess.Popen(command, env=env, stdout=log_file, stderr=log_file)
        ok = False
        try:
            env_file = Path(data_dir) / "dev.env"
            deadline = time.monotonic() + 90
            while not env_file.exists():
                if dev.poll() is not None or time.monotonic() > deadline:
                    click.echo(log_path.read_text(errors="replace")[-3000:], err=True)
                    click.echo(f"ftq did not start (exit {dev.poll()})", err=True)
                    sys.exit(1)
                time.sleep(0.3)
            values = _read_env_file(env_file)
            ok = _run_reporting(values["FTQ_API_URL"], values["FTQ_API_KEY"], timeout)
        finally:
            dev.terminate()
            try:
                dev.wait(timeout=30)
            except subprocess.TimeoutExpired:
                dev.kill()
            log_file.close()
        click.echo("demo succeeded" if ok else "demo FAILED")
        sys.exit(0 if ok else 1)
