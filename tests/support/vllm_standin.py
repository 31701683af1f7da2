"""A stand-in for a vLLM OpenAI-compatible server with runtime LoRA updating.

vLLM does not run on CPU test machines; this follows its HTTP contract for what ftq uses:

- ``POST /v1/load_lora_adapter`` ``{"lora_name", "lora_path"}``: 200 with a plain-text
  success line; 400 if the name is already loaded; 404 if the path holds no adapter
  (``adapter_config.json``);
- ``POST /v1/unload_lora_adapter`` ``{"lora_name"}``: 200, or 404 for an unknown name;
- ``GET /v1/models``: the base model, then each loaded adapter with ``parent`` = the base and
  ``root`` = its path;
- ``POST /v1/chat/completions`` (streaming too): 404 ``NotFoundError`` for a model that is
  neither the base nor a loaded adapter; otherwise a deterministic answer naming the adapter
  and a digest of its weights file, so a test can tell which adapter answered.

``GET /standin/stats`` returns the load/unload calls seen, for assertions. Run it with
``python -m tests.support.vllm_standin --port N [--base-model NAME]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse


def _error(message: str, kind: str, status: int) -> JSONResponse:
    # vLLM's ErrorResponse shape (OpenAI's, with the HTTP status as code).
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": status}},
        status_code=status,
    )


def adapter_digest(path: Path) -> str:
    weights = path / "adapter_model.safetensors"
    data = weights.read_bytes() if weights.is_file() else b""
    return hashlib.sha256(data).hexdigest()[:12]


def answer_for(lora_name: str, digest: str, messages: list[dict[str, Any]]) -> str:
    last = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
    return f"[{lora_name}@{digest}] {last}"


def create_app(base_model: str = "base") -> FastAPI:
    app = FastAPI(title="vLLM stand-in")
    adapters: dict[str, dict[str, Any]] = {}
    stats: dict[str, list[str]] = {"loads": [], "unloads": [], "completions": []}

    @app.post("/v1/load_lora_adapter", response_model=None)
    async def load(request: Request) -> Any:
        body = await request.json()
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return _error(
                "Both 'lora_name' and 'lora_path' must be provided.", "BadRequestError", 400
            )
        if name in adapters:
            return _error(
                f"The lora adapter '{name}' has already been loaded.", "BadRequestError", 400
            )
        folder = Path(path)
        if not (folder / "adapter_config.json").is_file():
            return _error(f"No adapter found for {path}", "NotFoundError", 404)
        adapters[name] = {"path": str(folder), "digest": adapter_digest(folder)}
        stats["loads"].append(name)
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    @app.post("/v1/unload_lora_adapter", response_model=None)
    async def unload(request: Request) -> Any:
        body = await request.json()
        name = body.get("lora_name")
        if name not in adapters:
            return _error(f"The lora adapter '{name}' cannot be found.", "NotFoundError", 404)
        del adapters[name]
        stats["unloads"].append(name)
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        created = int(time.time())
        data = [
            {
                "id": base_model,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": base_model,
                "parent": None,
            }
        ] + [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": info["path"],
                "parent": base_model,
            }
            for name, info in adapters.items()
        ]
        return {"object": "list", "data": data}

    @app.get("/standin/stats")
    def read_stats() -> dict[str, Any]:
        return {**stats, "loaded": list(adapters)}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Any:
        body = await request.json()
        model = body.get("model")
        if model == base_model:
            digest, name = "base", base_model
        elif model in adapters:
            digest, name = adapters[model]["digest"], model
        else:
            return _error(f"The model `{model}` does not exist.", "NotFoundError", 404)
        stats["completions"].append(name)
        text = answer_for(name, digest, body.get("messages") or [])
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        usage = {
            "prompt_tokens": 1,
            "completion_tokens": len(text.split()),
            "total_tokens": 1 + len(text.split()),
        }
        if body.get("stream"):
            return StreamingResponse(
                _stream(ident, created, model, text), media_type="text/event-stream"
            )
        return {
            "id": ident,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }

    return app


def _stream(ident: str, created: int, model: str, text: str) -> Iterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        payload = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    yield chunk({"role": "assistant", "content": ""}, None)
    for index, word in enumerate(text.split(" ")):
        yield chunk({"content": (" " if index else "") + word}, None)
    yield chunk({}, "stop")
    yield b"data: [DONE]\n\n"


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="vLLM stand-in (tests only)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--base-model", default="base")
    args = parser.parse_args()
    uvicorn.run(create_app(args.base_model), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
