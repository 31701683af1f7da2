"""An OpenAI-compatible inference server for locally fine-tuned models (``ftq inference``).

The API never loads a model: ``POST /v1/chat/completions`` for a local model goes through the
``local`` provider (the official SDK) to this server, which runs on an inference worker. It
resolves the ftq model name to the job's ``final/`` directory through the database and runs
transformers ``generate`` — LoRA adapters on their base model, kept in a small LRU cache.
Because the protocol is OpenAI's, vLLM serving the same directories can replace it (see
docs/local-provider.md). Internal: bind it to a private address; the API does the auth.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from sqlmodel import select
from starlette.concurrency import run_in_threadpool

import service.models  # noqa: F401  (every table registered before the first query)
from service.config import get_settings
from service.db import session_scope
from service.jobs.models import FineTuningJob, JobStatus
from service.jobs.runners import local as local_jobs
from service.logging import configure_logging

log = structlog.get_logger(__name__)

# Generation stops at eos; this only bounds a model that never emits it.
DEFAULT_MAX_TOKENS = 1024


class _BadRequest(Exception):
    def __init__(
        self, message: str, *, status: int = 400, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.message, self.status, self.param, self.code = message, status, param, code

    def response(self) -> JSONResponse:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        body = {"message": self.message, "type": kind, "param": self.param, "code": self.code}
        return JSONResponse({"error": body}, status_code=self.status)


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise _BadRequest(f"'{name}' must be a number between {low} and {high}.", param=name)
    return float(value)


def _parse(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise _BadRequest("The request body must be a JSON object.")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _BadRequest("Missing required parameter: 'model'.", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("Missing required parameter: 'messages'.", param="messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _BadRequest(f"messages[{index}] needs a 'role'.", param=f"messages[{index}]")
    if body.get("n") not in (None, 1):
        raise _BadRequest("Only n=1 is supported by the local inference server.", param="n")
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise _BadRequest("'max_tokens' must be a positive integer.", param="max_tokens")
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (
        not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop)
    ):
        raise _BadRequest("'stop' must be a string or a list of strings.", param="stop")
    return {
        "model": body["model"],
        "messages": messages,
        "max_tokens": max_tokens,
        # OpenAI's defaults: sampling at temperature 1.
        "temperature": _number(body, "temperature", 1.0, 0.0, 2.0),
        "top_p": _number(body, "top_p", 1.0, 0.0, 1.0) or 1.0,
        "stream": bool(body.get("stream")),
        "include_usage": bool((body.get("stream_options") or {}).get("include_usage")),
        "stop": stop or [],
    }


def _model_dir(model: str) -> Path:
    with session_scope() as session:
        path = local_jobs.model_dir_for(session, model)
        if path is None:
            # A checkpoint of a local job (``…:ckpt-step-N``), materialised on first call.
            from service.registry.checkpoints import checkpoint_model_dir

            path = checkpoint_model_dir(session, model)
        if path is None:
            known = session.exec(
                select(FineTuningJob.id).where(
                    FineTuningJob.fine_tuned_model == model,
                    FineTuningJob.status == JobStatus.succeeded,
                )
            ).first()
    if path is None:
        detail = "is not a local model" if known else "does not exist"
        raise _BadRequest(
            f"The model '{model}' {detail} on this inference server.",
            status=404,
            param="model",
            code="model_not_found",
        )
    return path


def _cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


class _Completion:
    """One request: resolved model, prompt token count, OpenAI-shaped answers."""

    def __init__(self, params: dict[str, Any]) -> None:
        from service.providers.local.inference import default_cache

        self.params = params
        self.model_dir = _model_dir(params["model"])
        self.cache = default_cache()
        self.loaded = self.cache.get(self.model_dir)  # load now: errors become HTTP statuses
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.prompt_tokens = self._count_prompt()

    def _count_prompt(self) -> int:
        from service.providers.local.data import message_text

        clean = [
            {"role": m["role"], "content": message_text(m.get("content"))}
            for m in self.params["messages"]
        ]
        tokenizer = self.loaded.tokenizer
        text = tokenizer.apply_chat_template(clean, tokenize=False, add_generation_prompt=True)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def _count(self, text: str) -> int:
        return len(self.loaded.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _generate(self, stream: bool) -> Any:
        from service.providers.local.inference import generate_chat

        return generate_chat(
            self.model_dir,
            self.params["messages"],
            max_tokens=self.params["max_tokens"],
            temperature=self.params["temperature"],
            top_p=self.params["top_p"],
            stream=stream,
            cache=self.cache,
        )

    def _finish_reason(self, completion_tokens: int, stopped: bool) -> str:
        if stopped:
            return "stop"
        return "length" if completion_tokens >= self.params["max_tokens"] else "stop"

    def _usage(self, completion_tokens: int) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
        }

    def complete(self) -> dict[str, Any]:
        text, stopped = _cut_at_stop(self._generate(stream=False), self.params["stop"])
        tokens = self._count(text)
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.params["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": self._finish_reason(tokens, stopped),
                }
            ],
            "usage": self._usage(tokens),
            "system_fingerprint": None,
        }

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.params["model"],
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }

    def chunks(self) -> Iterator[dict[str, Any]]:
        stops: list[str] = self.params["stop"]
        # Hold back what could be the start of a stop sequence until it is decided.
        hold = max((len(s) for s in stops), default=1) - 1
        yield self._chunk({"role": "assistant", "content": ""}, None)
        pieces = self._generate(stream=True)
        text, sent, stopped = "", 0, False
        try:
            for piece in pieces:
                text += piece
                text, stopped = _cut_at_stop(text, stops)
                ready = len(text) if stopped else max(sent, len(text) - hold)
                if ready > sent:
                    yield self._chunk({"content": text[sent:ready]}, None)
                    sent = ready
                if stopped:
                    break
        finally:
            pieces.close()  # type: ignore[attr-defined]  # ends generation early when the client went away or a stop hit
        if sent < len(text):
            yield self._chunk({"content": text[sent:]}, None)
        tokens = self._count(text)
        yield self._chunk({}, self._finish_reason(tokens, stopped))
        if self.params["include_usage"]:
            yield {**self._chunk({}, None), "choices": [], "usage": self._usage(tokens)}


def _sse(chunks: Iterator[dict[str, Any]]) -> Iterator[bytes]:
    try:
        for chunk in chunks:
            yield b"data: " + json.dumps(chunk).encode() + b"\n\n"
    except Exception as exc:  # headers are sent: report in-band, as OpenAI does
        log.exception("local_inference_stream_failed")
        error = {"message": f"generation failed: {exc}", "type": "server_error", "code": None}
        yield b"data: " + json.dumps({"error": error}).encode() + b"\n\n"
    yield b"data: [DONE]\n\n"


def create_app() -> FastAPI:
    settings = get_settings()
    configure_logging(settings, process="inference")

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        import torch

        from service.providers.local.inference import configure_default_cache

        torch.set_num_threads(settings.local.torch_threads)
        configure_default_cache(settings.local)
        yield

    app = FastAPI(title="ftq local inference", version="0.1.0", lifespan=lifespan)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        with session_scope() as session:
            jobs = session.exec(
                select(FineTuningJob).where(
                    FineTuningJob.provider == local_jobs.LOCAL,
                    FineTuningJob.status == JobStatus.succeeded,
                )
            ).all()
        data = [
            {
                "id": job.fine_tuned_model,
                "object": "model",
                "created": int((job.finished_at or job.created_at).timestamp()),
                "owned_by": job.team_id,
            }
            for job in jobs
            if job.fine_tuned_model
        ]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> Any:
        try:
            try:
                body = json.loads(await request.body())
            except (ValueError, UnicodeDecodeError):
                raise _BadRequest("We could not parse the JSON body of your request.") from None
            params = _parse(body)
            completion = await run_in_threadpool(_Completion, params)
            if params["stream"]:
                return StreamingResponse(_sse(completion.chunks()), media_type="text/event-stream")
            return await run_in_threadpool(completion.complete)
        except _BadRequest as error:
            return error.response()
        except ValueError as error:  # generate_chat's own argument checks
            return _BadRequest(str(error)).response()

    return app


app = create_app()
