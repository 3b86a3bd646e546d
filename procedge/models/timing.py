"""Batch-1 latency of candidate networks on the target's own runtime, where that runtime runs on this host.

Sizing asks how much faster a student is than its teacher. A roofline prediction answers for any device; where the
target's runtime (OpenVINO, ONNX Runtime) is installed here, exporting each candidate and timing it in that runtime
answers with a measurement, in seconds. Ratios of latencies carry over between CPUs far better than absolute times.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from torch import nn

from procedge.errors import ProcedgeError
from procedge.targets import Runtime, TargetProfile

# Short and interleaved: enough to rank candidates and read a speedup to a few percent, in well under a second each.
SIZING_WARMUP_RUNS, SIZING_MIN_RUNS, SIZING_MIN_SECONDS = 10, 40, 0.25


def host_runtime(target: TargetProfile):
    """The runtime that runs `target`'s exports, loaded with its settings capped at this host's cores; None where this
    host cannot run it (e.g. TensorRT without an NVIDIA GPU) or the target's precision is not fp32 (an INT8 graph needs
    calibration data before it can be timed)."""
    from procedge.export import backend_registry

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
    from procedge.bench import TimingPolicy, measure_latency
    from procedge.export.onnx import export_onnx

    import numpy as np

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
