"""Sizing: the most capable student at least `--speedup` times faster than the teacher on the target.

Speed is timed where the target's runtime (OpenVINO, ONNX Runtime) runs on this host: each candidate and the teacher
exported to ONNX and run interleaved, batch 1, in seconds. Ratios of latencies carry over between CPUs far better than
absolute times. Elsewhere (TensorRT on a Jetson) the roofline model of the target profile predicts.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import timm
from torch import nn

from procedge.errors import ProcedgeError
from procedge.export import backend_registry
from procedge.export.onnx import export_onnx
from procedge.models.cost import measure_cost
from procedge.models.student import STUDENT_CANDIDATES, create_backbone
from procedge.progress import warn
from procedge.runtime.latency import TimingPolicy, measure_latency
from procedge.targets import Runtime, TargetProfile

PRETRAINED_MIN_SIZE = 64  # smallest input size a pretrained student is tried at (small photos, e.g. 32 px, want it)
PRETRAINED_SIZE_STEP = 16
DEFAULT_SPEEDUP = 4.0  # a student this many times faster than its teacher on the target, unless --speedup says otherwise
TIMING_CLASSES = 10  # the task head every timed network carries (a few classes: its cost is negligible beside the body)

# Short and interleaved: enough to rank candidates and read a speedup to a few percent, in well under a second each.
SIZING_WARMUP_RUNS, SIZING_MIN_RUNS, SIZING_MIN_SECONDS = 10, 40, 0.25


def host_runtime(target: TargetProfile):
    """The runtime that runs `target`'s exports, where this host runs it; None where it cannot (e.g. TensorRT without an
    NVIDIA GPU) or the target's precision is not fp32 (an INT8 graph needs calibration data before it can be timed)."""
    if target.precision != "fp32":
        return None
    runtime = backend_registry.get(target.backend)().model_runtime()
    try:
        runtime.check_available()
    except ProcedgeError:
        return None
    return runtime


def time_networks(target: TargetProfile, networks: dict[str, tuple[nn.Module, int]]) -> dict[str, float]:
    """p50 batch-1 latency in ms of each network (at its input size) exported to ONNX and run, interleaved, on the
    target's runtime on this host (its threads capped at this host's cores)."""
    runtime = host_runtime(target)
    if runtime is None:
        raise ProcedgeError(f"the {target.backend} runtime does not run {target.precision} graphs on this host; predict instead")
    cores = os.cpu_count() or 1
    settings = Runtime(threads=min(target.runtime.threads or cores, cores), execution_providers=target.runtime.execution_providers)
    runs = {}
    with tempfile.TemporaryDirectory(prefix="procedge-sizing-") as tmp:
        for key, (net, size) in networks.items():
            path = Path(tmp) / f"{len(runs)}.onnx"
            export_onnx(net.eval(), (1, 3, size, size), path)
            run, _ = runtime.load(path, "fp32", settings)
            runs[key] = (run, np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32))
        policy = TimingPolicy(warmup_runs=SIZING_WARMUP_RUNS, warmup_seconds=0.0, min_runs=SIZING_MIN_RUNS,
                              min_seconds=SIZING_MIN_SECONDS, max_seconds=2.0)
        stats = measure_latency(runs, policy, block=10, settle=2)
    return {key: s["p50_ms"] for key, s in stats.items()}


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
    """Input sizes at which a pretrained student is tried: the run's, then down in steps of 16 px to 64."""
    return tuple(range(input_size, PRETRAINED_MIN_SIZE - 1, -PRETRAINED_SIZE_STEP)) if input_size >= PRETRAINED_MIN_SIZE else ()


def _speed_rows(target: TargetProfile, teacher: nn.Module, teacher_size: int, speedup: float, tries: list[tuple[str, int, bool]],
                timed: bool | None) -> tuple[list[Candidate], float, float | None, str]:
    """Each try's cost and speedup over the teacher: (rows, teacher's predicted ms, teacher's timed ms or None, how)."""
    backbones = {name: create_backbone(name) for name, _, _ in tries}  # one model per name, traced at each size
    architecture = teacher.pretrained_cfg["architecture"]
    teacher_ms = measure_cost(create_backbone(architecture), teacher_size).predict_ms(target.hardware, target.precision)
    timings: dict = {}
    if timed is None or timed:
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
    below a speedup asked with --speedup (`procedge bench` flags a measured speedup below the asked one either way)."""
    rows, teacher_ms, teacher_timed, how = _speed_rows(target, teacher, teacher_size, speedup, [(student, input_size, pretrained)], timed)
    row = rows[0]
    if speedup_given and row.speedup < speedup:  # otherwise bench flags it against the default, measured
        warn(f"--student {student} at {input_size} px runs at {row.speedup:.1f}x the teacher's speed ({how}), below the "
             f"asked {speedup:g}x")
    return SizingDecision(student, pretrained, "given with --student (not sized)", target.name, target.precision, target.latency_budget_ms,
                          teacher_ms, teacher_timed, speedup, speedup_given, row.predicted_speedup, row.timed_speedup, input_size, (row,))
