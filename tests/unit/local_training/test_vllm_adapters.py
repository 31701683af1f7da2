"""Loading adapters into vLLM on demand, against a stand-in that follows vLLM's HTTP contract
(tests/support/vllm_standin.py)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import pytest
from fastapi.testclient import TestClient

from service.providers.base import ErrorKind, ProviderError
from service.providers.local.vllm import AdapterLoader, path_on_server, server_root
from tests.support.vllm_standin import create_app


def _adapter(root: Path, name: str) -> str:
    folder = root / name
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(name.encode())
    return str(folder)


@pytest.fixture
def server() -> TestClient:
    return TestClient(create_app("tiny"), base_url="http://vllm")


def _stats(server: TestClient) -> dict:
    return server.get("/standin/stats").json()


def test_first_call_loads_then_the_adapter_answers(server, tmp_path):
    loader = AdapterLoader(server, max_loaded=2)
    path = _adapter(tmp_path, "a")
    missing = server.post("/v1/chat/completions", json={"model": "ft:a", "messages": []})
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "NotFoundError"

    loader.ensure_loaded("ft:a", path)
    loader.ensure_loaded("ft:a", path)  # warm: no second load
    assert _stats(server)["loads"] == ["ft:a"]
    assert loader.loaded() == ["ft:a"]
    reply = server.post(
        "/v1/chat/completions",
        json={"model": "ft:a", "messages": [{"role": "user", "content": "hi"}]},
    ).json()
    assert reply["choices"][0]["message"]["content"].startswith("[ft:a@")


def test_least_recently_used_adapter_is_unloaded_past_the_limit(server, tmp_path):
    loader = AdapterLoader(server, max_loaded=2)
    paths = {name: _adapter(tmp_path, name) for name in "abc"}
    loader.ensure_loaded("a", paths["a"])
    loader.ensure_loaded("b", paths["b"])
    loader.ensure_loaded("a", paths["a"])  # a is now the most recent
    loader.ensure_loaded("c", paths["c"])
    assert sorted(loader.loaded()) == ["a", "c"]
    assert _stats(server)["unloads"] == ["b"]
    loader.ensure_loaded("b", paths["b"])  # cold again: reloaded, evicting a
    assert sorted(loader.loaded()) == ["b", "c"]
    assert _stats(server)["unloads"] == ["b", "a"]


def test_adapters_loaded_by_another_process_count_and_go_first(server, tmp_path):
    other = AdapterLoader(server, max_loaded=2)
    mine = AdapterLoader(server, max_loaded=2)
    paths = {name: _adapter(tmp_path, name) for name in "abc"}
    mine.ensure_loaded("a", paths["a"])
    other.ensure_loaded("b", paths["b"])
    mine.ensure_loaded("c", paths["c"])  # b is unknown to this process: the oldest
    assert sorted(mine.loaded()) == ["a", "c"]
    # Another process unloads "a" behind our back: the next ensure loads it again.
    server.post("/v1/unload_lora_adapter", json={"lora_name": "a"})
    mine.forget("a")
    mine.ensure_loaded("a", paths["a"])
    assert "a" in mine.loaded() and len(mine.loaded()) == 2


def test_refusals_and_outages_are_provider_errors(server, tmp_path):
    loader = AdapterLoader(server, max_loaded=1)
    (tmp_path / "not-an-adapter").mkdir()
    with pytest.raises(ProviderError) as refused:
        loader.ensure_loaded("x", str(tmp_path / "not-an-adapter"))
    assert refused.value.kind == ErrorKind.permanent
    down = AdapterLoader(httpx2.Client(base_url="http://127.0.0.1:9", timeout=1), max_loaded=1)
    with pytest.raises(ProviderError) as unreachable:
        down.ensure_loaded("x", "/nowhere")
    assert unreachable.value.kind == ErrorKind.transient


def test_paths_and_urls():
    assert server_root("http://h:8000/v1") == "http://h:8000"
    assert server_root("http://h:8000/v1/") == "http://h:8000"
    data = Path("/srv/ftq")
    job = data / "local-models" / "ftjob-1" / "final"
    assert path_on_server(job, data, None) == str(job)
    assert path_on_server(job, data, Path("/mnt/ftq")) == "/mnt/ftq/local-models/ftjob-1/final"


def test_standin_streams_the_same_text(server, tmp_path):
    AdapterLoader(server, max_loaded=1).ensure_loaded("s", _adapter(tmp_path, "s"))
    body = {"model": "s", "messages": [{"role": "user", "content": "a b c"}]}
    whole = server.post("/v1/chat/completions", json=body).json()
    text = whole["choices"][0]["message"]["content"]
    streamed = server.post("/v1/chat/completions", json={**body, "stream": True}).text
    pieces = [
        json.loads(line[6:])["choices"][0]["delta"].get("content", "")
        for line in streamed.splitlines()
        if line.startswith("data: {")
    ]
    assert "".join(pieces) == text
