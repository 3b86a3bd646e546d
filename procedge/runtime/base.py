"""Runtimes behind a registry: each loads an exported model file into a batch-1 runner, and says whether it can.

No PyTorch and nothing from `procedge.export` here: the device install of bench and predict runs on this alone.
Adding a runtime is one module with one `@runtime_registry.register` class.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np

from procedge.errors import ProcedgeError
from procedge.metrics import top1
from procedge.registry import Registry
from procedge.targets import Runtime

Runner = Callable[[np.ndarray], np.ndarray]  # (1, 3, S, S) float32 in [0, 1] -> (1, classes) logits


class ModelRuntime:
    """Loads one kind of exported model file (`load`) with the target's runtime settings."""

    name: ClassVar[str]  # set by `runtime_registry.register`
    module: ClassVar[str]  # the Python package `load` imports
    install_hint: ClassVar[str]

    def check_available(self) -> None:
        """One line if this machine cannot run the runtime (its package, or the device it needs, is missing)."""
        try:
            importlib.import_module(self.module)
        except ImportError as exc:
            raise ProcedgeError(f"{self.name} needs the {self.module} package: {self.install_hint}") from exc

    def check_compatible(self, manifest: dict, path: Path) -> None:
        """Refuse, in one line, a model file this installed runtime cannot load (built by another version or device)."""

    def load(self, path: Path, precision: str = "fp32", settings: Runtime | None = None) -> tuple[Runner, dict]:
        """A batch-1 runner for a model exported at `precision`, with the target's runtime `settings` (threads,
        execution providers), and the settings it actually uses."""
        raise NotImplementedError


runtime_registry: Registry[type[ModelRuntime]] = Registry("runtime")


def network_of(variant: str) -> str:
    """Which network's inputs (held-out and calibration arrays, at its size) a variant reads: "teacher" or "student"."""
    return "teacher" if variant == "teacher" else "student"


def accuracy(run, images: np.ndarray, labels: np.ndarray, batch_size: int = 1) -> float:
    """Top-1 on uint8 images; exported graphs have a static batch of 1, eager PyTorch takes any batch."""
    return top1((run(images[start:start + batch_size].astype(np.float32) / 255.0), labels[start:start + batch_size])
                for start in range(0, len(images), batch_size))
