"""Students: the candidate timm backbones (sizing picks among them: `procedge.sizing`), built without their head."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from procedge.models.pretrained import WEIGHT_PACKAGES, available_offline, pretrained_state
from procedge.models.checkpoints import load_checked, read_state_dict
from procedge.models.teacher import check_timm_name
from procedge.progress import info

# A ladder across widths and depths; capability is ranked by compute at the run's input size.
STUDENT_CANDIDATES = (
    "mobilenetv3_small_050",
    "mobilenetv3_small_075",
    "mobilenetv3_small_100",
    "mobilenetv3_large_075",
    "mobilenetv3_large_100",
    "efficientnet_b0",
    "resnet10t",
    "resnet18",
    "resnet34",
    "resnet50",
)


def create_backbone(name: str, weights: Path | None = None, pretrained: bool = False) -> nn.Module:
    """A timm backbone without its head: random, or from a checkpoint file (`weights`), or from timm's pretrained
    weights (`pretrained`: the local Hugging Face cache, else the hub). A checkpoint's classifier head, of any size,
    is dropped (the method builds the task's head) and reported; any other mismatch is one line naming the tensor."""
    check_timm_name(name)
    backbone = timm.create_model(name, pretrained=False, num_classes=0, global_pool="")
    if weights is None and not pretrained:
        return backbone
    if weights is not None:
        state, source = read_state_dict(weights), str(weights)
    else:
        state, source = pretrained_state(name, "--student-weights"), f"pretrained {name}"
    classifier = backbone.pretrained_cfg.get("classifier")
    head = [k for k in state if isinstance(classifier, str) and k.startswith(f"{classifier}.")]
    if head:
        classes = state[f"{classifier}.weight"].shape[0] if f"{classifier}.weight" in state else "?"
        info(f"student {name}: the checkpoint's {classes}-class head ({classifier}) is replaced by the task's")
    load_checked(backbone, {k: v for k, v in state.items() if k not in head}, source, "check the --student name")
    info(f"student {name} starts from {source}")
    return backbone


def feature_channels(backbone: nn.Module, input_size: int) -> int:
    with torch.no_grad():
        was_training = backbone.training
        backbone.eval()
        channels = backbone.forward_features(torch.zeros(1, 3, input_size, input_size)).shape[1]
        backbone.train(was_training)
    return channels


def offline_pretrained(candidates: tuple[str, ...] = STUDENT_CANDIDATES + tuple(WEIGHT_PACKAGES)) -> tuple[str, ...]:
    """The candidates whose pretrained weights this machine holds (installed weight packages, the local Hugging Face cache)."""
    return tuple(name for name in candidates if available_offline(name))
