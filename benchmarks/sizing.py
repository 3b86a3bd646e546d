"""Does the speedup sizing goes by hold? Timed and predicted against measured, for every candidate sizing can pick.

    python benchmarks/sizing.py                       # Lite2 @260 teacher, every candidate, OpenVINO and ONNX Runtime fp32
    python benchmarks/sizing.py --teacher-size 160    # the teacher size procedge uses for images under 112 px

For each candidate of `procedge distill`'s sizing (the random-weight ladder at the target's 224 px, and the pretrained
Lite0 and Lite2 at 64-224 px): the speedup over the teacher as sizing sees it (`timed`: sizing's own short interleaved
timing on the target's runtime here; `predicted`: the roofline model of the target profile), and as `procedge bench`
measures it (200 runs and 2 s per network at least, interleaved blocks, batch 1) on the exported graphs. Sizing is
good where timed/measured is within 1.3x (either way). Writes benchmarks/results/sizing.json and prints the table.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import timm
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROCEDGE_QUIET", "1")

from procedge.bench import cpu_model  # noqa: E402
from procedge.runtime.latency import TimingPolicy, measure_latency  # noqa: E402
from procedge.export.onnx import export_onnx  # noqa: E402
from procedge.io import read_json, write_json  # noqa: E402
from procedge.models.student import STUDENT_CANDIDATES, offline_pretrained  # noqa: E402
from procedge.sizing import TIMING_CLASSES, size_student  # noqa: E402
from procedge.models.teacher import create_teacher_model  # noqa: E402
from procedge.runtime import runtime_registry  # noqa: E402
from procedge.targets import Runtime, resolve_target  # noqa: E402

TARGETS = {"openvino": "intel-cpu", "onnxruntime": "arm64"}  # a built-in target whose runtime each is


def measured_speedups(runtime_name: str, teacher: str, teacher_size: int, tries: list[tuple[str, int]]) -> dict:
    """The teacher's p50 over each candidate's, `procedge bench`'s timing policy, on this host's cores."""
    cores = os.cpu_count() or 1
    runtime = runtime_registry.get(runtime_name)()
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, (name, size) in {"teacher": (teacher, teacher_size), **{t: t for t in tries}}.items():
            path = Path(tmp) / f"{len(runs)}.onnx"
            export_onnx(timm.create_model(name, num_classes=TIMING_CLASSES).eval(), (1, 3, size, size), path)
            run, _ = runtime.load(path, "fp32", Runtime(threads=cores))
            runs[key] = (run, np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32))
        stats = measure_latency(runs, TimingPolicy())
    return {key: stats["teacher"]["p50_ms"] / s["p50_ms"] for key, s in stats.items() if key != "teacher"} | {
        "teacher_ms": stats["teacher"]["p50_ms"]}


def markdown(results: dict) -> str:
    """The docs' table: each candidate's speedup on both runtimes, timed and measured, beside the roofline prediction."""
    by = {(r["candidate"], r["input_size"], r["runtime"]): r for r in results["rows"] if "measured_speedup" in r}
    lines = ["| candidate | px | GFLOPs | OpenVINO timed / measured | predicted (`intel-cpu`) | ONNX Runtime timed / measured | "
             "predicted (`arm64`) |", "|---|---|---|---|---|---|---|"]
    for name, size, runtime in by:
        if runtime != "openvino":
            continue
        ov, ort = by[(name, size, "openvino")], by[(name, size, "onnxruntime")]
        lines.append(f"| {name}{' (ImageNet)' if ov['pretrained'] else ''} | {size} | {ov['gflops']:.3f} | "
                     f"{ov['timed_speedup']:.2f}x / {ov['measured_speedup']:.2f}x | {ov['predicted_speedup']:.2f}x | "
                     f"{ort['timed_speedup']:.2f}x / {ort['measured_speedup']:.2f}x | {ort['predicted_speedup']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="tf_efficientnet_lite2")
    parser.add_argument("--teacher-size", type=int, default=260)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "sizing.json")
    parser.add_argument("--markdown", action="store_true", help="print --out's table as Markdown (the docs') and stop")
    args = parser.parse_args()
    if args.markdown:
        print(markdown(read_json(args.out)))
        return
    teacher = create_teacher_model(args.teacher, None)
    rows = []
    for runtime_name, target_name in TARGETS.items():
        target = resolve_target(target_name)
        decision = size_student(target, target.input_size, teacher, args.teacher_size, candidates=STUDENT_CANDIDATES,
                                pretrained=offline_pretrained())
        tries = [(c.name, c.input_size) for c in decision.candidates]
        measured = measured_speedups(runtime_name, args.teacher, args.teacher_size, tries)
        for c in decision.candidates:
            m = measured[(c.name, c.input_size)]
            rows.append({"runtime": runtime_name, "target": target_name, "candidate": c.name, "input_size": c.input_size,
                         "pretrained": c.pretrained, "gflops": c.gflops, "timed_speedup": c.timed_speedup,
                         "predicted_speedup": c.predicted_speedup, "measured_speedup": m,
                         "timed_over_measured": c.timed_speedup / m, "predicted_over_measured": c.predicted_speedup / m})
        rows.append({"runtime": runtime_name, "target": target_name, "candidate": "(teacher)", "input_size": args.teacher_size,
                     "teacher_ms": measured["teacher_ms"], "chosen": [decision.chosen, decision.input_size]})
    within = [r for r in rows if "measured_speedup" in r]
    worst = max(max(r["timed_over_measured"], 1 / r["timed_over_measured"]) for r in within)
    table = Table(title=f"speedup over {args.teacher} @ {args.teacher_size}: sizing's timing and prediction against bench's measurement")
    for column in ("runtime", "candidate", "px", "GFLOPs", "timed", "predicted", "measured", "timed/measured", "predicted/measured"):
        table.add_column(column)
    for r in within:
        table.add_row(r["runtime"], r["candidate"] + (" (pretrained)" if r["pretrained"] else ""), str(r["input_size"]),
                      f"{r['gflops']:.3f}", f"{r['timed_speedup']:.2f}x", f"{r['predicted_speedup']:.2f}x", f"{r['measured_speedup']:.2f}x",
                      f"{r['timed_over_measured']:.2f}", f"{r['predicted_over_measured']:.2f}")
    Console(width=200).print(table)
    print(f"worst timed/measured (either way): {worst:.2f}x (bar 1.3x)")
    write_json(args.out, {"date": time.strftime("%Y-%m-%d"), "host": {"cpu": cpu_model(), "cores": os.cpu_count(),
                                                                      "platform": platform.platform()},
                          "teacher": args.teacher, "teacher_size": args.teacher_size, "worst_timed_over_measured": worst, "rows": rows})


if __name__ == "__main__":
    main()
