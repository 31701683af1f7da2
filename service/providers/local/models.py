"""Finding and loading base models: the allow-list, devices, tokenizer and model loading."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from service.providers.local.settings import LocalTrainingSettings

# Written next to every final model/adapter: base model, method, hyperparameters.
MODEL_INFO_FILE = "ftq_model.json"

# What a hub id looks like ("org/name" or "name"); anything else is taken as a filesystem path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# Enough to load weights, config, tokenizer and chat template; skips e.g. duplicate .bin/.pth.
_SNAPSHOT_PATTERNS = ["*.json", "*.safetensors", "*.jinja", "*.model", "*.txt", "tokenizer*"]


class UnknownBaseModel(LookupError):
    """The requested base model is not on the deployment's allow-list (or is missing)."""

    def __init__(self, name: str, allowed: list[str], reason: str | None = None) -> None:
        self.name = name
        self.allowed = allowed
        detail = (
            reason or f"not an allowed local base model (allowed: {', '.join(allowed) or 'none'})"
        )
        super().__init__(f"{name!r}: {detail}")


def resolve_base_model(name: str, settings: LocalTrainingSettings) -> Path:
    """The local directory of an allow-listed base model, fetching a hub snapshot if needed.

    With ``HF_HUB_OFFLINE=1`` a hub id resolves only from the local cache.
    """
    allowed = sorted(settings.allowed_base_models)
    target = settings.allowed_base_models.get(name)
    if target is None:
        raise UnknownBaseModel(name, allowed)
    path = Path(target).expanduser()
    if path.is_dir():
        return path
    if not _HUB_ID.match(target) or path.is_absolute():
        raise UnknownBaseModel(name, allowed, f"configured path {target} does not exist")
    from huggingface_hub import snapshot_download

    try:
        snapshot = snapshot_download(
            repo_id=target,
            cache_dir=str(settings.models_dir) if settings.models_dir else None,
            allow_patterns=_SNAPSHOT_PATTERNS,
        )
    except Exception as exc:  # offline cache miss, auth, network: all mean "not available"
        raise UnknownBaseModel(name, allowed, f"hub model {target} unavailable: {exc}") from exc
    return Path(snapshot)


def resolve_device(device: str) -> Any:
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def quiet_transformers() -> None:
    """Progress bars and load reports are noise in worker logs."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        # Padding positions are masked out of attention and loss, so any id will do.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path: Path) -> Any:
    """Full-precision weights: the optimizer keeps fp32 masters; autocast handles speed on GPU."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def model_max_length(model_config: Any, tokenizer: Any, requested: int | None) -> int:
    limit = getattr(model_config, "max_position_embeddings", None)
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    # Tokenizers without a limit report a huge sentinel (int(1e30)).
    if limit is None and tokenizer_limit and tokenizer_limit < 10**7:
        limit = tokenizer_limit
    limit = limit or 2048
    return min(requested, limit) if requested else limit
