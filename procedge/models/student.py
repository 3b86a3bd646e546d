"""Students: timm backbones, and the choice of the most capable one that fits the target's latency budget."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from procedge.models.cost import measure_cost
from procedge.models.teacher import check_timm_name, load_checked, read_state_dict
from procedge.progress import info
from procedge.targets import TargetProfile

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
        from procedge.models.pretrained import pretrained_state

        state, source = pretrained_state(name, "--student-weights"), f"timm's pretrained {name}"
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


@dataclass(frozen=True)
class Candidate:
    name: str
    gflops: float
    params_m: float
    predicted_ms: float
    fits: bool


@dataclass(frozen=True)
class SizingDecision:
    chosen: str
    reason: str
    target: str
    precision: str
    budget_ms: float
    teacher_ms: float | None
    input_size: int
    candidates: tuple[Candidate, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def size_student(target: TargetProfile, input_size: int, teacher_ms: float | None = None,
                 candidates: tuple[str, ...] = STUDENT_CANDIDATES) -> SizingDecision:
    """Pick the most compute whose predicted batch-1 latency on the target fits the budget.

    The limit is the budget, or the teacher's own predicted latency if that is lower: a student no
    faster than its teacher is not worth distilling.
    """
    limit = min(target.latency_budget_ms, teacher_ms) if teacher_ms else target.latency_budget_ms
    rows = []
    for name in candidates:
        backbone = create_backbone(name)
        cost = measure_cost(backbone, input_size)
        predicted = cost.predict_ms(target.hardware, target.precision)
        params = sum(p.numel() for p in backbone.parameters()) / 1e6
        rows.append(Candidate(name, cost.flops / 1e9, params, predicted, predicted < limit))
    fitting = [c for c in rows if c.fits]
    which = f"the {target.latency_budget_ms} ms budget" + (f" and the teacher's predicted {teacher_ms:.2f} ms" if teacher_ms else "")
    if fitting:
        chosen = max(fitting, key=lambda c: c.gflops)
        reason = f"most compute within {which}"
    else:
        chosen = min(rows, key=lambda c: c.predicted_ms)
        reason = f"no candidate fits {which}; the fastest one"
    return SizingDecision(chosen.name, reason, target.name, target.precision, target.latency_budget_ms, teacher_ms,
                          input_size, tuple(rows))
