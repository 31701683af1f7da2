"""Model calls of a run: sampling and judges, through the team's own providers.

A model resolves as ``/v1/chat/completions`` resolves it (the team's fine-tunes and
checkpoints through the account that trained them, listed base models through the team's
provider), so a run can never reach another team's model. Rate limits surface as
``RateLimitedLater`` with the provider's Retry-After; other provider errors are the item's.
"""

from __future__ import annotations

import threading
from typing import Any

from service.config import get_settings
from service.db import session_scope
from service.errors import FtqError
from service.evals.graders import GraderFailure
from service.jobs.inference import provider_for_model
from service.providers.base import ErrorKind, InferenceProvider, ProviderError


class RateLimitedLater(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"rate limited for {seconds:.1f}s")
        self.seconds = seconds


def price_of(model: str) -> tuple[float, float]:
    """USD per million (input, output) tokens for ``model`` (a fine-tune: its base's, times
    the fine-tuned multiplier); longest matching prefix wins."""
    settings = get_settings().evals
    multiplier = 1.0
    name = model
    if model.startswith("ft:") and model.count(":") >= 2:
        name, multiplier = model.split(":")[1], settings.fine_tuned_multiplier
    best = max((p for p in settings.inference_prices if name.startswith(p)), key=len, default=None)
    if best is None:
        return 0.0, 0.0
    low, high = settings.inference_prices[best]
    return low * multiplier, high * multiplier


def cost_of(model: str, usage: dict[str, Any]) -> float:
    price_in, price_out = price_of(model)
    return (
        int(usage.get("prompt_tokens") or 0) * price_in
        + int(usage.get("completion_tokens") or 0) * price_out
    ) / 1_000_000


class ModelCalls:
    """One run's model access for one team; providers are resolved once per model."""

    def __init__(self, team_id: str) -> None:
        self.team_id = team_id
        self._providers: dict[str, InferenceProvider] = {}
        self._lock = threading.Lock()

    def provider(self, model: str) -> InferenceProvider:
        with self._lock:
            if model not in self._providers:
                with session_scope() as session:
                    self._providers[model] = provider_for_model(session, self.team_id, model)
            return self._providers[model]

    def chat(
        self, model: str, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> dict[str, Any]:
        body = {"model": model, "messages": messages, **params}
        try:
            return self.provider(model).chat_completion(body)
        except ProviderError as error:
            if error.kind == ErrorKind.rate_limited:
                raise RateLimitedLater(
                    error.retry_after or get_settings().evals.default_retry_after_seconds
                ) from error
            raise
        except FtqError as error:
            raise GraderFailure(error.message) from error

    # The grader's Judge protocol -----------------------------------------------------------
    def complete(
        self, model: str, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        try:
            response = self.chat(model, messages, params)
        except ProviderError as error:
            if error.retryable:
                raise
            raise GraderFailure(f"the judge model failed: {error.message}") from error
        choice = (response.get("choices") or [{}])[0]
        text = (choice.get("message") or {}).get("content") or ""
        return text, response.get("usage") or {}

    def embed(self, texts: list[str]) -> list[list[float]]:
        model = get_settings().evals.embedding_model
        provider = self.provider(get_settings().fine_tunable_models[0])
        client = getattr(provider, "_client", None)
        if client is None:
            raise GraderFailure("the team's provider offers no embeddings endpoint")
        try:
            result = provider._call(client.embeddings.create, input=texts, model=model)  # type: ignore[attr-defined]
        except ProviderError as error:
            if error.kind == ErrorKind.rate_limited:
                raise RateLimitedLater(
                    error.retry_after or get_settings().evals.default_retry_after_seconds
                ) from error
            if error.retryable:
                raise
            raise GraderFailure(f"embeddings failed: {error.message}") from error
        return [list(d.embedding) for d in result.data]
