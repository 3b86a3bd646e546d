"""Single-stream batch-1 latency of several runners, timed in interleaved blocks (torch-free: bench on a device, and
sizing on the host, time models with it)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from procedge.runtime.base import Runner


@dataclass(frozen=True)
class TimingPolicy:
    """Warm-up by count and time, then measure until both a run count and a duration are reached."""

    warmup_runs: int = 20
    warmup_seconds: float = 0.5
    min_runs: int = 200
    min_seconds: float = 2.0
    max_seconds: float = 20.0


def _stats(samples: list[float]) -> dict:
    ms = np.asarray(samples)
    return {
        "runs": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "std_ms": float(ms.std()),
        "throughput_fps": float(1000.0 / ms.mean()),
    }


def measure_latency(runs: dict[str, tuple[Runner, np.ndarray]], policy: TimingPolicy = TimingPolicy(), block: int = 50,
                    settle: int = 3, pause_s: float = 0.02) -> dict[str, dict]:
    """Single-stream batch-1 latency of several models, timed in interleaved blocks of `block` calls.

    Each query starts when the previous one completes; inputs are prepared beforehand. Round-robin
    blocks spread any drift of the machine evenly over the models compared (on a dedicated device
    this equals timing them one after another). Each block starts after a short pause, in which the
    previous model's spinning runtime threads go to sleep, and `settle` untimed calls, so only the
    steady state is timed.
    """
    for run, x in runs.values():
        start, count = time.perf_counter(), 0
        while count < policy.warmup_runs or time.perf_counter() - start < policy.warmup_seconds:
            run(x)
            count += 1
    samples: dict[str, list[float]] = {name: [] for name in runs}
    start = time.perf_counter()
    budget = policy.min_seconds * len(runs)
    while min(len(v) for v in samples.values()) < policy.min_runs or time.perf_counter() - start < budget:
        for name, (run, x) in runs.items():
            time.sleep(pause_s)
            for _ in range(settle):
                run(x)
            for _ in range(block):
                t0 = time.perf_counter_ns()
                run(x)
                samples[name].append((time.perf_counter_ns() - t0) / 1e6)
        if time.perf_counter() - start > policy.max_seconds * len(runs):
            break
    return {name: _stats(values) for name, values in samples.items()}
