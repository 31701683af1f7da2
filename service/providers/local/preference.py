"""DPO: preference pairs from OpenAI's format, and the loss.

A line is ``{"input": {"messages": [...]}, "preferred_output": [assistant message],
"non_preferred_output": [assistant message]}`` (what the validator calls the DPO format). Each
pair becomes two sequences, prompt + preferred and prompt + rejected, with only the output's
tokens scored; assistant turns inside the prompt are context, never trained.

The loss is the sigmoid DPO loss of Rafailov et al. (2023), the default of TRL's DPOTrainer:
``-log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))`` over sequence log-probabilities,
plus, when ``sft_weight`` > 0, that weight times the preferred answer's mean token NLL (TRL's
``rpo_alpha``). Why not TRL's trainer itself: it drives Hugging Face's Trainer, which owns the
loop — ftq needs a cancel check before every step, its own resumable checkpoint format, events
to its callbacks and its own torchrun launch — so the loss is implemented here (a few lines,
pinned by tests against the closed form) inside ftq's loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.providers.local.batching import Batch, pad
from service.providers.local.data import DatasetError, Example, encode_chat, read_jsonl

PREFERENCE_KEYS = ("input", "preferred_output", "non_preferred_output")


@dataclass(frozen=True)
class PreferencePair:
    chosen: Example
    rejected: Example

    @property
    def n_tokens(self) -> int:
        return self.chosen.n_tokens + self.rejected.n_tokens


@dataclass(frozen=True)
class PreferenceDataset:
    examples: list[PreferencePair]
    n_dropped: int

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def n_tokens(self) -> int:
        return sum(p.n_tokens for p in self.examples)


def is_preference_record(record: dict[str, Any]) -> bool:
    return all(key in record for key in PREFERENCE_KEYS)


def load_preference_dataset(path: Path, tokenizer: Any, max_seq_len: int) -> PreferenceDataset:
    pairs: list[PreferencePair] = []
    dropped = 0
    for line_no, record in read_jsonl(path):
        try:
            pair = encode_preference(record, tokenizer, max_seq_len)
        except DatasetError as exc:
            raise DatasetError(f"{path.name}:{line_no}: {exc}") from exc
        if pair is None:
            dropped += 1
        else:
            pairs.append(pair)
    if not pairs:
        raise DatasetError(f"{path.name}: no preference pair has an answer left to score")
    return PreferenceDataset(examples=pairs, n_dropped=dropped)


def encode_preference(
    record: dict[str, Any], tokenizer: Any, max_seq_len: int
) -> PreferencePair | None:
    """The pair, or None when truncation leaves either answer with nothing scored."""
    if not is_preference_record(record):
        raise DatasetError(
            "DPO needs 'input' (with 'messages'), 'preferred_output' and 'non_preferred_output'"
        )
    source = record["input"]
    if not isinstance(source, dict) or not isinstance(source.get("messages"), list):
        raise DatasetError("'input' must be an object with a 'messages' list")
    # Turns in the prompt are context: an earlier assistant turn is not what is compared.
    prompt = [
        {**m, "weight": 0} if isinstance(m, dict) and m.get("role") == "assistant" else m
        for m in source["messages"]
    ]
    sides = []
    for key in ("preferred_output", "non_preferred_output"):
        output = record[key]
        if (
            not isinstance(output, list)
            or not output
            or not all(isinstance(m, dict) and m.get("role") == "assistant" for m in output)
        ):
            raise DatasetError(f"'{key}' must be a non-empty list of assistant messages")
        example = encode_chat([*prompt, *output], tokenizer)
        example = Example(example.input_ids[:max_seq_len], example.labels[:max_seq_len])
        if example.n_trained_tokens == 0:
            return None
        sides.append(example)
    return PreferencePair(chosen=sides[0], rejected=sides[1])


def pair_batch(pairs: list[PreferencePair], pad_id: int, device: Any) -> Batch:
    """Chosen sequences in rows [0, n), rejected in [n, 2n): one forward for both."""
    return pad([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id, device)


def sequence_logps(model: Any, batch: Batch) -> tuple[Any, Any]:
    """Per row: the summed log-probability of its target tokens, and their count."""
    import torch

    from service.providers.local.data import IGNORE_INDEX

    logits = model(**batch.inputs, use_cache=False).logits.float()
    mask = batch.targets != IGNORE_INDEX
    safe_targets = torch.where(mask, batch.targets, torch.zeros_like(batch.targets))
    token_logps = torch.gather(logits.log_softmax(-1), 2, safe_targets.unsqueeze(-1)).squeeze(-1)
    return (token_logps * mask).sum(-1), mask.sum(-1)


def dpo_losses(
    chosen: Any, rejected: Any, ref_chosen: Any, ref_rejected: Any, beta: float
) -> tuple[Any, Any]:
    """Per-pair sigmoid DPO loss and reward margin beta * ((pi_c - ref_c) - (pi_r - ref_r))."""
    import torch

    margins = beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
    return -torch.nn.functional.logsigmoid(margins), margins


def pair_loss_sum(
    model: Any,
    pairs: list[PreferencePair],
    references: Any,
    beta: float,
    sft_weight: float,
    pad_id: int,
    device: Any,
) -> Any:
    """Sum over ``pairs`` of the DPO loss (plus the weighted NLL of the preferred answer);
    ``references`` is the (n, 2) tensor of the reference model's chosen/rejected log-probs."""
    batch = pair_batch(pairs, pad_id, device)
    logps, counts = sequence_logps(model, batch)
    n = len(pairs)
    refs = references.to(logps.device)
    losses, _ = dpo_losses(logps[:n], logps[n:], refs[:, 0], refs[:, 1], beta)
    if sft_weight:
        losses = losses + sft_weight * (-logps[:n] / counts[:n].clamp(min=1))
    return losses.sum()


def reference_logps(
    model: Any, pairs: list[PreferencePair], batch_size: int, pad_id: int, device: Any
) -> Any:
    """(n, 2) log-probs of each pair's answers under ``model`` (the reference), on CPU."""
    import torch

    was_training = model.training
    model.eval()
    rows = []
    with torch.no_grad():
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            logps, _ = sequence_logps(model, pair_batch(chunk, pad_id, device))
            n = len(chunk)
            rows.append(torch.stack([logps[:n], logps[n:]], dim=1).cpu())
    model.train(was_training)
    return torch.cat(rows)
