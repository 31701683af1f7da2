"""Settings for the local provider; embedded in the main settings as ``Settings.local``.

Set through the environment with the nested delimiter, e.g. ``FTQ_LOCAL__TORCH_THREADS=4`` or
``FTQ_LOCAL__ALLOWED_BASE_MODELS='{"llama-3.2-1b": "/models/Llama-3.2-1B-Instruct"}'``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LocalTrainingSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    # Public base-model name -> local directory or hub id. Only these can be fine-tuned: a job
    # may not name an arbitrary path on the worker's disk or an arbitrary hub repository.
    allowed_base_models: dict[str, str] = Field(default_factory=dict)
    # Hub snapshots are cached here (the hub's default cache when None).
    models_dir: Path | None = None

    # On a shared CPU more threads can be far slower (a busy sibling core stalls every
    # parallel op), so the default is one; raise it on dedicated training hosts.
    torch_threads: int = Field(default=1, ge=1)
    checkpoint_every_steps: int = Field(default=100, ge=1)
    eval_every_steps: int = Field(default=50, ge=1)
    log_every_steps: int = Field(default=1, ge=1)
    # None: the model's own limit (max_position_embeddings).
    max_seq_len: int | None = Field(default=None, ge=8)
    # "auto": cuda when available, else cpu. Any torch device string otherwise.
    device: str = "auto"
    # Keep this many newest checkpoints on the worker's disk (callers copy each one to storage
    # in on_checkpoint, so older local copies are only resume points).
    keep_checkpoints: int = Field(default=2, ge=1)

    # Base learning rates per method; the job's learning_rate_multiplier scales them. These
    # are what worked on the tiny test model (LoRA at 1e-2 never learned).
    learning_rate_full: float = Field(default=1e-3, gt=0)
    learning_rate_freeze: float = Field(default=3e-3, gt=0)
    learning_rate_lora: float = Field(default=3e-3, gt=0)

    # Processes one job may ask for (``resources.processes``): torchrun ranks on this worker,
    # one per device on GPU hosts. 1 keeps every job in the worker's own process.
    max_processes: int = Field(default=1, ge=1, le=64)
    # Recompute activations in the backward pass: less memory, about a third more compute.
    gradient_checkpointing: bool = False
    # Pack each batch's examples into fewer rows (no padding between them; attention kept
    # within each example). Used only where a probe shows it leaves the loss unchanged.
    packing: bool = True
    learning_rate_dpo: float = Field(default=5e-4, gt=0)

    inference_cache_size: int = Field(default=2, ge=1)
    # "builtin": ftq's inference server (`ftq inference`). "vllm": LoRA adapters are served by
    # a vLLM OpenAI-compatible server started with --enable-lora and runtime LoRA updating;
    # full fine-tunes still go to the built-in server.
    inference_backend: Literal["builtin", "vllm"] = "builtin"
    vllm_url: str = "http://127.0.0.1:8000/v1"
    # Adapters kept loaded in vLLM; past this the least recently used is unloaded. Keep it
    # at or below vLLM's --max-loras x a few (vLLM swaps loaded adapters into GPU slots).
    vllm_max_loaded_adapters: int = Field(default=8, ge=1)
    # Where the vLLM host mounts ftq's data folder, when its path differs there.
    vllm_data_dir: Path | None = None

    def base_learning_rate(self, method_type: str) -> float:
        rates = {
            "full": self.learning_rate_full,
            "freeze": self.learning_rate_freeze,
            "lora": self.learning_rate_lora,
            "dpo": self.learning_rate_dpo,
        }
        return rates[method_type]
