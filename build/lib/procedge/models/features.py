"""Tap intermediate features by module path with forward hooks, so any timm model works unedited."""

from __future__ import annotations

import math

import torch
from torch import nn

from procedge.errors import ProcedgeError


def tokens_to_grid(x: torch.Tensor, num_prefix_tokens: int = 0) -> torch.Tensor:
    """(B, N, C) ViT tokens -> (B, C, H, W) grid, dropping the class/register tokens timm puts first."""
    if x.ndim == 4:
        return x
    if x.ndim != 3:
        raise ValueError(f"cannot make a spatial grid from a feature of shape {tuple(x.shape)}")
    x = x[:, num_prefix_tokens:]
    side = math.isqrt(x.shape[1])
    if side * side != x.shape[1]:
        raise ValueError(f"{x.shape[1]} patch tokens do not form a square grid")
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], side, side)


class FeatureTap:
    """Records the outputs of the named submodules during each forward pass."""

    def __init__(self, model: nn.Module, paths: list[str]):
        modules = dict(model.named_modules())
        missing = [p for p in paths if p not in modules]
        if missing:
            raise ProcedgeError(
                f"model has no module {missing[0]!r} to tap; pick module paths from model.feature_info or named_modules()"
            )
        self.paths = list(paths)
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [modules[p].register_forward_hook(self._hook(p)) for p in paths]

    def _hook(self, path: str):
        def hook(_module, _inputs, output):
            self.outputs[path] = output

        return hook

    def take(self) -> list[torch.Tensor]:
        outs = [self.outputs[p] for p in self.paths]
        self.outputs = {}
        return outs

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
