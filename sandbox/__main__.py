"""``python -m sandbox``: serve the fake OpenAI upstream."""

from __future__ import annotations

import argparse
import json

from sandbox.config import SandboxConfig
from sandbox.server import run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox",
        description="Serve the ftq sandbox, a fake OpenAI fine-tuning upstream.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--job-speed", type=float, help="divides every job duration")
    parser.add_argument("--hold-create-seconds", type=float)
    parser.add_argument("--fault-seed", type=int)
    parser.add_argument(
        "--config-json", help="extra config fields as JSON, e.g. '{\"error_rate_429\": 0.1}'"
    )
    args = parser.parse_args(argv)
    overrides = json.loads(args.config_json) if args.config_json else {}
    for name in ("job_speed", "hold_create_seconds", "fault_seed"):
        value = getattr(args, name)
        if value is not None:
            overrides[name] = value
    run(args.host, args.port, SandboxConfig.from_env().updated(overrides))


if __name__ == "__main__":
    main()
