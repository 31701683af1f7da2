"""Serving every team's LoRA adapters from one vLLM server per base model.

The rule: with ``FTQ_LOCAL__INFERENCE_BACKEND=vllm`` a chat completion for a local LoRA
fine-tune goes to vLLM's OpenAI-compatible server, after making sure the adapter is loaded:
vLLM's runtime LoRA endpoints (``POST /v1/load_lora_adapter`` with ``lora_name`` and
``lora_path``, ``POST /v1/unload_lora_adapter``; the server runs with ``--enable-lora`` and
``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``) load it on first use, under its ftq model name, and
unload the least recently used one past ``vllm_max_loaded_adapters``. Full and frozen-layer
fine-tunes are whole models, not adapters: they keep going to ftq's built-in server.

vLLM itself is the truth about what is loaded (``GET /v1/models`` lists adapters with a
``parent``); each API process keeps its own recency order and treats adapters it has not used
as the oldest, so several API processes together still keep the count bounded. An adapter
unloaded by another process between the check and the call answers 404: it is loaded again
and the call retried once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import structlog

from service.config import Settings
from service.providers.base import ErrorKind, ProviderError
from service.providers.local.provider import LocalProvider

log = structlog.get_logger(__name__)

ADAPTER_CONFIG_FILE = "adapter_config.json"


@dataclass(frozen=True)
class ServedModel:
    """Where a local fine-tune is served: its directory and whether it is a LoRA adapter."""

    name: str
    directory: Path
    adapter: bool


class AdapterLoader:
    """Loads adapters into one vLLM server on demand; LRU unload past ``max_loaded``.

    ``http`` is a client whose base URL is the server's root (``http://host:8000``): vLLM's
    adapter endpoints live under ``/v1`` like the OpenAI routes.
    """

    def __init__(self, http: httpx2.Client, max_loaded: int) -> None:
        if max_loaded < 1:
            raise ValueError("max_loaded must be at least 1")
        self.http = http
        self.max_loaded = max_loaded
        self._recent: OrderedDict[str, None] = OrderedDict()  # least recent first
        self._lock = threading.Lock()

    def loaded(self) -> list[str]:
        """The adapters the server has loaded now (its ``/v1/models`` entries with a parent)."""
        response = self._request("GET", "/v1/models")
        return [
            str(model["id"])
            for model in response.json().get("data", [])
            if isinstance(model, dict) and model.get("parent")
        ]

    def ensure_loaded(self, name: str, path: str) -> None:
        """Make ``name`` callable on the server, loading it from ``path`` if needed."""
        with self._lock:
            on_server = self.loaded()
            if name not in on_server:
                self._make_room(on_server)
                self._load(name, path)
            self._recent.pop(name, None)
            self._recent[name] = None

    def forget(self, name: str) -> None:
        """The server no longer has ``name`` (it answered 404 for it)."""
        with self._lock:
            self._recent.pop(name, None)

    def _make_room(self, on_server: list[str]) -> None:
        # Adapters this process never used (loaded by another) count as the oldest.
        order = [n for n in on_server if n not in self._recent] + [
            n for n in self._recent if n in on_server
        ]
        while len(order) >= self.max_loaded:
            victim = order.pop(0)
            self._unload(victim)
            self._recent.pop(victim, None)

    def _load(self, name: str, path: str) -> None:
        response = self._request(
            "POST", "/v1/load_lora_adapter", json={"lora_name": name, "lora_path": path}, ok=(400,)
        )
        if response.status_code == 400 and "already" not in response.text:
            raise ProviderError(
                f"vLLM refused to load the adapter {name!r}: {response.text[:500]}",
                kind=ErrorKind.permanent,
                status_code=400,
            )
        log.info("vllm_adapter_loaded", model=name)

    def _unload(self, name: str) -> None:
        # 404: another process unloaded it first; the goal is reached either way.
        self._request("POST", "/v1/unload_lora_adapter", json={"lora_name": name}, ok=(404,))
        log.info("vllm_adapter_unloaded", model=name)

    def _request(
        self, method: str, path: str, *, json: Any = None, ok: tuple[int, ...] = ()
    ) -> httpx2.Response:
        try:
            response = self.http.request(method, path, json=json)
        except httpx2.HTTPError as exc:
            raise ProviderError(f"vLLM unreachable: {exc}", kind=ErrorKind.transient) from exc
        if response.status_code >= 400 and response.status_code not in ok:
            kind = ErrorKind.transient if response.status_code >= 500 else ErrorKind.permanent
            raise ProviderError(
                f"vLLM answered {response.status_code} to {method} {path}: {response.text[:500]}",
                kind=kind,
                status_code=response.status_code,
            )
        return response


def server_root(openai_base_url: str) -> str:
    """``http://host:8000/v1`` -> ``http://host:8000`` (the adapter routes' base)."""
    url = openai_base_url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def path_on_server(directory: Path, data_dir: Path, server_data_dir: Path | None) -> str:
    """The adapter directory as the vLLM host sees it (its mount of ftq's data folder)."""
    if server_data_dir is None:
        return str(directory)
    try:
        return str(server_data_dir / directory.relative_to(data_dir))
    except ValueError:
        return str(directory)


def served_model(name: str, directory: Path | None) -> ServedModel | None:
    if directory is None:
        return None
    return ServedModel(name, directory, (directory / ADAPTER_CONFIG_FILE).is_file())


class VllmRoutedProvider(LocalProvider):
    """The local provider with LoRA fine-tunes served by vLLM (loaded on first use); whole
    models go to the built-in server at ``inference_url`` as before."""

    def __init__(
        self, inference_url: str, settings: Settings, *, timeout: float, max_retries: int
    ) -> None:
        super().__init__(inference_url, timeout=timeout, max_retries=max_retries)
        local = settings.local
        self.data_dir = settings.data_dir.resolve()
        self.server_data_dir = local.vllm_data_dir
        # vLLM speaks OpenAI's protocol: the same inference-only client, another URL.
        self.vllm = LocalProvider(local.vllm_url, timeout=timeout, max_retries=max_retries)
        self.loader = AdapterLoader(
            httpx2.Client(base_url=server_root(local.vllm_url), timeout=timeout),
            local.vllm_max_loaded_adapters,
        )

    def _adapter(self, model: str) -> tuple[str, str] | None:
        """(name, path on the vLLM host) when ``model`` is a local LoRA fine-tune."""
        served = _served_model(model, self.data_dir)
        if served is None or not served.adapter:
            return None
        return model, path_on_server(served.directory, self.data_dir, self.server_data_dir)

    def _on_vllm(self, adapter: tuple[str, str], call: Callable[[], Any]) -> Any:
        self.loader.ensure_loaded(*adapter)
        try:
            return call()
        except ProviderError as exc:
            if exc.kind != ErrorKind.not_found:
                raise
            # Unloaded by another API process in between: load it again, once.
            self.loader.forget(adapter[0])
            self.loader.ensure_loaded(*adapter)
            return call()

    def chat_completion(self, body: dict[str, Any]) -> dict[str, Any]:
        adapter = self._adapter(body["model"])
        if adapter is None:
            return super().chat_completion(body)
        result: dict[str, Any] = self._on_vllm(adapter, lambda: self.vllm.chat_completion(body))
        return result

    def chat_completion_stream(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        adapter = self._adapter(body["model"])
        if adapter is None:
            return super().chat_completion_stream(body)
        self.loader.ensure_loaded(*adapter)
        return self.vllm.chat_completion_stream(body)

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        adapter = self._adapter(body["model"])
        if adapter is None:
            return super().completion(body)
        result: dict[str, Any] = self._on_vllm(adapter, lambda: self.vllm.completion(body))
        return result


# model name -> where it is served. Only hits are kept: a succeeded job's directory never
# changes, while a miss (a job still training) may succeed later.
_served: dict[tuple[str, Path], ServedModel] = {}
_SERVED_LIMIT = 4096


def _served_model(model: str, data_dir: Path) -> ServedModel | None:
    key = (model, data_dir)
    found = _served.get(key)
    if found is None:
        found = _lookup_served_model(model, data_dir)
        if found is not None:
            if len(_served) >= _SERVED_LIMIT:
                _served.clear()
            _served[key] = found
    return found


# Which directory serves a model name is the jobs domain's knowledge (a succeeded local
# job's ``final/``); the domain registers the lookup, so this adapter imports no domain.
ModelDirectory = Callable[[str], Path | None]
_model_directory: ModelDirectory | None = None


def register_model_directory(lookup: ModelDirectory) -> None:
    global _model_directory
    _model_directory = lookup


def _lookup_served_model(model: str, data_dir: Path) -> ServedModel | None:
    """A succeeded local job's model directory, through the registered lookup."""
    if _model_directory is None:
        return None
    directory = _model_directory(model)
    return served_model(model, directory if directory is not None and directory.is_dir() else None)


_providers: dict[tuple[Any, ...], VllmRoutedProvider] = {}
_providers_lock = threading.Lock()


def vllm_provider(settings: Settings) -> VllmRoutedProvider:
    """One provider per configuration: the loader's recency order outlives a request."""
    local = settings.local
    key = (
        local.resolved_inference_url(),
        local.vllm_url,
        local.vllm_max_loaded_adapters,
        local.vllm_data_dir,
        settings.data_dir,
        settings.provider_timeout_seconds,
        settings.provider_max_retries,
    )
    with _providers_lock:
        if key not in _providers:
            _providers[key] = VllmRoutedProvider(
                local.resolved_inference_url(),
                settings,
                timeout=settings.provider_timeout_seconds,
                max_retries=settings.provider_max_retries,
            )
        return _providers[key]
