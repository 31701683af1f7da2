"""Applying a training method to a loaded model: which parameters train, and how."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any

from service.providers.local.spec import DpoMethod, FreezeMethod, FullMethod, LoraMethod


class MethodError(ValueError):
    """The method cannot be applied to this model (unknown module names, nothing to train)."""


def apply_method(model: Any, method: FullMethod | FreezeMethod | LoraMethod | DpoMethod) -> Any:
    """Return the model to train (a peft wrapper for LoRA) with requires_grad set."""
    if isinstance(method, DpoMethod):
        return apply_method(model, method.lora or FullMethod())
    if isinstance(method, FullMethod):
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return model
    if isinstance(method, FreezeMethod):
        _apply_freeze(model, method)
        return model
    return _apply_lora(model, method)


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def output_head_name(model: Any) -> str | None:
    head = model.get_output_embeddings()
    if head is None:
        return None
    return next((name for name, module in model.named_modules() if module is head), None)


def decoder_layers(model: Any) -> tuple[str, int]:
    """The qualified name and length of the model's stack of transformer blocks.

    Found structurally (the ModuleList as long as config.num_hidden_layers) so it works across
    architectures that name it model.layers, transformer.h, gpt_neox.layers...
    """
    import torch

    expected = getattr(model.config, "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == expected:
            return name, len(module)
    raise MethodError("cannot find the transformer layer stack of this model")


def _apply_freeze(model: Any, method: FreezeMethod) -> None:
    prefixes: list[str] = []
    if method.trainable_layers:
        stack, n_layers = decoder_layers(model)
        if method.trainable_layers > n_layers:
            raise MethodError(
                f"trainable_layers={method.trainable_layers} but the model has {n_layers} layers"
            )
        prefixes += [f"{stack}.{i}." for i in range(n_layers - method.trainable_layers, n_layers)]
    head = output_head_name(model) if method.train_lm_head else None
    if head:
        prefixes.append(f"{head}.")
    patterns = method.trainable_modules or []
    matched_patterns: set[str] = set()

    for name, parameter in model.named_parameters():
        hits = {p for p in patterns if _matches(name, p)}
        matched_patterns |= hits
        parameter.requires_grad_(bool(hits) or any(name.startswith(p) for p in prefixes))

    unmatched = [p for p in patterns if p not in matched_patterns]
    if unmatched:
        raise MethodError(f"trainable_modules match no parameter: {', '.join(unmatched)}")
    if not any(p.requires_grad for p in model.parameters()):
        raise MethodError("the freeze method leaves no parameter to train")


def _matches(parameter_name: str, pattern: str) -> bool:
    """A glob matches a parameter if it matches its full name or any enclosing module's name,
    either whole or as a dotted suffix ("mlp" matches "model.layers.1.mlp")."""
    parts = parameter_name.split(".")
    candidates = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(fnmatchcase(c, pattern) or fnmatchcase(c, f"*.{pattern}") for c in candidates)


def lora_target_modules(model: Any, method: LoraMethod) -> list[str]:
    """Module-name suffixes for peft: every linear layer of the body for "all-linear" (peft's
    own "all-linear" never includes the head), plus the head when train_lm_head."""
    import torch

    head = output_head_name(model)
    if method.target_modules == "all-linear":
        targets = sorted(
            {
                name.rsplit(".", 1)[-1]
                for name, module in model.named_modules()
                if isinstance(module, torch.nn.Linear) and name != head
            }
        )
    else:
        targets = list(method.target_modules)
    if method.train_lm_head and head and head not in targets:
        targets.append(head)
    if not targets:
        raise MethodError("no LoRA target module found")
    return targets


def _apply_lora(model: Any, method: LoraMethod) -> Any:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=method.rank,
        lora_alpha=method.alpha,
        lora_dropout=method.dropout,
        target_modules=lora_target_modules(model, method),
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:  # peft's "Target modules ... not found in the base model"
        raise MethodError(str(exc)) from exc
