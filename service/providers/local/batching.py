"""Turning a batch of examples into tensors: padded rows, or packed rows.

The rule: a batch's loss is the sum of per-token losses over the same trained tokens however
the examples are laid out, so packing may change speed but never the loss curve. Targets are
shifted per example here (``targets[i]`` is the token after ``input_ids[i]``, ignored at an
example's last token), so no target ever crosses from one packed example into the next.

Packed rows carry ``position_ids`` restarting at 0 for each example and no attention mask;
transformers then restricts attention to each example (``find_packed_sequence_indices``). That
holds for models built on transformers' mask utilities; ``trainer`` checks it with a probe on
the first batch and falls back to padding where the loss would differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from service.providers.local.data import IGNORE_INDEX, Example


@dataclass(frozen=True)
class Batch:
    """Model inputs plus the shifted targets the loss is computed against."""

    inputs: dict[str, Any]
    targets: Any
    n_tokens: int  # real (non-padding) tokens
    # Sequence positions where some row has a target: the only logits the loss needs.
    scored_positions: Any = None

    @property
    def n_targets(self) -> int:
        return int((self.targets != IGNORE_INDEX).sum())


def shifted_targets(example: Example) -> list[int]:
    return [*example.labels[1:], IGNORE_INDEX]


@dataclass(frozen=True)
class Encoded:
    """An example's input ids and shifted targets as tensors, built once per run so a step
    only concatenates them."""

    input_ids: Any
    targets: Any

    @property
    def n_tokens(self) -> int:
        return int(self.input_ids.shape[0])


def encode(example: Example) -> Encoded:
    import torch

    return Encoded(
        torch.tensor(example.input_ids, dtype=torch.long),
        torch.tensor(shifted_targets(example), dtype=torch.long),
    )


def _batch(
    input_ids: Any, targets: Any, extra: dict[str, Any], n_tokens: int, device: Any
) -> Batch:
    scored = (targets != IGNORE_INDEX).any(0).nonzero().squeeze(1)  # on the host: no sync
    return Batch(
        inputs={"input_ids": input_ids.to(device), **{k: v.to(device) for k, v in extra.items()}},
        targets=targets.to(device),
        n_tokens=n_tokens,
        scored_positions=scored.to(device),
    )


def pad(
    examples: list[Example], pad_id: int, device: Any, encoded: list[Encoded] | None = None
) -> Batch:
    """One example per row, right-padded; padding is masked out of attention and loss.
    ``encoded``: the examples' tensors when the caller keeps them (else built here)."""
    import torch
    from torch.nn.utils.rnn import pad_sequence

    rows = encoded if encoded is not None else [encode(e) for e in examples]
    input_ids = pad_sequence([r.input_ids for r in rows], batch_first=True, padding_value=pad_id)
    targets = pad_sequence([r.targets for r in rows], batch_first=True, padding_value=IGNORE_INDEX)
    lengths = torch.tensor([r.n_tokens for r in rows])
    attention_mask = (torch.arange(input_ids.shape[1]) < lengths[:, None]).long()
    return _batch(
        input_ids, targets, {"attention_mask": attention_mask}, int(lengths.sum()), device
    )


def pack_rows(lengths: list[int], width: int) -> list[list[int]]:
    """First-fit decreasing: indices of the examples in each row, no row over ``width``."""
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for row, free in enumerate(room):
            if lengths[index] <= free:
                rows[row].append(index)
                room[row] -= lengths[index]
                break
        else:
            rows.append([index])
            room.append(width - lengths[index])
    return rows


def pack(
    examples: list[Example],
    pad_id: int,
    device: Any,
    capacity: int | None = None,
    encoded: list[Encoded] | None = None,
) -> Batch:
    """Several examples per row, rows of at most ``capacity`` tokens (default: the longest
    example, which never costs more attention than the padded layout), position ids restarting
    per example. The tensor is as wide as the fullest row."""
    import torch
    from torch.nn.utils.rnn import pad_sequence

    items = encoded if encoded is not None else [encode(e) for e in examples]
    lengths = [r.n_tokens for r in items]
    rows = pack_rows(lengths, max(max(lengths), capacity or 0))
    width = max(sum(lengths[i] for i in row) for row in rows)
    positions = torch.arange(width)
    ids, targets, position_ids = [], [], []
    for members in rows:
        used = sum(lengths[i] for i in members)
        ids.append(torch.cat([items[i].input_ids for i in members]))
        targets.append(torch.cat([items[i].targets for i in members]))
        # The tail is its own segment (positions from 0): attended by nothing real, no target.
        position_ids.append(
            torch.cat([positions[: lengths[i]] for i in members] + [positions[: width - used]])
        )
    return _batch(
        pad_sequence(ids, batch_first=True, padding_value=pad_id),
        pad_sequence(targets, batch_first=True, padding_value=IGNORE_INDEX),
        {"position_ids": torch.stack(position_ids)},
        sum(lengths),
        device,
    )


def token_loss_sum(model: Any, batch: Batch, scored_only: bool = False) -> Any:
    """Sum of the cross-entropy of every target token (fp32 logits).

    ``scored_only``: the model computes logits only at positions where some row has a target
    (transformers' ``logits_to_keep``), so the output head and the softmax skip prompt and
    padding positions; the loss is the same sum over the same targets.
    """
    import torch

    if scored_only:
        keep = batch.scored_positions
        logits = model(**batch.inputs, use_cache=False, logits_to_keep=keep).logits
        targets = batch.targets[:, keep]
    else:
        logits = model(**batch.inputs, use_cache=False).logits
        targets = batch.targets
    return torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
