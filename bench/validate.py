"""Benchmark: ftq's dataset validator vs a straightforward port of the cookbook notebook.

Not a test. Generates a JSONL dataset in a temporary folder (deleted afterwards), then
runs each implementation in its own child process and reports rows/s, MB/s, CPU-seconds,
peak RSS (the largest process, and the whole process tree summed) and the ratios, and checks
that both count exactly the same tokens.

    python bench/validate.py                  # 100k chat rows
    python bench/validate.py --rows 250000
    python bench/validate.py --large          # 1M rows, ~1.5 GB
    python bench/validate.py --format prompt_completion   # or dpo
    python bench/validate.py --large --write /data/1m.jsonl   # generate once, keep the file
    python bench/validate.py --large --data /data/1m.jsonl    # measure on a kept file

The chat baseline is the cookbook notebook ported as-is; the prompt/completion and DPO
baselines are the same approach (load every line, check, encode every value) applied to
those formats with ftq's counting rules, since the notebook covers chat only.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
LARGE_ROWS = 1_000_000

_WORD_TEXT = (
    "the of and to in is you that it he was for on are as with his they at be this have from "
    "or one had by word but not what all were we when your can said there use an each which "
    "she do how their if will up other about out many then them these so some her would make "
    "like him into time has look two more write go see number no way could people my than "
    "first water been call who oil its now find long down day did get come made may part "
    "order invoice refund shipping account password subscription delivery warranty support "
    "configure install error database latency throughput deploy cluster kubernetes python "
    "función données Größe 東京 café naïve résumé emoji 🙂 ✓ — “quoted” 1234 3.14 2024-07-18"
)
_WORDS = _WORD_TEXT.split()


def _sentence(rng: random.Random, n_words: int) -> str:
    words = rng.choices(_WORDS, k=n_words)
    return " ".join(words).capitalize() + rng.choice((".", "?", "!", "."))


def _paragraph(rng: random.Random, n_sentences: int) -> str:
    return " ".join(_sentence(rng, rng.randint(6, 18)) for _ in range(n_sentences))


FORMATS = ("chat", "prompt_completion", "dpo")


def generate(path: Path, rows: int, seed: int = 7, file_format: str = "chat") -> None:
    if file_format == "prompt_completion":
        generate_prompt_completion(path, rows, seed)
    elif file_format == "dpo":
        generate_dpo(path, rows, seed)
    else:
        generate_chat(path, rows, seed)


def generate_prompt_completion(path: Path, rows: int, seed: int) -> None:
    """prompt/completion rows of ~1 KB: a prompt template from a small pool plus a question."""
    rng = random.Random(seed)
    templates = ["Answer as ACME support. " + _paragraph(rng, 2) for _ in range(24)]
    with path.open("w", encoding="utf-8") as out:
        for _ in range(rows):
            prompt = f"{rng.choice(templates)}\n\n{_paragraph(rng, rng.randint(1, 3))}\n\n###\n\n"
            completion = " " + _paragraph(rng, rng.randint(3, 8)) + " END"
            row = {"prompt": prompt, "completion": completion}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def generate_dpo(path: Path, rows: int, seed: int) -> None:
    """Preference rows of ~1.5 KB: a system prompt from a small pool, a question, two answers."""
    rng = random.Random(seed)
    system_prompts = ["You are ACME's assistant. " + _paragraph(rng, 3) for _ in range(24)]
    with path.open("w", encoding="utf-8") as out:
        for _ in range(rows):
            row = {
                "input": {
                    "messages": [
                        {"role": "system", "content": rng.choice(system_prompts)},
                        {"role": "user", "content": _paragraph(rng, rng.randint(1, 3))},
                    ]
                },
                "preferred_output": [
                    {"role": "assistant", "content": _paragraph(rng, rng.randint(2, 5))}
                ],
                "non_preferred_output": [
                    {"role": "assistant", "content": _paragraph(rng, rng.randint(2, 5))}
                ],
            }
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def generate_chat(path: Path, rows: int, seed: int) -> None:
    """Chat rows of ~1.5 KB: a system prompt from a small pool, 1-3 user/assistant turns."""
    rng = random.Random(seed)
    system_prompts = [
        "You are a support assistant for ACME Corp. " + _paragraph(rng, 4) for _ in range(24)
    ]
    with path.open("w", encoding="utf-8") as out:
        for _ in range(rows):
            messages: list[dict[str, object]] = [
                {"role": "system", "content": rng.choice(system_prompts)}
            ]
            for _turn in range(rng.choice((1, 1, 1, 2, 3))):
                messages.append({"role": "user", "content": _paragraph(rng, rng.randint(1, 3))})
                reply: dict[str, object] = {
                    "role": "assistant",
                    "content": _paragraph(rng, rng.randint(4, 10)),
                }
                if rng.random() < 0.1:
                    reply["weight"] = rng.choice((0, 1))
                messages.append(reply)
            out.write(json.dumps({"messages": messages}, ensure_ascii=False) + "\n")


# -- measurement inside the child ------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    stack = [pid]
    while stack:
        current = stack.pop()
        try:
            with open(f"/proc/{current}/task/{current}/children") as handle:
                children = [int(c) for c in handle.read().split()]
        except OSError:
            children = []
        found.extend(children)
        stack.extend(children)
    return found


class TreeRssSampler(threading.Thread):
    """Peak of the summed RSS of this process and its descendants, sampled every 50 ms."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_kib = 0
        self._halt = threading.Event()

    def run(self) -> None:
        me = os.getpid()
        while not self._halt.wait(0.05):
            total = _rss_kib(me) + sum(_rss_kib(child) for child in _descendants(me))
            self.peak_kib = max(self.peak_kib, total)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.peak_kib


def run_baseline(path: Path, encoding_name: str) -> dict[str, object]:
    """The cookbook notebook, ported as-is: load everything, check formats, count tokens."""
    import bpe_openai

    with open(path, encoding="utf-8") as handle:
        dataset = [json.loads(line) for line in handle]

    format_errors: dict[str, int] = defaultdict(int)
    for ex in dataset:
        if not isinstance(ex, dict):
            format_errors["data_type"] += 1
            continue
        messages = ex.get("messages", None)
        if not messages:
            format_errors["missing_messages_list"] += 1
            continue
        for message in messages:
            if "role" not in message or "content" not in message:
                format_errors["message_missing_key"] += 1
            if any(
                k not in ("role", "content", "name", "function_call", "weight") for k in message
            ):
                format_errors["message_unrecognized_key"] += 1
            if message.get("role", None) not in ("system", "user", "assistant", "function"):
                format_errors["unrecognized_role"] += 1
            content = message.get("content", None)
            function_call = message.get("function_call", None)
            if (not content and not function_call) or not isinstance(content, str):
                format_errors["missing_content"] += 1
        if not any(message.get("role", None) == "assistant" for message in messages):
            format_errors["example_missing_assistant_message"] += 1

    encoding = bpe_openai.get_encoding(encoding_name)

    def num_tokens_from_messages(messages, tokens_per_message=3, tokens_per_name=1):
        num_tokens = 0
        for message in messages:
            num_tokens += tokens_per_message
            for key, value in message.items():
                if not isinstance(value, str):  # the notebook would crash on "weight": 1
                    continue
                num_tokens += len(encoding.encode(value))
                if key == "name":
                    num_tokens += tokens_per_name
        num_tokens += 3
        return num_tokens

    def num_assistant_tokens_from_messages(messages):
        return sum(len(encoding.encode(m["content"])) for m in messages if m["role"] == "assistant")

    n_missing_system = n_missing_user = 0
    n_messages, convo_lens, assistant_message_lens = [], [], []
    for ex in dataset:
        messages = ex["messages"]
        if not any(message["role"] == "system" for message in messages):
            n_missing_system += 1
        if not any(message["role"] == "user" for message in messages):
            n_missing_user += 1
        n_messages.append(len(messages))
        convo_lens.append(num_tokens_from_messages(messages))
        assistant_message_lens.append(num_assistant_tokens_from_messages(messages))
    max_tokens = 16385
    n_too_long = sum(length > max_tokens for length in convo_lens)
    billing_tokens = sum(min(max_tokens, length) for length in convo_lens)
    return {
        "examples": len(dataset),
        "tokens_total": sum(convo_lens),
        "assistant_tokens": sum(assistant_message_lens),
        "format_errors": sum(format_errors.values()),
        "n_too_long": n_too_long,
        "billing_tokens": billing_tokens,
    }


def run_baseline_prompt_completion(path: Path, encoding_name: str) -> dict[str, object]:
    """Load everything, check the two keys, encode prompt and completion of every row."""
    import bpe_openai

    with open(path, encoding="utf-8") as handle:
        dataset = [json.loads(line) for line in handle]
    encoding = bpe_openai.get_encoding(encoding_name)
    format_errors = 0
    lengths, completion_lengths = [], []
    for ex in dataset:
        if not isinstance(ex.get("prompt"), str) or not isinstance(ex.get("completion"), str):
            format_errors += 1
            continue
        completion = len(encoding.encode(ex["completion"]))
        lengths.append(len(encoding.encode(ex["prompt"])) + completion)
        completion_lengths.append(completion)
    return {
        "examples": len(dataset),
        "tokens_total": sum(lengths),
        "assistant_tokens": sum(completion_lengths),
        "format_errors": format_errors,
    }


def run_baseline_dpo(path: Path, encoding_name: str) -> dict[str, object]:
    """Load everything, check the shape, encode every message value (the notebook's rule:
    3 per message plus its string values; 3 per example)."""
    import bpe_openai

    with open(path, encoding="utf-8") as handle:
        dataset = [json.loads(line) for line in handle]
    encoding = bpe_openai.get_encoding(encoding_name)

    def message_tokens(message: dict) -> int:
        return 3 + sum(len(encoding.encode(v)) for v in message.values() if isinstance(v, str))

    format_errors = 0
    lengths, output_lengths = [], []
    for ex in dataset:
        messages = (ex.get("input") or {}).get("messages")
        outputs = [ex.get("preferred_output"), ex.get("non_preferred_output")]
        if not messages or not all(isinstance(o, list) and len(o) == 1 for o in outputs):
            format_errors += 1
            continue
        total = 3 + sum(message_tokens(m) for m in messages)
        total += sum(message_tokens(o[0]) for o in outputs)
        lengths.append(total)
        output_lengths.append(sum(len(encoding.encode(o[0]["content"])) for o in outputs))
    return {
        "examples": len(dataset),
        "tokens_total": sum(lengths),
        "assistant_tokens": sum(output_lengths),
        "format_errors": format_errors,
    }


BASELINES = {
    "chat": run_baseline,
    "prompt_completion": run_baseline_prompt_completion,
    "dpo": run_baseline_dpo,
}


def run_ftq(path: Path, model: str, workers: int) -> dict[str, object]:
    sys.path.insert(0, str(REPO_ROOT))
    from service.files.validation.validator import validate_file

    report = validate_file(path, model=model, workers=workers)
    return {
        "examples": report.examples,
        "tokens_total": report.tokens.total,
        "assistant_tokens": report.tokens.assistant_total,
        "verdict": report.verdict,
        "findings": sum(report.counts_by_code.values()),
    }


def child_main(which: str, path: Path, model: str, workers: int, file_format: str) -> None:
    import resource

    sampler = TreeRssSampler()
    sampler.start()
    started = time.perf_counter()
    if which == "baseline":
        sys.path.insert(0, str(REPO_ROOT))
        from service.files.validation.tokens import encoding_for_model

        result = BASELINES[file_format](path, encoding_for_model(model))
    else:
        result = run_ftq(path, model, workers)
    result["seconds"] = time.perf_counter() - started
    usage_self = resource.getrusage(resource.RUSAGE_SELF)
    usage_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of this process and its workers: comparable even on a contended machine.
    result["cpu_seconds"] = (
        usage_self.ru_utime
        + usage_self.ru_stime
        + usage_children.ru_utime
        + usage_children.ru_stime
    )
    result["tree_peak_rss_mib"] = sampler.stop() / 1024
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result["max_process_rss_mib"] = max(own, children) / 1024
    print(json.dumps(result))


# -- the driver ------------------------------------------------------------------------------


def measure(which: str, path: Path, model: str, workers: int, file_format: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", which, str(path), model, str(workers)]
    command.append(file_format)
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--large", action="store_true", help=f"{LARGE_ROWS:,} rows (~1.5 GB)")
    parser.add_argument("--model", default="gpt-4o-mini-2024-07-18")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--format", dest="file_format", choices=FORMATS, default="chat")
    # Generating 1M rows takes minutes on a busy machine: generate once, measure many times.
    parser.add_argument("--write", type=Path, help="generate the dataset here and stop")
    parser.add_argument("--data", type=Path, help="measure this file (made by --write)")
    args = parser.parse_args()
    rows = LARGE_ROWS if args.large else args.rows
    if args.write is not None:
        generate(args.write, rows, file_format=args.file_format)
        print(f"wrote {rows:,} {args.file_format} rows to {args.write}")
        return 0

    with tempfile.TemporaryDirectory(prefix="ftq-bench-") as folder:
        path = args.data or Path(folder) / "train.jsonl"
        started = time.perf_counter()
        if args.data is None:
            generate(path, rows, file_format=args.file_format)
        else:
            with path.open("rb") as handle:
                rows = sum(1 for _ in handle)
        size_mb = path.stat().st_size / 1e6
        print(
            f"dataset: {rows:,} {args.file_format} rows, {size_mb:,.1f} MB "
            f"(ready in {time.perf_counter() - started:.1f} s); model {args.model}; "
            f"{os.cpu_count()} CPUs; ftq workers {args.workers}"
        )
        results = {"ftq": measure("ftq", path, args.model, args.workers, args.file_format)}
        if not args.skip_baseline:
            results["cookbook baseline"] = measure(
                "baseline", path, args.model, 1, args.file_format
            )

    header = f"{'implementation':<18} {'seconds':>8} {'CPU s':>7} {'rows/s':>10} {'MB/s':>7} "
    header += f"{'max proc RSS MiB':>17} {'tree RSS MiB':>13} {'tokens':>14}"
    print(header)
    for name, result in results.items():
        seconds = float(result["seconds"])
        print(
            f"{name:<18} {seconds:>8.1f} {float(result['cpu_seconds']):>7.1f} "
            f"{rows / seconds:>10,.0f} {size_mb / seconds:>7.1f} "
            f"{float(result['max_process_rss_mib']):>17.0f} "
            f"{float(result['tree_peak_rss_mib']):>13.0f} {int(result['tokens_total']):>14,}"
        )
    if "cookbook baseline" not in results:
        return 0
    ftq, baseline = results["ftq"], results["cookbook baseline"]
    ratio = float(baseline["seconds"]) / float(ftq["seconds"])
    same = ftq["tokens_total"] == baseline["tokens_total"]
    same_assistant = ftq["assistant_tokens"] == baseline["assistant_tokens"]
    cpu_ratio = float(baseline["cpu_seconds"]) / float(ftq["cpu_seconds"])
    print(f"throughput ratio ftq/baseline (wall clock): {ratio:.2f}x")
    print(f"work ratio baseline CPU s / ftq CPU s: {cpu_ratio:.2f}x")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"token totals identical: {same} (assistant tokens identical: {same_assistant})")
    return 0 if same and same_assistant else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child_main(sys.argv[2], Path(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6])
    else:
        sys.exit(main())
