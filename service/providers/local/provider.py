"""The ``local`` provider as the rest of ftq sees it.

Training never goes through here: submission hands local jobs to the ``training`` queue
(see ``jobs.py``). What remains is inference, and that is an OpenAI-compatible HTTP server —
ftq's own (``ftq inference``, transformers on an inference worker) or vLLM serving the same
adapters — reached through the official SDK exactly like any other upstream. So this is the
openai provider pointed at ``FTQ_LOCAL__INFERENCE_URL``, with the job operations refused.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import NoReturn

from service.config import Settings, get_settings
from service.providers.base import (
    CreateJobRequest,
    ErrorKind,
    ProviderError,
    UpstreamCheckpoint,
    UpstreamEvent,
    UpstreamJob,
)
from service.providers.openai_provider import OpenAICredentials, OpenAIProvider

LOCAL = "local"
# The inference server is internal; vLLM ignores the key unless started with --api-key.
INFERENCE_API_KEY = "ftq-local"


class LocalProvider(OpenAIProvider):
    name = LOCAL

    def __init__(self, inference_url: str, *, timeout: float, max_retries: int) -> None:
        super().__init__(
            OpenAICredentials(base_url=inference_url, api_key=INFERENCE_API_KEY),
            timeout=timeout,
            max_retries=max_retries,
        )
        # Jobs record this account; it must not change when the inference URL does.
        self.account = LOCAL

    def _not_upstream(self, what: str) -> NoReturn:
        raise ProviderError(
            f"{what} is not a provider call for local jobs: ftq's training workers run them.",
            kind=ErrorKind.permanent,
        )

    def find_uploaded_file(self, marker: str) -> str | None:
        self._not_upstream("File upload")

    def upload_file(self, path: Path, filename: str) -> str:
        self._not_upstream("File upload")

    def find_job(self, ftq_job_id: str) -> UpstreamJob | None:
        self._not_upstream("Job lookup")

    def create_job(self, request: CreateJobRequest, *, timeout: float) -> UpstreamJob:
        self._not_upstream("Job creation")

    def get_job(self, upstream_id: str) -> UpstreamJob:
        self._not_upstream("Job polling")

    def list_new_events(self, upstream_id: str, after_event_id: str | None) -> list[UpstreamEvent]:
        self._not_upstream("Event polling")

    def list_checkpoints(self, upstream_id: str) -> list[UpstreamCheckpoint]:
        self._not_upstream("Checkpoint polling")

    def cancel_job(self, upstream_id: str) -> UpstreamJob:
        self._not_upstream("Job cancel")

    def pause_job(self, upstream_id: str) -> UpstreamJob:
        self._not_upstream("Job pause")

    def resume_job(self, upstream_id: str) -> UpstreamJob:
        self._not_upstream("Job resume")


@functools.cache
def _provider(inference_url: str, timeout: float, max_retries: int) -> LocalProvider:
    return LocalProvider(inference_url, timeout=timeout, max_retries=max_retries)


def local_provider(settings: Settings | None = None) -> LocalProvider:
    settings = settings or get_settings()
    if settings.local.inference_backend == "vllm":
        from service.providers.local.vllm import vllm_provider

        return vllm_provider(settings)
    return _provider(
        settings.local.resolved_inference_url(),
        settings.provider_timeout_seconds,
        settings.provider_max_retries,
    )
