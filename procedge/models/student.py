"""Students: timm backbones, and the choice of the most capable one that fits the target's latency budget."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from procedge.models.cost import measure_cost
from procedge.models.pretrained import WEIGHT_PACKAGES, available_offline, pretrained_state
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
PRETRAINED_MIN_SIZE = 128  # smallest input size a pretrained student is tried at
PRETRAINED_SIZE_STEP = 32


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


@dataclass(frozen=True)
class Candidate:
    name: str
    gflops: float
    params_m: float
    predicted_ms: float
    fits: bool
    input_size: int
    pretrained: bool = False  # starts from ImageNet weights found on this machine


@dataclass(frozen=True)
class SizingDecision:
    chosen: str
    pretrained: bool
    reason: str
    target: str
    precision: str
    budget_ms: float
    teacher_ms: float | None
    input_size: int
    candidates: tuple[Candidate, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def pretrained_sizes(input_size: int) -> tuple[int, ...]:
    """Input sizes at which a pretrained student is tried: the run's, then down in steps of 32 px to 128."""
    return tuple(range(input_size, PRETRAINED_MIN_SIZE - 1, -PRETRAINED_SIZE_STEP)) if input_size >= PRETRAINED_MIN_SIZE else ()


def size_student(target: TargetProfile, input_size: int, teacher_ms: float | None = None,
                 candidates: tuple[str, ...] = STUDENT_CANDIDATES, pretrained: tuple[str, ...] = (),
                 pretrained_at: tuple[int, ...] | None = None) -> SizingDecision:
    """Pick the most compute whose predicted batch-1 latency on the target fits the budget.

    The limit is the budget, or the teacher's own predicted latency if that is lower: a student no
    faster than its teacher is not worth distilling. The `pretrained` names (ImageNet weights on this
    machine) are also tried at `pretrained_at` (default: `pretrained_sizes`), and one that fits is chosen
    over any student from random weights: a student that starts from what ImageNet taught it needs far
    fewer labelled images than a bigger one that starts from nothing.
    """
    limit = min(target.latency_budget_ms, teacher_ms) if teacher_ms else target.latency_budget_ms
    rows = []
    tries = [(name, input_size, False) for name in candidates]
    tries += [(name, size, True) for name in pretrained for size in (pretrained_at or pretrained_sizes(input_size))]
    backbones = {name: create_backbone(name) for name, _, _ in tries}  # one model per name, traced at each size
    for name, size, has_weights in tries:
        backbone = backbones[name]
        cost = measure_cost(backbone, size)
        predicted = cost.predict_ms(target.hardware, target.precision)
        params = sum(p.numel() for p in backbone.parameters()) / 1e6
        rows.append(Candidate(name, cost.flops / 1e9, params, predicted, predicted < limit, size, has_weights))
    which = f"the {target.latency_budget_ms} ms budget" + (f" and the teacher's predicted {teacher_ms:.2f} ms" if teacher_ms else "")
    fitting_pretrained = [c for c in rows if c.fits and c.pretrained]
    fitting = [c for c in rows if c.fits and not c.pretrained]
    if fitting_pretrained:
        chosen = max(fitting_pretrained, key=lambda c: (c.gflops, c.input_size))
        reason = f"pretrained ImageNet weights on this machine, most compute within {which}"
    elif fitting:
        chosen = max(fitting, key=lambda c: c.gflops)
        reason = f"most compute within {which}"
    else:
        chosen = min((c for c in rows if not c.pretrained), key=lambda c: c.predicted_ms)
        reason = f"no candidate fits {which}; the fastest one"
    return SizingDecision(chosen.name, chosen.pretrained, reason, target.name, target.precision, target.latency_budget_ms, teacher_ms,
                          chosen.input_size, tuple(rows))


def offline_pretrained(candidates: tuple[str, ...] = STUDENT_CANDIDATES + tuple(WEIGHT_PACKAGES)) -> tuple[str, ...]:
    """The candidates whose pretrained weights this machine holds (installed weight packages, the local Hugging Face cache)."""
    return tuple(name for name in candidates if available_offline(name))
