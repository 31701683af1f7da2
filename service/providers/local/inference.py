"""Chat completions with locally fine-tuned models (transformers ``generate``).

A model directory is either a ``final/`` written by the trainer (a full model, or a LoRA
adapter plus ``ftq_model.json`` naming its base) or any plain transformers model directory.
Loaded models are kept in a small LRU cache, since loading dominates a short completion.
"""

from __future__ import annotations

import json
import queue
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.providers.local.data import message_text
from service.providers.local.models import (
    MODEL_INFO_FILE,
    load_causal_lm,
    load_tokenizer,
    quiet_transformers,
    resolve_device,
)
from service.providers.local.settings import LocalTrainingSettings

ADAPTER_CONFIG_FILE = "adapter_config.json"


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    tokenizer: Any
    device: Any


class LocalModelCache:
    """LRU of loaded models keyed by their resolved directory; thread-safe."""

    def __init__(self, max_size: int = 2, device: str = "auto") -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size
        self.device = device
        self._entries: OrderedDict[Path, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: LocalTrainingSettings) -> LocalModelCache:
        return cls(max_size=settings.inference_cache_size, device=settings.device)

    def get(self, model_dir: Path) -> LoadedModel:
        key = Path(model_dir).resolve()
        # Loading under the lock: two requests for the same cold model load it once.
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            loaded = load_for_inference(key, self.device)
            self._entries[key] = loaded
            while len(self._entries) > self.max_size:
                self._entries.popitem(last=False)
            return loaded

    def __contains__(self, model_dir: Path) -> bool:
        return Path(model_dir).resolve() in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def load_for_inference(model_dir: Path, device: str = "auto") -> LoadedModel:
    quiet_transformers()
    target = resolve_device(device)
    if (model_dir / ADAPTER_CONFIG_FILE).is_file():
        from peft import PeftModel

        base = load_causal_lm(adapter_base_path(model_dir))
        model = PeftModel.from_pretrained(base, model_dir)
    else:
        model = load_causal_lm(model_dir)
    model.to(target)
    model.eval()
    return LoadedModel(model=model, tokenizer=load_tokenizer(model_dir), device=target)


def adapter_base_path(model_dir: Path) -> Path:
    """The base model an adapter was trained on: ftq's record first, peft's as a fallback."""
    info_file = model_dir / MODEL_INFO_FILE
    if info_file.is_file():
        return Path(json.loads(info_file.read_text(encoding="utf-8"))["base_model_path"])
    config = json.loads((model_dir / ADAPTER_CONFIG_FILE).read_text(encoding="utf-8"))
    return Path(config["base_model_name_or_path"])


_default_cache: LocalModelCache | None = None
_default_cache_lock = threading.Lock()


def default_cache() -> LocalModelCache:
    global _default_cache
    with _default_cache_lock:
        if _default_cache is None:
            _default_cache = LocalModelCache()
        return _default_cache


def configure_default_cache(settings: LocalTrainingSettings) -> LocalModelCache:
    """Replace the process-wide cache with one sized and placed by settings."""
    global _default_cache
    with _default_cache_lock:
        _default_cache = LocalModelCache.from_settings(settings)
        return _default_cache


def generate_chat(
    model_dir: Path,
    messages: list[dict],
    *,
    max_tokens: int,
    temperature: float,
    stream: bool,
    top_p: float = 1.0,
    cache: LocalModelCache | None = None,
) -> str | Iterator[str]:
    """Complete a chat: the assistant's reply as one string, or as text pieces when ``stream``.

    Greedy when ``temperature == 0``; stops at eos or after ``max_tokens`` new tokens. The
    streamed pieces join to exactly the non-streamed reply.
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    if temperature < 0:
        raise ValueError("temperature must be >= 0")
    loaded = (cache or default_cache()).get(model_dir)
    prompt = _prompt_ids(loaded, messages)
    kwargs = _generation_kwargs(loaded.tokenizer, max_tokens, temperature, top_p)
    if stream:
        return _stream(loaded, prompt, kwargs)
    import torch

    with torch.no_grad():
        output = loaded.model.generate(**prompt, **kwargs)
    new_tokens = output[0, prompt["input_ids"].shape[1] :].tolist()
    return _decode(loaded.tokenizer, new_tokens)


def _prompt_ids(loaded: LoadedModel, messages: list[dict]) -> dict[str, Any]:
    tokenizer = loaded.tokenizer
    clean = [{"role": m["role"], "content": message_text(m.get("content"))} for m in messages]
    # Rendered to text, then tokenized without extra special tokens: exactly how the trainer
    # tokenized the training conversations.
    text = tokenizer.apply_chat_template(clean, tokenize=False, add_generation_prompt=True)
    encoded = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    return {
        "input_ids": encoded["input_ids"].to(loaded.device),
        "attention_mask": encoded["attention_mask"].to(loaded.device),
    }


def _generation_kwargs(
    tokenizer: Any, max_tokens: int, temperature: float, top_p: float
) -> dict[str, Any]:
    from transformers import GenerationConfig

    sampling = temperature > 0
    config = GenerationConfig(
        max_new_tokens=max_tokens,
        do_sample=sampling,
        temperature=temperature if sampling else None,
        top_p=top_p if sampling else None,
        top_k=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return {"generation_config": config}


def _decode(tokenizer: Any, token_ids: list[int]) -> str:
    return tokenizer.decode(token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


class _QueueStreamer:
    """transformers streamer protocol (put/end) feeding token ids to a queue."""

    _END = object()

    def __init__(self) -> None:
        self.queue: queue.Queue[Any] = queue.Queue()
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate() first hands over the prompt itself
            self._prompt_seen = True
            return
        self.queue.put(value.reshape(-1).tolist())

    def end(self) -> None:
        self.queue.put(self._END)

    def fail(self, exc: BaseException) -> None:
        self.queue.put(exc)


def _stream(loaded: LoadedModel, prompt: dict[str, Any], kwargs: dict[str, Any]) -> Iterator[str]:
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    streamer = _QueueStreamer()
    abandoned = threading.Event()

    class _StopWhenAbandoned(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **_: Any) -> Any:
            return torch.full((input_ids.shape[0],), abandoned.is_set(), dtype=torch.bool)

    def run() -> None:
        try:
            with torch.no_grad():
                loaded.model.generate(
                    **prompt,
                    **kwargs,
                    streamer=streamer,
                    stopping_criteria=StoppingCriteriaList([_StopWhenAbandoned()]),
                )
        except BaseException as exc:
            streamer.fail(exc)

    def pieces() -> Iterator[str]:
        worker = threading.Thread(target=run, name="ftq-local-generate", daemon=True)
        worker.start()
        token_ids: list[int] = []
        emitted = ""
        try:
            while True:
                item = streamer.queue.get()
                if item is _QueueStreamer._END:
                    break
                if isinstance(item, BaseException):
                    raise item
                token_ids.extend(item)
                text = _decode(loaded.tokenizer, token_ids)
                # A trailing U+FFFD is usually half of a multi-byte character: wait for the rest.
                ready = text.rstrip("\ufffd")
                if len(ready) > len(emitted) and ready.startswith(emitted):
                    yield ready[len(emitted) :]
                    emitted = ready
            text = _decode(loaded.tokenizer, token_ids)
            if text != emitted and text.startswith(emitted):
                yield text[len(emitted) :]
        finally:
            abandoned.set()  # the consumer stopped early (or we finished): end generation
            worker.join()

    return pieces()
