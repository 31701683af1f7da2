"""Everything one sandbox app instance shares: state, live config, request log, fault RNG."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

from sandbox.config import SandboxConfig
from sandbox.requestlog import RequestLog
from sandbox.state import Store


class Runtime:
    def __init__(self, config: SandboxConfig, clock: Callable[[], float] | None = None) -> None:
        self.initial_config = config
        self.store = Store(config) if clock is None else Store(config, clock)
        self.requests = RequestLog()
        self._rng_lock = threading.Lock()
        self._rng = random.Random(config.fault_seed)

    @property
    def config(self) -> SandboxConfig:
        return self.store.config

    def set_config(self, config: SandboxConfig) -> None:
        reseed = config.fault_seed != self.config.fault_seed
        self.store.config = config
        if reseed:
            self.reseed()

    def update_config(self, patch: dict[str, Any]) -> SandboxConfig:
        self.set_config(self.config.updated(patch))
        if "fault_seed" in patch:
            self.reseed()  # sending the seed again restarts the same fault sequence
        return self.config

    def reseed(self) -> None:
        with self._rng_lock:
            self._rng = random.Random(self.config.fault_seed)

    def draw(self) -> tuple[float, float]:
        """Two uniform draws per request (fault, slowness), so the sequence is reproducible."""
        with self._rng_lock:
            return self._rng.random(), self._rng.random()

    def reset(self) -> None:
        self.store.reset(self.initial_config)
        self.requests.clear()
        self.reseed()
