"""Multi-adapter serving throughput through vLLM, loaded the way ftq loads them.

Not a test; bench/gpu.sh runs it on a GPU machine with vLLM installed. It writes N random
LoRA adapters for the base model (peft, non-zero init: the serving cost of an adapter does not
depend on its values), starts ``vllm serve`` with runtime LoRA updating, loads adapters through
ftq's own ``AdapterLoader`` (``/v1/load_lora_adapter``) and sends the same request load spread
round-robin over 1, 8 and 32 adapters, plus the base model alone as the baseline:

    python bench/serve_adapters.py --model /models/Qwen2.5-0.5B-Instruct --adapters 1,8,32

Output: completion tokens/s and p50/p95 latency per row, and the ratio to the base model.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [
    "Summarise the plot of a heist film in three sentences.",
    "Write a haiku about distributed training.",
    "Explain gradient checkpointing to a new engineer.",
    "List five uses of a paperclip.",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_adapters(model: str, count: int, rank: int, folder: Path) -> list[Path]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for index in range(count):
        torch.manual_seed(index)
        base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16)
        config = LoraConfig(
            r=rank,
            lora_alpha=2 * rank,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
            init_lora_weights=False,  # random B too: a non-trivial adapter
            task_type="CAUSAL_LM",
        )
        path = folder / f"adapter-{index:02d}"
        get_peft_model(base, config).save_pretrained(path)
        paths.append(path)
    return paths


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 900) -> None:
    import httpx2

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"vllm exited with {proc.returncode} before it was ready")
        try:
            if httpx2.get(f"{url}/v1/models", timeout=2).status_code == 200:
                return
        except httpx2.HTTPError:
            pass
        time.sleep(2)
    raise SystemExit("vllm did not become ready in time")


def measure(url: str, models: list[str], requests: int, concurrency: int, max_tokens: int) -> dict:
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key="bench", max_retries=0, timeout=300)

    def one(index: int) -> tuple[float, int]:
        started = time.perf_counter()
        reply = client.chat.completions.create(
            model=models[index % len(models)],
            messages=[{"role": "user", "content": PROMPTS[index % len(PROMPTS)]}],
            max_tokens=max_tokens,
            temperature=0,
            extra_body={"ignore_eos": True},  # every request generates max_tokens
        )
        return time.perf_counter() - started, reply.usage.completion_tokens if reply.usage else 0

    one(0)  # warm-up: compile, first adapter swap
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - started
    latencies = sorted(r[0] for r in results)
    return {
        "models": len(models),
        "tokens_per_s": sum(r[1] for r in results) / wall,
        "p50_s": statistics.median(latencies),
        "p95_s": latencies[int(0.95 * (len(latencies) - 1))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="base model directory")
    parser.add_argument("--adapters", default="1,8,32")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--json-out")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO_ROOT))
    import httpx2

    from service.providers.local.vllm import AdapterLoader

    counts = [int(n) for n in args.adapters.split(",")]
    with tempfile.TemporaryDirectory(prefix="ftq-serve-bench-") as tmp:
        adapters = make_adapters(args.model, max(counts), args.rank, Path(tmp))
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        command = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", args.model, "--served-model-name", "base", "--port", str(port),
            "--enable-lora", "--max-loras", str(max(counts)), "--max-lora-rank", str(args.rank),
            "--max-model-len", "2048",
        ]  # fmt: skip
        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
        log_file = (Path(tmp) / "vllm.log").open("wb")
        proc = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            _wait_ready(url, proc)
            load = (args.requests, args.concurrency, args.max_tokens)
            rows = [{"label": "base model", **measure(url, ["base"], *load)}]
            loader = AdapterLoader(httpx2.Client(base_url=url, timeout=120), max(counts))
            for count in counts:
                names = [f"ft:bench:{i:02d}" for i in range(count)]
                for name, path in zip(names, adapters, strict=False):
                    loader.ensure_loaded(name, str(path))
                row = measure(url, names, *load)
                rows.append({"label": f"{count} adapters", **row})
        finally:
            proc.terminate()
            proc.wait(60)
    base = rows[0]["tokens_per_s"]
    print(
        f"\nvLLM serving, {args.requests} requests x {args.max_tokens} tokens, "
        f"concurrency {args.concurrency}, LoRA rank {args.rank}\n"
    )
    print("| served | completion tokens/s | p50 s | p95 s | ÷ base |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['label']} | {row['tokens_per_s']:,.0f} | {row['p50_s']:.2f} | "
            f"{row['p95_s']:.2f} | {row['tokens_per_s'] / base:.2f} |"
        )
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
