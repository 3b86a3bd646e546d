"""A small real-photo task with procedge's defaults: what a new user gets from `procedge distill --data DIR`.

    python benchmarks/photo_task.py            # dog vs bird photos, proc-kd and the student alone, defaults otherwise

The task is built from ../shared/data/imagenet-val1300.tar.gz: the ILSVRC2012 validation photos of dogs (classes
151-268) and birds (7-24, 80-100, 127-146), 251 photos in two class folders, split 80/20 by procedge's seeded
stratified split. Only the target, the data and the method are given; everything else (the teacher, Lite2; the student
and its size, sized for a 4x speedup; epochs, views, teacher input size, loss weights) is procedge's default for that
data. Each run is then exported to ONNX Runtime fp32 and benched, for the student's measured speedup over the teacher.
Prints a table and writes benchmarks/results/photo_task.json with each run's held-out accuracy, the teacher probe's,
the speedup and the wall time (distill only, and with export and bench).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tarfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROCEDGE_QUIET", "1")

from procedge.bench import bench_run, cpu_model  # noqa: E402
from procedge.distill import distill, resolve_config  # noqa: E402
from procedge.export import export_run  # noqa: E402
from procedge.io import write_json  # noqa: E402

ARCHIVE = REPO.parent / "shared" / "data" / "imagenet-val1300.tar.gz"
GROUPS = {"dog": set(range(151, 269)), "bird": set(range(7, 25)) | set(range(80, 101)) | set(range(127, 147))}


def build_task(archive: Path, work: Path) -> Path:
    """`work/photos/<group>/<file>.JPEG` from the labelled ImageNet validation photos."""
    tree = work / "photos"
    if tree.is_dir():
        return tree
    if not archive.exists():
        sys.exit(f"error: {archive} is absent; pass --archive with the ImageNet validation tarball")
    raw = work / "imagenet-val"
    with tarfile.open(archive) as tar:
        tar.extractall(raw, filter="data")
    tmp = work / "photos.tmp"
    for line in (raw / "dataset.txt").read_text().splitlines():
        if "," not in line:
            continue
        name, label = line.rsplit(",", 1)
        group = next((g for g, labels in GROUPS.items() if int(label) in labels), None)
        if group:
            (tmp / group).mkdir(parents=True, exist_ok=True)
            shutil.copy(raw / name.strip(), tmp / group / Path(name.strip()).name)
    tmp.rename(tree)
    return tree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archive", type=Path, default=ARCHIVE)
    parser.add_argument("--work", type=Path, default=REPO / ".cache" / "photo_task")
    parser.add_argument("--methods", default="none,proc-kd")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "photo_task.json")
    args = parser.parse_args()
    os.environ.setdefault("PROCEDGE_CACHE_DIR", str(args.work / "cache"))
    tree = build_task(args.archive, args.work)
    rows = []
    for method in args.methods.split(","):
        started = time.perf_counter()
        config, sizing = resolve_config("intel-cpu", data=tree, method=method)
        run = args.work / "runs" / method
        metrics = distill(config, run, sizing, overwrite=True)
        distilled = time.perf_counter() - started
        export_run(run, "ort", "fp32")
        report = bench_run(run, ["ort"])
        student = next(r for r in report["rows"] if r["model"] == "student")
        rows.append({"method": method, "teacher": config.teacher.name, "student": config.student.name, "student_size": config.student.input_size,
                     "speedup_ort": student["speedup"], "asked_speedup": student["asked_speedup"],
                     "timed_speedup": sizing.get("timed_speedup"), "distill_seconds": distilled,
                     "teacher_size": config.teacher.input_size, "epochs": config.train.epochs, "teacher_views": config.data.teacher_views,
                     "train_images": metrics["train_images"], "heldout_images": metrics["heldout_images"],
                     "student_accuracy": metrics["student_accuracy"], "teacher_probe_accuracy": metrics["teacher_probe_accuracy"],
                     "wall_seconds": time.perf_counter() - started})
    table = Table(title=f"dog vs bird photos ({rows[0]['train_images']} train / {rows[0]['heldout_images']} held-out), "
                        f"procedge defaults for intel-cpu, teacher {rows[0]['teacher']} @ {rows[0]['teacher_size']}")
    for column in ("method", "student", "epochs, views, teacher px", "held-out acc", "teacher probe", "vs probe", "speedup ORT",
                   "distill s", "wall s"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["method"], f"{r['student']} @ {r['student_size']}", f"{r['epochs']}, {r['teacher_views']}, {r['teacher_size']}",
                      f"{r['student_accuracy']:.2%}", f"{r['teacher_probe_accuracy']:.2%}",
                      f"{(r['student_accuracy'] - r['teacher_probe_accuracy']) * 100:+.1f} pts", f"{r['speedup_ort']:.1f}x",
                      f"{r['distill_seconds']:.0f}", f"{r['wall_seconds']:.0f}")
    Console(width=160).print(table)
    write_json(args.out, {"task": "ImageNet val photos, dog vs bird", "date": time.strftime("%Y-%m-%d"),
                          "host": {"cpu": cpu_model(), "cpus": os.cpu_count()}, "runs": rows})


if __name__ == "__main__":
    main()
