"""Azure OpenAI through the SDK's ``AzureOpenAI`` client.

The calls are OpenAI's; what differs is addressing: ``{endpoint}/openai/...`` with an
``api-version`` query parameter and an ``api-key`` header, and inference goes to a
*deployment* (``/openai/deployments/{name}/chat/completions``), not to a model name. A team
maps model names to deployment names; an unmapped model is assumed to be deployed under its
own name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from openai import AzureOpenAI

from service.providers.openai_provider import OpenAIProvider


@dataclass(frozen=True)
class AzureCredentials:
    endpoint: str  # https://<resource>.openai.azure.com
    api_key: str
    api_version: str
    # (model, deployment) pairs; a tuple keeps the dataclass hashable for the provider cache.
    deployments: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def account(self) -> str:
        # Deployments are not part of the account: they change inference routing only,
        # while uploads and jobs belong to the resource and key.
        material = f"{self.endpoint.rstrip('/')}|{self.api_version}|{self.api_key}"
        return "az_" + hashlib.sha256(material.encode()).hexdigest()[:24]

    def deployment_for(self, model: str) -> str:
        return dict(self.deployments).get(model, model)


class AzureOpenAIProvider(OpenAIProvider):
    name = "azure_openai"

    def __init__(self, credentials: AzureCredentials, *, timeout: float, max_retries: int) -> None:
        # Not OpenAIProvider.__init__: only the client differs, every call is inherited.
        self.credentials = credentials  # type: ignore[assignment]
        self.account = credentials.account
        self._client = AzureOpenAI(
            azure_endpoint=credentials.endpoint,
            api_key=credentials.api_key,
            api_version=credentials.api_version,
            timeout=timeout,
            max_retries=max_retries,
        )

    def _chat_params(self, body: dict[str, Any]) -> dict[str, Any]:
        # The SDK routes on the body's model: /openai/deployments/{model}/chat/completions.
        params = super()._chat_params(body)
        params["model"] = self.credentials.deployment_for(body["model"])  # type: ignore[attr-defined]
        return params
