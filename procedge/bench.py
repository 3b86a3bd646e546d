"""`procedge bench`: single-stream batch-1 latency and held-out accuracy of every export, student vs teacher.

Imports only the runtimes it needs (PyTorch only for the `pytorch` row), so it runs on a device with
just OpenVINO or ONNX Runtime installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from procedge.errors import ProcedgeError
from procedge.io import write_json
from procedge.runtime import MANIFEST, NotBuiltHere, Runner, accuracy, discover_exports, load_export, network_of, read_manifest
from procedge.runtime.latency import TimingPolicy, measure_latency
from procedge.progress import progress_bar
from procedge.run import RunDir
from procedge.targets import Hardware


def host_hardware(seconds: float = 0.5) -> Hardware:
    """This machine's figures as the runtime sees them, from three ONNX micro-graphs run in ONNX Runtime:
    a large 3x3 convolution (achieved FLOP/s), an Add over 64 MB tensors (memory bandwidth), and a
    chain of small depthwise convolutions (per-op dispatch and thread-sync cost)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    def session(nodes, inputs, initializers=()):
        graph = helper.make_graph(nodes, "micro", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                                  list(initializers))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def per_call(sess, feeds) -> float:
        sess.run(None, feeds)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            sess.run(None, feeds)
            calls += 1
        return (time.perf_counter() - start) / calls

    rng = np.random.default_rng(0)
    c, hw = 128, 56
    weight = numpy_helper.from_array(rng.standard_normal((c, c, 3, 3)).astype(np.float32), "w")
    conv = session([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])], [weight])
    gflops = 2 * c * c * 9 * hw * hw / per_call(conv, {"x": rng.standard_normal((1, c, hw, hw)).astype(np.float32)}) / 1e9

    big = np.ones(16 * 2**20, dtype=np.float32)
    add = session([helper.make_node("Add", ["a", "b"], ["y"])],
                  [helper.make_tensor_value_info(n, TensorProto.FLOAT, [big.size]) for n in ("a", "b")])
    bandwidth = 3 * big.nbytes / per_call(add, {"a": big, "b": big}) / 1e9

    chain, small = 64, (1, 64, 8, 8)  # depthwise 3x3 on a small map: negligible FLOPs, real dispatch and sync
    names = ["x"] + [f"t{i}" for i in range(chain - 1)] + ["y"]
    dw = numpy_helper.from_array(rng.standard_normal((small[1], 1, 3, 3)).astype(np.float32), "dw")
    tiny = session([helper.make_node("Conv", [names[i], "dw"], [names[i + 1]], pads=[1, 1, 1, 1], group=small[1]) for i in range(chain)],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(small))], [dw])
    overhead_us = per_call(tiny, {"x": np.ones(small, np.float32)}) / chain * 1e6
    return Hardware(name=cpu_model(), cores=os.cpu_count() or 1, peak_gflops={"fp32": gflops, "fp16": gflops, "int8": gflops},
                    memory_bandwidth_gbs=bandwidth, efficiency=1.0, layer_overhead_us=overhead_us)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def cpu_model() -> str:
    """The CPU's marketing name: py-cpuinfo (x86 and ARM), else /proc/cpuinfo, else what `platform` knows."""
    try:
        import cpuinfo

        brand = cpuinfo.get_cpu_info().get("brand_raw")
        if brand:
            return brand
    except Exception:  # py-cpuinfo probes the CPU in a subprocess; any failure falls back to reading the OS's files
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def predict_ms(layer_costs: list[list[float]], hardware: Hardware, precision: str) -> float:
    from procedge.models.cost import LayerCost, ModelCost

    return ModelCost(tuple(LayerCost("", f, e) for f, e in layer_costs)).predict_ms(hardware, precision)


@dataclass
class BenchRow:
    model: str  # a variant of the run: "student", a method's own (e.g. its twin without augmentation) or "teacher"
    format: str
    precision: str
    status: str = "ok"
    reason: str = ""
    accuracy: float | None = None
    size_mb: float | None = None
    latency: dict = field(default_factory=dict)
    predicted_host_ms: float | None = None
    predicted_target_ms: float | None = None
    settings: dict = field(default_factory=dict)
    # the deployed student's trade against the teacher on the same format and precision
    speedup: float | None = None  # the teacher's p50 over the student's
    asked_speedup: float | None = None  # from the run's sizing.json
    predicted_speedup: float | None = None
    points_vs_probe: float | None = None  # student accuracy minus the teacher's (with its linear probe), in points


def torch_runner(net) -> Runner:
    """PyTorch eager inference on numpy input (any batch size)."""
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(x)).numpy()

    return run


def _pytorch_runners(run: RunDir) -> dict:
    import torch

    from procedge.models.load import load_trained

    trained = load_trained(run)
    nets = {v: trained.teacher_net() if v == "teacher" else trained.student_net(v) for v in run.variants()}
    settings = {"runtime": f"torch {torch.__version__} (eager)", "threads": torch.get_num_threads()}
    return {v: (torch_runner(net), settings) for v, net in nets.items()}


def distillation_record(run: RunDir, baseline: Path | None = None) -> dict | None:
    """What trained the student and how it compares, from metrics.json (the run's own, and a baseline run's)."""
    if baseline is not None:
        RunDir(baseline).require_trained()
    if not run.metrics.exists():
        return None
    metrics = run.read_metrics()
    keys = ("method", "student_accuracy", "teacher_probe_accuracy", "train_images", "unlabeled_images")
    record = {k: metrics.get(k, 0 if k == "unlabeled_images" else None) for k in keys}
    if baseline is not None:
        other = RunDir(baseline)
        if not other.metrics.exists():
            raise ProcedgeError(f"baseline run {baseline} has no metrics.json; pass a finished `procedge distill` run to --baseline")
        record["baseline"] = {"run": str(other.path)} | {k: other.read_metrics().get(k, 0 if k == "unlabeled_images" else None) for k in keys}
    return record


def bench_run(run_dir: Path, formats: list[str] | None = None, policy: TimingPolicy = TimingPolicy(),
              threads: int | None = None, baseline: Path | None = None) -> dict:
    """Bench every export found (and PyTorch eager unless formats exclude it); returns the report dict.

    `baseline`: another run of the student (e.g. trained alone, `--method none`), shown beside this one.
    """
    from procedge.config import RunConfig

    run = RunDir(run_dir).require_trained()
    distillation = distillation_record(run, baseline)
    config = RunConfig.load(run.config)
    exports = discover_exports(run, formats)
    # The PyTorch eager row is there when asked for, or by default where PyTorch is installed.
    want_pytorch = "pytorch" in formats if formats else _installed("torch")
    if not exports and not want_pytorch:
        raise ProcedgeError(f"no {'/'.join(formats or [])} export in {run.path}; run `procedge export --run {run.path} --format FORMAT` first")
    heldout = run.load_heldout()
    onnx_dir = run.format_dir("onnx", "fp32")
    costs = read_manifest(onnx_dir).model_extra.get("layer_costs") if (onnx_dir / MANIFEST).exists() else None
    host = host_hardware() if _installed("onnxruntime") and _installed("onnx") else None

    runtime = config.target.runtime.model_copy(update={"threads": threads})  # the target's providers; threads: the runtime's or --threads
    jobs: list[tuple[str, str, object]] = []  # (format, precision, loader)
    if want_pytorch:
        jobs.append(("pytorch", "fp32", None))
    jobs += [(fmt, precision, directory) for fmt, precision, directory in exports]

    rows: list[BenchRow] = []
    overheads: dict[str, dict] = {}
    pytorch = None
    with progress_bar("benchmarking", len(jobs)) as advance:
        for fmt, precision, directory in jobs:
            timed: dict[str, tuple[Runner, np.ndarray]] = {}
            format_rows = {}
            for variant in run.variants():
                row = format_rows[variant] = BenchRow(variant, fmt, precision)
                try:
                    if fmt == "pytorch":
                        pytorch = pytorch or _pytorch_runners(run)
                        runner, row.settings = pytorch[variant]
                    else:
                        runner, row.settings, row.size_mb = load_export(directory, variant, runtime)
                    images = heldout[network_of(variant)]
                    row.accuracy = accuracy(runner, images, heldout["labels"], 100 if fmt == "pytorch" else 1)
                    timed[variant] = (runner, images[:1].astype(np.float32) / 255.0)
                    if costs is not None and fmt != "pytorch":  # predictions model compiled graphs, not eager dispatch
                        execution = "fp16" if precision == "fp16" else "fp32"
                        row.predicted_host_ms = predict_ms(costs[variant], host, "fp32") if host else None
                        row.predicted_target_ms = predict_ms(costs[variant], config.target.hardware, execution)
                except NotBuiltHere as exc:
                    row.status, row.reason = "not built", str(exc)
                except ProcedgeError as exc:
                    row.status, row.reason = "failed", str(exc)
                except Exception as exc:  # a runtime's own failure is a table row, not a crash
                    row.status, row.reason = "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            for variant, stats in (measure_latency(timed, policy) if timed else {}).items():
                format_rows[variant].latency = stats
            rows += format_rows.values()
            for twin, of in run.twins().items():
                if twin in timed and of in timed:
                    with_ms, without_ms = format_rows[of].latency["p50_ms"], format_rows[twin].latency["p50_ms"]
                    overheads[f"{fmt} {precision}"] = {"p50_with_ms": with_ms, "p50_without_ms": without_ms,
                                                       "overhead_pct": 100.0 * (with_ms - without_ms) / without_ms}
            advance(1)
    _trade(rows, run)
    return {
        "run": str(run.path),
        "target": config.target.name,
        "latency_budget_ms": config.target.latency_budget_ms,
        "student": config.student.name,
        "teacher": config.teacher.name,
        "heldout_images": int(len(heldout["labels"])),
        "timing_policy": asdict(policy),
        "device": device_state(host),
        "rows": [asdict(r) for r in rows],
        "augmentation_overhead": overheads,
        "twins": run.twins(),
        "distillation": distillation,
    }


def _trade(rows: list[BenchRow], run: RunDir) -> None:
    """Each deployed student row's speedup and points against the teacher of its format and precision, with the asked and
    predicted speedup from sizing.json; the measured speedups are written back into sizing.json."""
    sizing = json.loads(run.sizing.read_text()) if run.sizing.exists() else {}
    measured = {}
    for row in rows:
        teacher = next((t for t in rows if (t.model, t.format, t.precision) == ("teacher", row.format, row.precision)), None)
        deployed = row.model == "student" and row.format != "pytorch"  # eager PyTorch is a reference, not a deployment
        if not deployed or row.status != "ok" or teacher is None or teacher.status != "ok" or not row.latency:
            continue
        row.speedup = teacher.latency["p50_ms"] / row.latency["p50_ms"]
        row.points_vs_probe = 100 * (row.accuracy - teacher.accuracy)
        row.asked_speedup, row.predicted_speedup = sizing.get("asked_speedup"), sizing.get("predicted_speedup")
        measured[f"{row.format} {row.precision}"] = row.speedup
    if sizing and measured:
        write_json(run.sizing, {**sizing, "measured_speedup": measured})


def device_state(host: Hardware | None) -> dict:
    import importlib.metadata as md

    versions = {}
    for package in ("procedge", "numpy", "onnxruntime", "openvino", "nncf", "tensorrt", "torch", "timm", "onnx"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            pass
    measured = {
        "measured_fp32_gflops": round(host.peak_gflops["fp32"], 1) if host else None,
        "measured_copy_gbs": round(host.memory_bandwidth_gbs, 1) if host else None,
        "measured_op_overhead_us": round(host.layer_overhead_us, 2) if host else None,
    }
    return {
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count() or 1,
        **measured,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        **({"jetson": jetson} if (jetson := jetson_state()) else {}),
    }


def jetson_state(model_file: Path = Path("/proc/device-tree/model"), nvpmodel: str = "nvpmodel") -> dict | None:
    """On a Jetson: the module (device tree) and the power mode (`nvpmodel -q`) the numbers were taken in."""
    try:
        model = model_file.read_text().strip("\x00\n ")
    except OSError:
        return None
    if "jetson" not in model.lower():
        return None
    state = {"model": model, "power_mode": "unknown (nvpmodel not found)"}
    try:
        query = subprocess.run([nvpmodel, "-q"], capture_output=True, text=True, timeout=10)
        mode = next((line.split(":", 1)[1].strip() for line in query.stdout.splitlines() if "Power Mode" in line), None)
        state["power_mode"] = mode or f"unknown (nvpmodel -q said: {query.stdout.strip() or query.stderr.strip()})"
    except (OSError, subprocess.TimeoutExpired) as exc:
        state["power_mode"] = f"unknown (nvpmodel -q failed: {exc})"
    return state
