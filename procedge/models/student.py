"""Students: timm backbones, and the choice of the most capable one that fits the target's latency budget."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from procedge.models.cost import measure_cost
from procedge.models.pretrained import WEIGHT_PACKAGES, available_offline, pretrained_state
from procedge.models.teacher import check_timm_name, load_checked, read_state_dict
from procedge.errors import ProcedgeError
from procedge.progress import info, warn
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
PRETRAINED_MIN_SIZE = 96  # smallest input size a pretrained student is tried at
PRETRAINED_SIZE_STEP = 16
DEFAULT_SPEEDUP = 4.0  # a student this many times faster than its teacher on the target, unless --speedup says otherwise
TIMING_CLASSES = 10  # the task head every timed network carries (a few classes: its cost is negligible beside the body)


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
    predicted_ms: float  # roofline latency on the target device
    predicted_speedup: float  # the teacher's predicted latency over this one's
    fits: bool  # within the budget and at least the asked speedup
    input_size: int
    pretrained: bool = False  # starts from ImageNet weights found on this machine
    timed_ms: float | None = None  # p50 on the target's runtime on this host (where it runs here)
    timed_speedup: float | None = None

    @property
    def speedup(self) -> float:
        """What sizing goes by: the timed speedup where there is one, else the predicted."""
        return self.timed_speedup if self.timed_speedup is not None else self.predicted_speedup


@dataclass(frozen=True)
class SizingDecision:
    chosen: str
    pretrained: bool
    reason: str
    target: str
    precision: str
    budget_ms: float
    teacher_ms: float  # predicted on the target device
    teacher_timed_ms: float | None  # on the target's runtime on this host
    asked_speedup: float
    speedup_given: bool  # asked with --speedup (else the default)
    predicted_speedup: float
    timed_speedup: float | None
    input_size: int
    candidates: tuple[Candidate, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def pretrained_sizes(input_size: int) -> tuple[int, ...]:
    """Input sizes at which a pretrained student is tried: the run's, then down in steps of 16 px to 96."""
    return tuple(range(input_size, PRETRAINED_MIN_SIZE - 1, -PRETRAINED_SIZE_STEP)) if input_size >= PRETRAINED_MIN_SIZE else ()


def _speed_rows(target: TargetProfile, teacher: nn.Module, teacher_size: int, speedup: float, tries: list[tuple[str, int, bool]],
                timed: bool | None) -> tuple[list[Candidate], float, float | None, str]:
    """Each try's cost and speedup over the teacher: (rows, teacher's predicted ms, teacher's timed ms or None, how)."""
    backbones = {name: create_backbone(name) for name, _, _ in tries}  # one model per name, traced at each size
    architecture = teacher.pretrained_cfg["architecture"]
    teacher_ms = measure_cost(timm.create_model(architecture, num_classes=0, global_pool=""), teacher_size).predict_ms(
        target.hardware, target.precision)
    timings: dict = {}
    if timed is None or timed:
        from procedge.models.timing import host_runtime, time_networks

        if host_runtime(target) is not None:
            heads = {name: timm.create_model(name, num_classes=TIMING_CLASSES) for name, _, _ in tries}
            networks = {(name, size): (heads[name], size) for name, size, _ in tries}
            timings = time_networks(target, {"teacher": (timm.create_model(architecture, num_classes=TIMING_CLASSES), teacher_size),
                                             **networks})
    teacher_timed = timings.get("teacher")
    rows = []
    for name, size, has_weights in tries:
        backbone = backbones[name]
        cost = measure_cost(backbone, size)
        predicted = cost.predict_ms(target.hardware, target.precision)
        timed_ms = timings.get((name, size))
        timed_speedup = teacher_timed / timed_ms if timed_ms else None
        params = sum(p.numel() for p in backbone.parameters()) / 1e6
        fast = (timed_speedup if timed_speedup is not None else teacher_ms / predicted) >= speedup
        rows.append(Candidate(name, cost.flops / 1e9, params, predicted, teacher_ms / predicted,
                              fast and predicted <= target.latency_budget_ms, size, has_weights, timed_ms, timed_speedup))
    how = f"timed on this host's {target.backend}" if timings else "predicted"
    return rows, teacher_ms, teacher_timed, how


def size_student(target: TargetProfile, input_size: int, teacher: nn.Module, teacher_size: int,
                 speedup: float = DEFAULT_SPEEDUP, speedup_given: bool = False,
                 candidates: tuple[str, ...] = STUDENT_CANDIDATES, pretrained: tuple[str, ...] = (),
                 pretrained_at: tuple[int, ...] | None = None, timed: bool | None = None) -> SizingDecision:
    """The most capable student at least `speedup` times faster than the teacher on the target, within its budget.

    Speed is timed on the target's runtime where it runs on this host (`timed` None: wherever it can be; each candidate
    and the teacher exported and run interleaved, batch 1) and predicted with the roofline model elsewhere. The
    `pretrained` names (ImageNet weights on this machine) are also tried at `pretrained_at` (default: `pretrained_sizes`),
    and one that fits is chosen over any student from random weights: a student that starts from what ImageNet taught it
    needs far fewer labelled images than a bigger one that starts from nothing. Capability is compute (GFLOPs at the
    candidate's input size). When none reaches the speedup: an asked one (`speedup_given`) is an error naming the best
    reachable; the default warns and takes the fastest candidate.
    """
    tries = [(name, input_size, False) for name in candidates]
    tries += [(name, size, True) for name in pretrained for size in (pretrained_at or pretrained_sizes(input_size))]
    rows, teacher_ms, teacher_timed, how = _speed_rows(target, teacher, teacher_size, speedup, tries, timed)
    which = f"{speedup:g}x faster than the teacher ({how}) within the {target.latency_budget_ms} ms budget"
    fitting_pretrained = [c for c in rows if c.fits and c.pretrained]
    fitting = [c for c in rows if c.fits and not c.pretrained]
    if fitting_pretrained:
        chosen = max(fitting_pretrained, key=lambda c: (c.gflops, c.input_size))
        reason = f"pretrained ImageNet weights on this machine, most compute at least {which}"
    elif fitting:
        chosen = max(fitting, key=lambda c: c.gflops)
        reason = f"most compute at least {which}"
    else:
        chosen = max(rows, key=lambda c: c.speedup)
        if speedup_given:
            raise ProcedgeError(f"no student candidate reaches --speedup {speedup:g} ({how}); the fastest, {chosen.name} at "
                                f"{chosen.input_size} px, is {chosen.speedup:.1f}x: ask for at most that, or pass --student")
        reason = f"no candidate is {which}; the fastest one ({chosen.speedup:.1f}x)"
        warn(f"no student candidate is {speedup:g}x faster than the teacher ({how}); taking the fastest, {chosen.name} at "
             f"{chosen.input_size} px ({chosen.speedup:.1f}x); pass --speedup {math.floor(chosen.speedup * 10) / 10:g} or less to silence this")
    return SizingDecision(chosen.name, chosen.pretrained, reason, target.name, target.precision, target.latency_budget_ms, teacher_ms,
                          teacher_timed, speedup, speedup_given, chosen.predicted_speedup, chosen.timed_speedup, chosen.input_size,
                          tuple(rows))


def given_student_speed(target: TargetProfile, student: str, input_size: int, pretrained: bool, teacher: nn.Module,
                        teacher_size: int, speedup: float, speedup_given: bool, timed: bool | None = None) -> SizingDecision:
    """The speedup of a student the user named (`--student`): no sizing, but the same record, and a warning where it is
    below the asked speedup."""
    rows, teacher_ms, teacher_timed, how = _speed_rows(target, teacher, teacher_size, speedup, [(student, input_size, pretrained)], timed)
    row = rows[0]
    if row.speedup < speedup:
        warn(f"--student {student} at {input_size} px runs at {row.speedup:.1f}x the teacher's speed ({how}), below the "
             f"asked {speedup:g}x")
    return SizingDecision(student, pretrained, "given with --student (not sized)", target.name, target.precision, target.latency_budget_ms,
                          teacher_ms, teacher_timed, speedup, speedup_given, row.predicted_speedup, row.timed_speedup, input_size, (row,))


def offline_pretrained(candidates: tuple[str, ...] = STUDENT_CANDIDATES + tuple(WEIGHT_PACKAGES)) -> tuple[str, ...]:
    """The candidates whose pretrained weights this machine holds (installed weight packages, the local Hugging Face cache)."""
    return tuple(name for name in candidates if available_offline(name))
