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

    @property
    def n_targets(self) -> int:
        return int((self.targets != IGNORE_INDEX).sum())


def shifted_targets(example: Example) -> list[int]:
    return [*example.labels[1:], IGNORE_INDEX]


def pad(examples: list[Example], pad_id: int, device: Any) -> Batch:
    """One example per row, right-padded; padding is masked out of attention and loss."""
    import torch

    width = max(e.n_tokens for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    targets = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = example.n_tokens
        input_ids[row, :n] = torch.tensor(example.input_ids)
        targets[row, :n] = torch.tensor(shifted_targets(example))
        attention_mask[row, :n] = 1
    return Batch(
        inputs={"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)},
        targets=targets.to(device),
        n_tokens=sum(e.n_tokens for e in examples),
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


def pack(examples: list[Example], pad_id: int, device: Any, capacity: int | None = None) -> Batch:
    """Several examples per row, rows of at most ``capacity`` tokens (default: the longest
    example, which never costs more attention than the padded layout), position ids restarting
    per example. The tensor is as wide as the fullest row."""
    import torch

    lengths = [e.n_tokens for e in examples]
    rows = pack_rows(lengths, max(max(lengths), capacity or 0))
    width = max(sum(lengths[i] for i in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    for row, members in enumerate(rows):
        cursor = 0
        for index in members:
            example = examples[index]
            n = example.n_tokens
            input_ids[row, cursor : cursor + n] = torch.tensor(example.input_ids)
            targets[row, cursor : cursor + n] = torch.tensor(shifted_targets(example))
            position_ids[row, cursor : cursor + n] = torch.arange(n)
            cursor += n
        # The tail is its own segment (positions from 0): attended by nothing real, no target.
        position_ids[row, cursor:] = torch.arange(width - cursor)
    return Batch(
        inputs={"input_ids": input_ids.to(device), "position_ids": position_ids.to(device)},
        targets=targets.to(device),
        n_tokens=sum(e.n_tokens for e in examples),
    )


def token_loss_sum(model: Any, batch: Batch) -> Any:
    """Sum of the cross-entropy of every target token (fp32 logits)."""
    import torch

    logits = model(**batch.inputs, use_cache=False).logits
    return torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, logits.shape[-1]),
        batch.targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
