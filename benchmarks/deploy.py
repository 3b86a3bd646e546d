"""Deployment benchmark on this machine: what procedge's compiled exports buy over doing it by hand.

For the distilled student of a run (held-out split) and for the ImageNet teacher (EfficientNet-Lite0
at 224 px on 1,000 of the 1,300 ILSVRC2012 validation images; the other 300 calibrate INT8):
  - INT8 vs fp32 on OpenVINO (NNCF) and ONNX Runtime (static QDQ): speed-up and accuracy change;
  - procedge's best backend vs what a user does without it: PyTorch eager, and a default ONNX Runtime
    session on the plain (unsimplified) torch.onnx export; ratio of p90 latencies, one run;
  - procedge's latency measurement vs OpenVINO's own benchmark_app on the same IR (p50);
  - the deployed student with the folded prototype augmentation vs without it.

    python benchmarks/deploy.py --run runs/demo-intel-cpu [--imagenet PATH.tar.gz] [--out FILE.json] [--student-only]

Prints tables and writes JSON. Run `make demo` first (it exports the fp32 and INT8 models).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.console import Console
from rich.table import Table

from procedge.bench import TimingPolicy, device_state, host_hardware, measure_latency, torch_runner
from procedge.runtime import accuracy
from procedge.export import backend_registry, export_run
from procedge.calibration import calibration_set, float_batches
from procedge.export.onnx import export_onnx
from procedge.runtime.onnxruntime import ort_runner
from procedge.export.openvino import convert, nncf_quantizer
from procedge.export.qdq import quantize_qdq
from procedge.models.deploy import Normalize
from procedge.models.load import load_trained
from procedge.models.teacher import EMBEDDED_TEACHER, create_teacher_model
from procedge.run import RunDir

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGENET = REPO.parent / "shared" / "data" / "imagenet-val1300.tar.gz"
console = Console(width=200)
ACCURACY_DROP = 0.01  # the bar: at most 1 point of top-1 lost to INT8


def plain_onnx(net: torch.nn.Module, size: int, path: Path) -> Path:
    """What a user does by hand: torch.onnx.export with defaults, no simplification."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.rand(1, 3, size, size),), str(path), dynamo=False, input_names=["input"])
    return path


def default_ort(path: Path):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"input": x})[0]


def compare(name: str, runners: dict, images: np.ndarray, labels: np.ndarray, policy: TimingPolicy) -> dict:
    """Accuracy and latency of every way of running one model, each timed alone after a pause.

    Not interleaved: different runtimes' thread pools (OpenMP in PyTorch, ORT's, OpenVINO's) keep
    spinning after a call and would take the cores from the next runtime."""
    x = images[:1].astype(np.float32) / 255.0
    rows = {}
    for key, runner in runners.items():
        time.sleep(1.0)
        latency = measure_latency({key: (runner, x)}, policy)[key]
        rows[key] = {"accuracy": accuracy(runner, images, labels, 50 if key == "pytorch eager" else 1), **latency}
    table = Table(title=name)
    for column in ("way", "top-1 %", "p50 ms", "p90 ms", "p99 ms"):
        table.add_column(column, justify="left" if column == "way" else "right")
    for key, r in rows.items():
        table.add_row(key, f"{100 * r['accuracy']:.2f}", f"{r['p50_ms']:.3f}", f"{r['p90_ms']:.3f}", f"{r['p99_ms']:.3f}")
    console.print(table)
    return rows


def summary(rows: dict) -> dict:
    """INT8 speed-up and accuracy change per backend; best procedge backend vs the by-hand baselines (p90)."""
    out = {}
    for backend in ("openvino", "ort", f"openvino int8, max drop {ACCURACY_DROP:g}"):
        fp32 = rows.get(f"procedge {backend.split()[0]} fp32")
        int8 = rows.get(f"procedge {backend}" if "drop" in backend else f"procedge {backend} int8")
        if fp32 and int8:
            name = backend if "drop" in backend else f"{backend} int8"
            out[f"{name} speed-up (p50)"] = fp32["p50_ms"] / int8["p50_ms"]
            out[f"{name} accuracy change (pts)"] = 100 * (int8["accuracy"] - fp32["accuracy"])
    fp32_rows = {k: v for k, v in rows.items() if k.startswith("procedge") and k.endswith("fp32")}
    best = min(fp32_rows, key=lambda k: fp32_rows[k]["p90_ms"])
    out["best procedge fp32 backend"] = best
    for baseline in ("pytorch eager", "default ort, plain export"):
        out[f"p90 {baseline} / {best}"] = rows[baseline]["p90_ms"] / rows[best]["p90_ms"]
    return out


def benchmark_app_p50(xml: Path, seconds: int = 10) -> float:
    """Median latency reported by OpenVINO's benchmark_app (sync API, latency hint, f32)."""
    tool = shutil.which("benchmark_app") or str(Path(sys.executable).with_name("benchmark_app"))
    out = subprocess.run([tool, "-m", str(xml), "-d", "CPU", "-hint", "latency", "-api", "sync", "-t", str(seconds),
                          "-infer_precision", "f32"], capture_output=True, text=True, check=True).stdout
    value, unit = re.search(r"Median:\s+([\d.]+)\s*(us|ms)", out).groups()
    return float(value) / (1000.0 if unit == "us" else 1.0)


def versus_benchmark_app(xml: Path, seconds: int, rounds: int = 3) -> dict:
    """procedge's p50 and benchmark_app's median on the same IR, alternated `rounds` times (this
    machine's speed drifts over minutes, so only measurements taken side by side compare)."""
    runner = backend_registry.get("openvino")().load(xml)[0]
    import openvino as ov

    shape = [d.get_length() for d in ov.Core().read_model(str(xml)).inputs[0].get_partial_shape()]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    ours, theirs = [], []
    for _ in range(rounds):
        theirs.append(benchmark_app_p50(xml, seconds))
        ours.append(measure_latency({"m": (runner, x)}, TimingPolicy(min_seconds=seconds))["m"]["p50_ms"])
    ours_p50, theirs_p50 = float(np.median(ours)), float(np.median(theirs))
    return {"procedge_p50_ms": ours_p50, "benchmark_app_p50_ms": theirs_p50, "difference_pct": 100 * (ours_p50 - theirs_p50) / theirs_p50,
            "rounds": {"procedge": ours, "benchmark_app": theirs}}


def imagenet(archive: Path, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    """1,300 validation images centre-cropped to 224 (from 227), uint8 NCHW, with labels."""
    with tarfile.open(archive) as tar:
        tar.extractall(cache, filter="data")
    rows = [line.split(",") for line in (cache / "dataset.txt").read_text().splitlines() if line.strip()]
    images = []
    for name, _ in rows:
        with Image.open(cache / name.strip()) as im:
            im = im.convert("RGB")
            left, top = (im.width - 224) // 2, (im.height - 224) // 2
            images.append(np.asarray(im.crop((left, top, left + 224, top + 224))).transpose(2, 0, 1))
    return np.stack(images), np.array([int(label) for _, label in rows])


def student_section(run: RunDir, work: Path, policy: TimingPolicy) -> dict:
    for fmt, precision in (("openvino", "fp32"), ("openvino", "int8"), ("ort", "fp32"), ("ort", "int8")):
        if not (run.format_dir(fmt, precision) / "manifest.json").exists():
            export_run(run.path, fmt, precision)
    trained = load_trained(run)
    heldout = run.load_heldout()
    size = trained.config.student.input_size
    net = trained.student_net("student")
    runners = {"pytorch eager": torch_runner(net),
               "default ort, plain export": default_ort(plain_onnx(net, size, work / "student-plain.onnx"))}
    for fmt, suffix in (("openvino", ".xml"), ("ort", ".onnx")):
        for precision in ("fp32", "int8"):
            runners[f"procedge {fmt} {precision}"] = backend_registry.get(fmt)().load(run.format_dir(fmt, precision) / f"student{suffix}", precision)[0]
    # What `export --precision int8 --max-accuracy-drop` builds, kept beside the run's own int8 export.
    calibration, control = calibration_set(run, validation=300), {}
    convert(run.format_dir("onnx", "fp32") / "student.onnx", work / "student-int8-ac.xml", "int8",
            nncf_quantizer(float_batches(calibration["student"]), (float_batches(calibration["val_student"]), calibration["val_labels"]),
                           ACCURACY_DROP, control))
    runners[f"procedge openvino int8, max drop {ACCURACY_DROP:g}"] = backend_registry.get("openvino")().load(work / "student-int8-ac.xml", "int8")[0]
    rows = compare(f"student {trained.config.student.name} @ {size}px, {len(heldout['labels'])} held-out images",
                   runners, heldout["student"], heldout["labels"], policy)
    overhead = {}
    for fmt, suffix in (("openvino", ".xml"), ("ort", ".onnx")):
        backend = backend_registry.get(fmt)()
        twin, of = next(iter(run.twins().items()))  # the method's student without its augmentation, and the deployed one
        pair = {v: (backend.load(run.format_dir(fmt, "fp32") / f"{v}{suffix}")[0], heldout["student"][:1].astype(np.float32) / 255)
                for v in (of, twin)}
        timed = measure_latency(pair, policy)
        overhead[fmt] = 100 * (timed[of]["p50_ms"] / timed[twin]["p50_ms"] - 1)
    return {"rows": rows, "summary": summary(rows), "folded_augmentation_overhead_pct": overhead, "accuracy_control": control,
            "ir": str(run.format_dir("openvino", "fp32") / "student.xml")}


def teacher_section(archive: Path, work: Path, policy: TimingPolicy, calibration_count: int = 300) -> dict:
    images, labels = imagenet(archive, work / "imagenet")
    order = np.random.default_rng(0).permutation(len(labels))
    calib, evaluation = order[:calibration_count], order[calibration_count:]
    net = torch.nn.Sequential(Normalize((0.5,) * 3, (0.5,) * 3), create_teacher_model(EMBEDDED_TEACHER, None)).eval()
    simplified = work / "teacher.onnx"
    export_onnx(net, (1, 3, 224, 224), simplified)
    batches = [images[i:i + 1].astype(np.float32) / 255 for i in calib]
    convert(simplified, work / "teacher-fp32.xml", "fp32")
    convert(simplified, work / "teacher-int8.xml", "int8", nncf_quantizer(batches, None, None, {}))
    # Accuracy control checks the drop on the calibration images themselves: the 1,000 evaluation images stay unseen.
    control = {}
    convert(simplified, work / "teacher-int8-ac.xml", "int8", nncf_quantizer(batches, (batches, labels[calib]), ACCURACY_DROP, control))
    quantize_qdq(simplified, work / "teacher-int8.onnx", batches)
    ov = backend_registry.get("openvino")()
    runners = {"pytorch eager": torch_runner(net),
               "default ort, plain export": default_ort(plain_onnx(net, 224, work / "teacher-plain.onnx")),
               "procedge openvino fp32": ov.load(work / "teacher-fp32.xml", "fp32")[0],
               "procedge openvino int8": ov.load(work / "teacher-int8.xml", "int8")[0],
               f"procedge openvino int8, max drop {ACCURACY_DROP:g}": ov.load(work / "teacher-int8-ac.xml", "int8")[0],
               "procedge ort fp32": ort_runner(simplified)[0],
               "procedge ort int8": ort_runner(work / "teacher-int8.onnx")[0]}
    rows = compare(f"teacher {EMBEDDED_TEACHER} @ 224px, ImageNet top-1 on {len(evaluation)} validation images",
                   runners, images[evaluation], labels[evaluation], policy)
    return {"rows": rows, "summary": summary(rows), "calibration_images": calibration_count, "accuracy_control": control,
            "ir": str(work / "teacher-fp32.xml")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, default=REPO / "runs" / "demo-intel-cpu")
    parser.add_argument("--imagenet", type=Path, default=DEFAULT_IMAGENET)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "deploy.json")
    parser.add_argument("--benchmark-app-seconds", type=int, default=4)
    parser.add_argument("--student-only", action="store_true", help="skip the ImageNet teacher section")
    args = parser.parse_args()
    policy = TimingPolicy()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        result = {"device": device_state(host_hardware()), "student": student_section(RunDir(args.run).require_trained(), work, policy)}
        if args.student_only:
            pass
        elif args.imagenet.exists():
            result["teacher_imagenet"] = teacher_section(args.imagenet, work, policy)
        else:
            console.print(f"skipping the ImageNet teacher: {args.imagenet} is absent")
        for key in ("student", "teacher_imagenet"):
            if key in result:
                result[key]["benchmark_app"] = versus_benchmark_app(Path(result[key]["ir"]), args.benchmark_app_seconds)
    result["wall_seconds"] = time.perf_counter() - started
    for key in ("student", "teacher_imagenet"):
        if key in result:
            console.print(f"[bold]{key}[/bold]", highlight=False)
            vs_app = {k: v for k, v in result[key].get("benchmark_app", {}).items() if k != "rounds"}
            for name, value in {**result[key]["summary"], **vs_app,
                                **{f"folded augmentation overhead {k} %": v for k, v in result[key].get("folded_augmentation_overhead_pct", {}).items()}}.items():
                console.print(f"  {name}: {value:.3f}" if isinstance(value, float) else f"  {name}: {value}", highlight=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    console.print(f"wrote {args.out} ({result['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
