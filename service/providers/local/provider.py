"""The ``local`` provider as the rest of ftq sees it.

Training never goes through here: the local runner (``service.jobs.runners.local``) hands
jobs to the ``training`` queue. What remains is inference, and that is an OpenAI-compatible
HTTP server — ftq's own (``ftq inference``, transformers on an inference worker) or vLLM
serving the same adapters — reached through the official SDK exactly like any other
upstream. So this is an inference-only provider pointed at ``FTQ_LOCAL__INFERENCE_URL``: it
has no file or job operations to stub.
"""

from __future__ import annotations

import functools

from service.config import Settings, get_settings
from service.providers.openai_provider import OpenAICredentials, OpenAIInference

LOCAL = "local"
# The inference server is internal; vLLM ignores the key unless started with --api-key.
INFERENCE_API_KEY = "ftq-local"


class LocalProvider(OpenAIInference):
    name = LOCAL

    def __init__(self, inference_url: str, *, timeout: float, max_retries: int) -> None:
        super().__init__(
            OpenAICredentials(base_url=inference_url, api_key=INFERENCE_API_KEY),
            timeout=timeout,
            max_retries=max_retries,
        )
        # Jobs record this account; it must not change when the inference URL does.
        self.account = LOCAL


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
