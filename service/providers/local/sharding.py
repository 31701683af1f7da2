"""How the ranks of a run hold the model: replicated (one process, or DDP) or sharded (FSDP).

The rule: whatever the strategy, a checkpoint holds the trainable weights by parameter name and
the optimizer state keyed by each trainable parameter's index (``optimizer.state_dict()`` of a
single process), and ``final/`` holds an ordinary model or peft adapter. So a run resumes on
any strategy and number of processes, and its result is served the same way. FSDP gathers
both to rank 0 as full state dicts offloaded to CPU (``torch.distributed.checkpoint``'s
``get_model_state_dict`` / ``get_optimizer_state_dict``) before rank 0 writes them; resuming
reads the full dicts on every rank and re-shards them (``set_*_state_dict``).

FSDP here is FSDP2 (``torch.distributed.fsdp.fully_shard``): each transformer block is one
unit, all-gathered for its forward and backward and freed after, and the root unit holds the
embeddings, final norm and head. Each rank keeps 1/N of the weights, gradients and AdamW
state. On CUDA with bf16 the all-gathers move bf16 weights (gradients are reduced in fp32).
Every FSDP forward is a collective, so ranks must run the same number of them
(``lockstep``): a rank with nothing to score runs a zero-weighted forward.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import structlog

from service.providers.local.methods import decoder_layers
from service.providers.local.spec import Strategy, StrategyRequest

log = structlog.get_logger(__name__)

# Bytes per parameter held by a rank while training with AdamW in fp32 (weights stay fp32
# under bf16 autocast): the weight (4), and for a trainable one its gradient (4) and AdamW's
# two moments (8). DDP adds a gradient bucket per trainable parameter (4).
WEIGHT_BYTES = 4
TRAINABLE_BYTES = 4 + 8
DDP_BUCKET_BYTES = 4
# A replicated run "fits" when its estimate is at most this share of the memory one rank may
# use; the rest is for activations (which grow with batch and sequence length, unknown here),
# the CUDA context and allocator slack.
FIT_FRACTION = 0.6


def estimate_bytes(trainable: int, total: int, processes: int, strategy: Strategy) -> int:
    """Weights, gradients and optimizer state one rank holds (activations excluded)."""
    if strategy == "fsdp":
        return (WEIGHT_BYTES * total + TRAINABLE_BYTES * trainable) // max(1, processes)
    return WEIGHT_BYTES * total + (TRAINABLE_BYTES + DDP_BUCKET_BYTES) * trainable


def choose_strategy(
    requested: StrategyRequest, trainable: int, total: int, device_bytes: int, processes: int
) -> Strategy:
    """``requested`` unless it is "auto": then DDP when the replicated model, its gradients
    and optimizer state fit ``FIT_FRACTION`` of one rank's device memory, else FSDP."""
    if requested != "auto":
        return requested
    replicated = estimate_bytes(trainable, total, processes, "ddp")
    return "ddp" if replicated <= FIT_FRACTION * device_bytes else "fsdp"


def device_memory_bytes(device: Any, local_world: int) -> int:
    """The memory one rank may use: its GPU's, or on CPU the host's RAM split between the
    host's ranks."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(ram // max(1, local_world))


def _full_options(**extra: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, **extra)


def trainable_names(model: Any) -> list[str]:
    """Names of the trainable parameters in the optimizer's order (its parameter list is
    ``[p for p in model.parameters() if p.requires_grad]``)."""
    return [name for name, p in model.named_parameters() if p.requires_grad]


def _trainable_index(model: Any) -> dict[str, int]:
    """Every name of a trainable parameter -> its index in the optimizer; a tied weight
    (embeddings shared with the head) answers to both of its names."""
    order = {id(p): i for i, p in enumerate(p for p in model.parameters() if p.requires_grad)}
    return {
        name: order[id(p)]
        for name, p in model.named_parameters(remove_duplicate=False)
        if id(p) in order
    }


@dataclass
class Replicated:
    """Every rank holds the whole model: one process, or DDP (gradients all-reduced)."""

    device: Any
    world: int = 1
    is_main: bool = True
    lockstep = False

    @property
    def name(self) -> str:
        return "ddp" if self.world > 1 else "single"

    def place(self, model: Any) -> Any:
        return model.to(self.device)

    def wrap(self, model: Any) -> Any:
        """What the training step calls: DDP's wrapper, which all-reduces the gradients."""
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def gather_weights(self, model: Any) -> dict[str, Any] | None:
        from service.providers.local.checkpoints import trainable_state

        return trainable_state(model) if self.is_main else None

    def gather_optimizer(self, model: Any, optimizer: Any) -> dict[str, Any] | None:
        return optimizer.state_dict() if self.is_main else None

    def settle(self, model: Any) -> None:
        """Nothing to do: a replicated model's parameters are always the ones it trains."""

    def load_weights(self, model: Any, weights: dict[str, Any]) -> None:
        import torch

        parameters = dict(model.named_parameters())
        with torch.no_grad():
            for name, tensor in weights.items():
                parameters[name].copy_(tensor)

    def load_optimizer(self, model: Any, optimizer: Any, state: dict[str, Any]) -> None:
        optimizer.load_state_dict(state)

    def final_state_dict(self, model: Any, adapter: bool) -> dict[str, Any] | None:
        return None  # save_pretrained reads the (whole) model itself


@dataclass
class Sharded:
    """FSDP2: every rank holds 1/N of the weights, gradients and optimizer state."""

    device: Any
    world: int
    is_main: bool
    lockstep = True
    name = "fsdp"

    def place(self, model: Any) -> Any:
        """Shard each transformer block, then the rest; fully_shard moves the parameters to
        the mesh's device as it shards them, so a model that does not fit one device is
        never whole on it."""
        import torch
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(self.device.type, (self.world,))
        options: dict[str, Any] = {"mesh": mesh}
        if self.device.type == "cuda" and torch.cuda.is_bf16_supported():
            options["mp_policy"] = MixedPrecisionPolicy(
                param_dtype=torch.bfloat16, reduce_dtype=torch.float32
            )
        stack, _ = decoder_layers(model)
        for block in model.get_submodule(stack):
            fully_shard(block, **options)
        fully_shard(model, **options)
        return model

    def wrap(self, model: Any) -> Any:
        return model  # fully_shard works in place: the sharded module is the model

    def settle(self, model: Any) -> None:
        """Register the sharded parameters again. The root unit stays gathered after a
        forward without backward (the probe, DPO references, evaluation), and then the
        model's parameters are not the ones the optimizer and the state-dict helpers know."""
        from torch.distributed.fsdp import FSDPModule

        for module in model.modules():
            if isinstance(module, FSDPModule):
                module.reshard()

    def gather_weights(self, model: Any) -> dict[str, Any] | None:
        """The trainable weights, whole, on rank 0 (a collective: every rank calls it)."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        self.settle(model)
        full: Any = get_model_state_dict(model, options=_full_options(ignore_frozen_params=True))
        if not self.is_main:
            return None
        return {name: full[name].contiguous() for name in trainable_names(model)}

    def gather_optimizer(self, model: Any, optimizer: Any) -> dict[str, Any] | None:
        """The optimizer state, whole, on rank 0, re-keyed from parameter names to indices:
        exactly what ``optimizer.state_dict()`` gives on one process."""
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        self.settle(model)
        full: Any = get_optimizer_state_dict(model, optimizer, options=_full_options())
        if not self.is_main:
            return None
        index = _trainable_index(model)
        return {
            "state": {index[name]: value for name, value in full["state"].items()},
            "param_groups": [
                {**group, "params": [index[name] for name in group["params"]]}
                for group in full["param_groups"]
            ],
        }

    def load_weights(self, model: Any, weights: dict[str, Any]) -> None:
        """Every rank passes the whole dict; each keeps its shard."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
        )

        set_model_state_dict(
            model, weights, options=StateDictOptions(full_state_dict=True, strict=False)
        )

    def load_optimizer(self, model: Any, optimizer: Any, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        names = trainable_names(model)
        by_name: Any = {
            "state": {names[int(i)]: value for i, value in state["state"].items()},
            "param_groups": [
                {**group, "params": [names[int(i)] for i in group["params"]]}
                for group in state["param_groups"]
            ],
        }
        set_optimizer_state_dict(
            model, optimizer, by_name, options=StateDictOptions(full_state_dict=True)
        )

    def final_state_dict(self, model: Any, adapter: bool) -> dict[str, Any] | None:
        """The model's whole state dict on rank 0 for ``save_pretrained`` (only the trained
        tensors for an adapter: peft saves nothing else)."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        self.settle(model)
        full = get_model_state_dict(model, options=_full_options(ignore_frozen_params=adapter))
        return full if self.is_main else None


Placement = Replicated | Sharded


def placement(strategy: Strategy, device: Any, world: int, is_main: bool) -> Placement:
    """How this run holds the model; ``strategy`` only matters on several processes."""
    if world > 1 and strategy == "fsdp":
        return Sharded(device=device, world=world, is_main=is_main)
    return Replicated(device=device, world=world, is_main=is_main)
