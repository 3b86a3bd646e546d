"""The frozen teacher: any timm model plus a checkpoint; the embedded default is ImageNet EfficientNet-Lite0."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from procedge.errors import ProcedgeError
from procedge.models.checkpoints import load_checked, read_state_dict
from procedge.models.features import FeatureTap, tokens_to_grid
from procedge.models.pretrained import pretrained_state

EMBEDDED_TEACHER = "tf_efficientnet_lite0"
# Its input size on the embedded 28 px MNIST task (`distill` and `assess`): with the student at 64 px, sizing finds a student
# at least 4x faster (at 96 px none was: the smallest student's latency is per-op dispatch, and the teacher's too).
EMBEDDED_TEACHER_SIZE = 128
EMBEDDED_MEAN_STD = (0.5, 0.5)  # the TF EfficientNet-Lite weights take inputs scaled to [-1, 1]


def check_timm_name(name: str) -> None:
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise ProcedgeError(f"unknown timm model {name!r}{hint}; see timm.list_models() for valid names")


def create_teacher_model(name: str, weights: Path | None) -> nn.Module:
    """A timm model with weights: a user checkpoint; else the installed weight package (the embedded Lite0), the local
    Hugging Face cache or the hub (one line asking for --teacher-weights if none has them)."""
    check_timm_name(name)
    if weights is None:
        state, source = pretrained_state(name, "--teacher-weights"), f"pretrained {name}"
    else:
        state, source = read_state_dict(weights), str(weights)
    probe = timm.create_model(name, pretrained=False)
    classifier = probe.pretrained_cfg.get("classifier")
    num_classes = state[f"{classifier}.weight"].shape[0] if isinstance(classifier, str) and f"{classifier}.weight" in state else probe.num_classes
    model = probe if num_classes == probe.num_classes else timm.create_model(name, pretrained=False, num_classes=num_classes)
    load_checked(model, state, source)
    return model.eval()


def default_mean_std(name: str, model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if name == EMBEDDED_TEACHER:
        return (EMBEDDED_MEAN_STD[0],) * 3, (EMBEDDED_MEAN_STD[1],) * 3
    cfg = model.pretrained_cfg
    return tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))


def default_stages(model: nn.Module) -> list[str]:
    """The teacher stages ProC-KD taps by default: the last two of timm's feature_info."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise ProcedgeError("this teacher has no timm feature_info; pass the stage module paths in the config (teacher.stages)")
    return [entry["module"] for entry in info[-2:]]


@dataclass
class TeacherOutput:
    stages: list[torch.Tensor]  # (B, C_i, H_i, W_i) per tapped stage
    pooled: torch.Tensor  # (B, F) pre-logits features
    logits: torch.Tensor  # (B, C_teacher) in the teacher's own label space
    task_logits: torch.Tensor | None = None  # (B, C_task) the teacher's linear probe on the student's task, where known


class FrozenTeacher(nn.Module):
    """A timm teacher frozen in eval mode; one forward gives tapped stages, pooled features and logits."""

    def __init__(self, model: nn.Module, stages: list[str]):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.stage_paths = stages
        self._tap = FeatureTap(self.model, stages)
        self._prefix = getattr(model, "num_prefix_tokens", 0)

    def train(self, mode: bool = True) -> "FrozenTeacher":
        return super().train(False)  # stays in eval mode whatever the caller asks

    def forward(self, x: torch.Tensor) -> TeacherOutput:
        """Gradients flow only where a caller asks (a live-teacher method's prompts); the weights never train."""
        feats = self.model.forward_features(x)
        pooled = self.model.forward_head(feats, pre_logits=True)
        logits = self.model.get_classifier()(pooled)
        stages = [tokens_to_grid(t, self._prefix) for t in self._tap.take()]
        return TeacherOutput(stages, pooled, logits)
