"""Deployable classifiers: [0, 1] RGB in, logits out, normalisation inside the graph."""

from __future__ import annotations

import torch
from torch import nn


class Normalize(nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class StudentNet(nn.Module):
    """Student backbone's last-stage map followed by a method's head (folded, plain or unfolded)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, mean, std):
        super().__init__()
        self.normalize, self.backbone, self.head = Normalize(mean, std), backbone, head

    def forward(self, x):
        return self.head(self.backbone.forward_features(self.normalize(x)))


class TeacherNet(nn.Module):
    """The frozen teacher with its linear probe as the task head: the teacher's own accuracy on the task."""

    def __init__(self, model: nn.Module, probe: nn.Linear, mean, std):
        super().__init__()
        self.normalize, self.model, self.probe = Normalize(mean, std), model, probe

    def forward(self, x):
        return self.probe(self.model.forward_head(self.model.forward_features(self.normalize(x)), pre_logits=True))
