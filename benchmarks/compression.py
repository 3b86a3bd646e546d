"""Compression on real photos: students many times faster than a large teacher, and the points they give up.

    python benchmarks/compression.py                     # every row of every task (hours on 2 cores; resumable row by row)
    python benchmarks/compression.py --tasks clothing10  # one task
    python benchmarks/compression.py --only tabulate     # no new runs: the table of the rows done

Task `clothing10` (../shared/data/clothing10-256.tar.gz, 256 px photos): 50 labelled images a class from `train/`, the
rest of `train/` as the unlabelled pool, `validation/` the runs' held-out split (every choice reads it), `test/` read
only here, for the numbers reported. Task `cifar10` (32 px): a seeded 1,100 images a class of CIFAR-10's train folder,
100 of them labelled by each seed and the other 10,000 the pool, a seeded validation split of 100 a class carved from
the same folder, a seeded 200 a class of the test folder only for reporting; the teacher sees it at
224 px, not procedge's 160 px for images under 112 px: at 160 no pretrained student is 5x faster than it.

The teacher is EfficientNet-Lite2 (procedge's default for a user's data). References: its linear probe (fitted on the
labelled images of each seed) and the teacher quantised (ONNX Runtime static INT8 and OpenVINO NNCF INT8, from the first
row's last seed's run: test accuracy through the runtime, speedup over the fp32 teacher on the same runtime), and the teacher
fine-tuned on seed 0's labelled images (`none` with the teacher's own network as the student; its epochs chosen on
validation). The bar's student (ProC-KD with the pool, its last seed's run) is quantised the same way, its speedup
over the fp32 teacher on the same runtime. Students: for each asked speedup (procedge's sizing, timed
on this host's OpenVINO), the student alone (`none`), pseudo-labelling and ProC-KD labelled-only, and ProC-KD and
pseudo-labelling with the pool. Speedups are measured by `procedge bench` on the exported graphs (OpenVINO fp32 and
ONNX Runtime fp32, batch 1, student and teacher interleaved). Every run's teacher outputs come from procedge's on-disk
cache, computed once for all seeds and methods of a task: the training set is in file-path order whichever images a
seed labels (the labelled images' own small cache, for the probe, is per seed).

Each finished row is written to benchmarks/results/compression.json at once (commit it as rows land); a run directory
under --work is reused when its config is unchanged, so an interrupted benchmark continues where it stopped.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("PROCEDGE_QUIET", "1")

from procedge.bench import TimingPolicy, bench_run, cpu_model  # noqa: E402
from procedge.config import RunConfig  # noqa: E402
from procedge.data import load_split  # noqa: E402
from procedge.distill import distill, resolve_config  # noqa: E402
from procedge.export import export_run  # noqa: E402
from procedge.io import read_json, write_json  # noqa: E402
from procedge.models.load import load_trained  # noqa: E402
from procedge.run import RunDir  # noqa: E402
from procedge.train import evaluate  # noqa: E402

DATA = REPO.parent / "shared" / "data"
TEACHER = "tf_efficientnet_lite2"
TARGET = "intel-cpu"
OUT = REPO / "benchmarks" / "results" / "compression.json"
CIFAR_TRAIN_PER_CLASS = 1_100  # 100 labelled a class, the other 10,000 the pool: the same files for every seed
CIFAR_TEST_PER_CLASS = 200  # of CIFAR-10's 1,000 test images a class: 2,000 in all, a standard error under a point
FINETUNE_EPOCHS = (4, 8)  # the fine-tuned teacher's schedules, one chosen on validation (Lite2 @260 trains at ~6 images/s here)
console = Console(width=200)


@dataclass(frozen=True)
class Task:
    name: str
    archive: str
    labels_per_class: int
    options: dict = field(default_factory=dict)  # resolve_config options every run of the task shares


TASKS = {
    "clothing10": Task("clothing10", "clothing10-256.tar.gz", labels_per_class=50),
    # At procedge's 160 px for small images, no pretrained student (Lite0 down to 64 px) is even 4x faster than the
    # teacher: its cost is per-op dispatch there. At 224 px Lite0 at 80 px is 6x (benchmarks/results/sizing.json).
    "cifar10": Task("cifar10", "cifar10-jpg.tar.gz", labels_per_class=100, options={"teacher_size": 224}),
}


@dataclass(frozen=True)
class Row:
    """One line of the table: a method at an asked speedup (0: a teacher reference), with or without the pool."""

    method: str  # a procedge method, or "teacher" for the teacher's references
    pool: bool
    speedup: float
    seeds: tuple[int, ...] = (0,)
    options: dict = field(default_factory=dict)  # resolve_config options of this row (e.g. a longer schedule)
    label: str = ""
    tasks: tuple[str, ...] = ()  # the tasks it runs on (empty: every task)


# Asked speedups: 5.5x is the smallest that sizing (timed on this host's OpenVINO) answers with a student whose deployed
# graph, folded augmentation included, measures at least 5x on both runtimes (Lite0 at 112 px for Lite2 at 260); 4x is
# procedge's default (Lite0 at 144 px); 6.5x asks for a student measured at 6x or more (Lite0 at 96 px on clothing10).
SEEDS = (0, 1, 2)  # of the rows the bars read (the student alone, ProC-KD with the pool and labelled only) and the 6.5x ones
ROWS = (  # in the order they run: the bar's row first, then its references
    Row("proc-kd", True, 5.5, SEEDS),
    Row("none", False, 5.5, SEEDS),
    Row("proc-kd", True, 4.0),
    Row("proc-kd", False, 5.5, SEEDS),
    Row("pseudo-label", True, 5.5),
    Row("none", False, 4.0),
    Row("proc-kd", False, 4.0),
    Row("pseudo-label", False, 5.5),
    Row("proc-kd", True, 5.5, options={"epochs": 10}, label="10 epochs", tasks=("cifar10",)),  # a validation ablation: twice the default's 5 on CIFAR-10
    # Validation ablations of the labelled-only schedule (48,000 image-steps, at most 48 epochs), for ProC-KD and for the
    # student alone's own schedule: the earlier 24,000 on CIFAR-10's 1,000 labels, no cap on clothing10's 500 (60 epochs).
    Row("proc-kd", False, 5.5, options={"epochs": 24}, label="24 epochs", tasks=("cifar10",)),
    # A student measured at 6x or more on clothing10 (CIFAR-10's 5.5x student, Lite0 at 64 px, measures 7x already).
    Row("proc-kd", True, 6.5, SEEDS, tasks=("clothing10",)),
    Row("none", False, 6.5, SEEDS, tasks=("clothing10",)),
    Row("none", False, 5.5, options={"epochs": 24}, label="24 epochs", tasks=("cifar10",)),
    Row("proc-kd", False, 5.5, options={"epochs": 60}, label="60 epochs", tasks=("clothing10",)),
    Row("none", False, 5.5, options={"epochs": 60}, label="60 epochs", tasks=("clothing10",)),
)


def build_tree(task: Task, work: Path, extracted: Path | None = None, seed: int = 0) -> tuple[Path, Path]:
    """(the ImageFolder tree procedge trains on: train/ and validation/, the test split beside them never read by
    procedge, which takes validation/ as the held-out split; the test split). `extracted`: the archive's tree already
    extracted (its paths key the teacher cache, so runs elsewhere on the same folder share it)."""
    root = work / task.name
    if task.name == "clothing10":
        if extracted is None:
            if not (root / "raw" / "clothing10").is_dir():
                with tarfile.open(DATA / task.archive) as tar:
                    tar.extractall(root / "raw", filter="data")
            extracted = root / "raw" / "clothing10"
        return extracted, extracted / "test"
    tree, test = root / "tree", root / "test"
    if (root / "ready").exists():
        return tree, test
    with tarfile.open(DATA / task.archive) as tar:  # cifar10: a seeded validation split of 100 a class and a training
        # split of 1,100 a class from train/: each seed labels 100 a class of it, the other 10,000 are the pool
        tar.extractall(root / "raw", filter="data")
    rng = random.Random(seed)
    for class_dir in sorted((root / "raw" / "train").iterdir()):
        files = sorted(class_dir.iterdir())
        rng.shuffle(files)
        for split, chosen in (("validation", files[:100]), ("train", files[100:100 + CIFAR_TRAIN_PER_CLASS])):
            link_files(chosen, tree / split / class_dir.name)
    for class_dir in sorted((root / "raw" / "test").iterdir()):  # a seeded 200 a class of the test folder: the teacher's
        files = sorted(class_dir.iterdir())                        # probe at 224 px reads it once per seed
        link_files(rng.sample(files, CIFAR_TEST_PER_CLASS), test / class_dir.name)
    (root / "ready").touch()
    return tree, test


def link_files(files: list[Path], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in files:
        (folder / f.name).symlink_to(f.resolve())


def run_once(task: Task, tree: Path, row: Row, student: tuple[str, int] | None, seed: int, work: Path) -> tuple[RunDir, dict]:
    """Train (or reuse) one seed of a row; the student is procedge's sizing for the row's speedup unless given."""
    name, size = student or (None, None)
    config, sizing = resolve_config(TARGET, teacher=TEACHER, data=tree, method=row.method, seed=seed, student=name,
                                    student_size=size, student_pretrained=student is not None, speedup=row.speedup,
                                    labels_per_class=task.labels_per_class, max_unlabeled=None if row.pool else 0,
                                    **task.options, **row.options)
    key = f"{row.method}-{'pool' if row.pool else 'labelled'}-{config.student.name}@{config.student.input_size}-s{seed}"
    out = work / task.name / "runs" / (key + (f"-{row.label}" if row.label else ""))
    run = RunDir(out)
    same = run.config.exists() and RunConfig.load(run.config) == config
    if same and run.metrics.exists():
        return run, read_json(run.metrics)
    if same and run.last_checkpoint.exists():  # interrupted: continue from its last epoch
        return run, distill(None, out, resume=True)
    metrics = distill(config, out, sizing, overwrite=True)
    return run, metrics


def test_accuracy(run: RunDir, test_root: Path, probes: dict) -> tuple[float, float]:
    """(student, teacher probe) top-1 on the test split, PyTorch. `probes`: the probe's accuracy by (test split, seed),
    filled here: a seed's labelled images, and so its probe, are the same in every row."""
    trained = load_trained(run)
    test = load_split(test_root, trained.classes)
    key = (str(test_root), trained.config.train.seed, trained.config.teacher.input_size)
    if key not in probes:
        probes[key] = evaluate(trained.teacher_net(), test, trained.config.teacher.input_size)
    return evaluate(trained.student_net(), test, trained.config.student.input_size), probes[key]


def speedups(run: RunDir) -> dict[str, float]:
    """The student's measured speedup over the teacher on OpenVINO fp32 and ONNX Runtime fp32 (procedge bench)."""
    for fmt in ("openvino", "ort"):
        if not (run.format_dir(fmt, "fp32") / "manifest.json").exists():
            export_run(run.path, fmt, "fp32")
    report = bench_run(run.path, ["openvino", "ort"], TimingPolicy(min_runs=200, min_seconds=2.0))
    return {r["format"]: r["speedup"] for r in report["rows"] if r["model"] == "student" and r.get("speedup")}


def run_row(task: Task, tree: Path, test_root: Path, row: Row, work: Path, students: dict, probes: dict) -> dict:
    started = time.perf_counter()
    tests, vals, probe_tests = [], [], []
    run = sizing = config = None
    for seed in row.seeds:
        run, metrics = run_once(task, tree, row, students.get(f"{row.speedup:g}"), seed, work)
        sizing = read_json(run.sizing) if run.sizing.exists() else {}
        config = RunConfig.load(run.config)
        students.setdefault(f"{row.speedup:g}", [config.student.name, config.student.input_size])  # every row of a speedup: the one sized first
        student_test, probe_test = test_accuracy(run, test_root, probes)
        tests.append(100 * student_test)
        probe_tests.append(100 * probe_test)
        vals.append(100 * metrics["student_accuracy"])
    speed = speedups(run)
    return {"task": task.name, "method": row.method, "pool": row.pool, "label": row.label, "run": str(run.path),
            "student": config.student.name, "student_size": config.student.input_size,
            "teacher": config.teacher.name, "teacher_size": config.teacher.input_size, "precision": "fp32",
            "test_mean": statistics.mean(tests), "test_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
            "test_per_seed": tests, "val_mean": statistics.mean(vals), "seeds": list(row.seeds), "probe": statistics.mean(probe_tests),
            "probe_per_seed": probe_tests,  # each seed draws its own 50 labels a class, and the probe is fitted on them
            "asked_speedup": row.speedup, "speedup_openvino": speed.get("openvino"), "speedup_ort": speed.get("ort"),
            "predicted_speedup": sizing.get("predicted_speedup"), "timed_speedup": sizing.get("timed_speedup"),
            "epochs": config.train.epochs, "teacher_views": config.data.teacher_views,
            "wall_seconds": time.perf_counter() - started}


def quantised(task: Task, run: RunDir, test_root: Path, model: str, row: dict | None = None) -> list[dict]:
    """`model` ("teacher" or "student") of `run` quantised (OpenVINO NNCF INT8, ONNX Runtime static QDQ INT8): its test
    accuracy through the runtime, and its speedup over the fp32 teacher on the same runtime (`procedge bench`,
    interleaved). `row`: the student's fp32 row, whose method, pool and asked speedup the INT8 rows keep."""
    import numpy as np

    from procedge.loader import arrays_at_sizes
    from procedge.runtime import accuracy, load_export
    from procedge.targets import Runtime

    started = time.perf_counter()
    for fmt in ("openvino", "ort"):
        for precision in ("fp32", "int8"):
            if not (run.format_dir(fmt, precision) / "manifest.json").exists():
                export_run(run.path, fmt, precision)
    report = bench_run(run.path, ["openvino", "ort"], TimingPolicy(min_runs=200, min_seconds=2.0))
    config = RunConfig.load(run.config)
    network = config.teacher if model == "teacher" else config.student
    test = load_split(test_root, load_trained(run).classes)
    images = arrays_at_sizes(test, {model: network.input_size})[model].numpy()
    labels = np.asarray(test.labels)
    p50 = {(r["model"], r["format"], r["precision"]): r["latency"]["p50_ms"] for r in report["rows"] if r["latency"]}
    same = {"method": "teacher", "pool": False, "asked_speedup": 0.0} if row is None else \
        {k: row[k] for k in ("method", "pool", "asked_speedup")}
    rows = []
    for fmt in ("openvino", "ort"):
        runner, _, _ = load_export(run.format_dir(fmt, "int8"), model, Runtime(threads=os.cpu_count()))
        rows.append({"task": task.name, **same, "label": f"{fmt} int8", "run": str(run.path),
                     "student": network.name, "student_size": network.input_size, "teacher": config.teacher.name,
                     "teacher_size": config.teacher.input_size, "precision": "int8",
                     "test_mean": 100 * accuracy(runner, images, labels), "test_std": 0.0, "seeds": [config.train.seed],
                     f"speedup_{fmt}": p50[("teacher", fmt, "fp32")] / p50[(model, fmt, "int8")],
                     "speedup_over_own_fp32": p50[(model, fmt, "fp32")] / p50[(model, fmt, "int8")],
                     "wall_seconds": time.perf_counter() - started})
    return rows


def finetuned_teacher(task: Task, tree: Path, test_root: Path, work: Path, teacher_size: int, probes: dict) -> dict:
    """The teacher fine-tuned on seed 0's labelled images (procedge's `none` with the teacher's own pretrained network
    as the student, at the teacher's size): the big model a user would otherwise deploy. Its schedule is the one of
    FINETUNE_EPOCHS best on validation; the row reports that one's test accuracy (speedup 1: the teacher itself)."""
    started = time.perf_counter()
    val, test, runs = {}, {}, {}
    for epochs in FINETUNE_EPOCHS:
        row = Row("none", False, 1.0, options={"epochs": epochs}, label=f"teacher-{epochs}ep")
        runs[epochs], metrics = run_once(task, tree, row, (TEACHER, teacher_size), 0, work)
        val[epochs] = 100 * metrics["student_accuracy"]
        test[epochs] = 100 * test_accuracy(runs[epochs], test_root, probes)[0]
    best = max(FINETUNE_EPOCHS, key=lambda e: (val[e], -e))
    return {"task": task.name, "method": "teacher", "pool": False, "label": "fine-tuned", "run": str(runs[best].path),
            "student": TEACHER, "student_size": teacher_size, "teacher": TEACHER, "teacher_size": teacher_size,
            "precision": "fp32", "test_mean": test[best], "test_std": 0.0, "seeds": [0], "val_mean": val[best],
            "val_by_epochs": val, "epochs": best, "asked_speedup": 1.0, "speedup_openvino": 1.0, "speedup_ort": 1.0,
            "wall_seconds": time.perf_counter() - started}


def with_references(results: dict) -> dict:
    """Each row of a task carries the fine-tuned teacher's test accuracy (`teacher_finetuned`) and the quantised
    teacher's on each runtime (`teacher_quantised`, e.g. {"openvino": 85.5, "ort": 85.8}) once they are known, and
    the teacher's own rows and the INT8 students the probe of the seed whose labels they used (the other students' rows:
    the mean over theirs)."""
    tuned = {r["task"]: r["test_mean"] for r in results["table"] if r["method"] == "teacher" and r["label"] == "fine-tuned"}
    quantised: dict = {}
    for r in results["table"]:
        if r["method"] == "teacher" and r["precision"] == "int8":
            quantised.setdefault(r["task"], {})[r["label"].split()[0]] = r["test_mean"]
    probes = {(r["task"], seed): probe for r in results["table"] if "probe_per_seed" in r
              for seed, probe in zip(r["seeds"], r["probe_per_seed"])}
    for r in results["table"]:
        r["teacher_finetuned"] = tuned.get(r["task"])
        r["teacher_quantised"] = quantised.get(r["task"])
        if r["method"] == "teacher" or r["precision"] == "int8":  # one seed's model: that seed's probe
            r["probe"] = probes.get((r["task"], r["seeds"][0]), r.get("probe"))
    return results


def row_key(task: str, row: Row) -> str:
    return f"{task}/{row.method}/{'pool' if row.pool else 'labelled'}/{row.speedup:g}x/{row.label}"


def tabulate(results: dict) -> None:
    table = Table(title="compression on real photos: students against the Lite2 teacher (test split)")
    for column in ("task", "method", "pool", "student", "test %", "seeds", "vs probe", "speedup OV / ORT", "val %", "wall s"):
        table.add_column(column)
    for r in results["table"]:
        table.add_row(r["task"], r["method"] + (f" ({r['label']})" if r["label"] else ""), "yes" if r["pool"] else "no",
                      f"{r['student']} @ {r['student_size']}", f"{r['test_mean']:.2f} ± {r['test_std']:.2f}", str(len(r["seeds"])),
                      f"{r['test_mean'] - r['probe']:+.1f} pts (probe {r['probe']:.1f})",
                      " / ".join(f"{r[k]:.1f}x" if r.get(k) else "-" for k in ("speedup_openvino", "speedup_ort")),
                      f"{r['val_mean']:.1f}" if r.get("val_mean") else "-", f"{r['wall_seconds']:.0f}")
    console.print(table)


RUN_NAMES = {"proc-kd": "ProC-KD", "none": "student alone (`none`)", "pseudo-label": "pseudo-label"}


def short(name: str) -> str:
    """A timm name as the tables show it (`lite0` for `tf_efficientnet_lite0`)."""
    return name.replace("tf_efficientnet_", "")


def run_name(row: dict) -> str:
    """A student's row as the tables name it: the method, and whether it read the pool."""
    return RUN_NAMES[row["method"]] + (", + unlabelled pool" if row["pool"] else ", labelled only")


def markdown(results: dict, task: str) -> str:
    """The task's rows as the Markdown table the README and docs show: the trade of each run, and its gap to each of the
    teacher's references (its probe on the run's own seeds, the fine-tuned teacher)."""
    rows = [r for r in results["table"] if r["task"] == task and not is_ablation(r)]
    lines = ["| run | network | asked | speedup over the fp32 teacher, OpenVINO / ORT | test | vs probe | vs fine-tuned teacher "
             "| vs quantised teacher (OpenVINO / ORT INT8) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["method"] == "teacher", -r["asked_speedup"], r["method"] != "proc-kd", not r["pool"],
                                         r["precision"] == "int8")):
        if r["method"] == "teacher":
            name = "teacher fine-tuned on the labels" if r["label"] == "fine-tuned" else f"teacher quantised ({r['label']})"
        else:
            name = run_name(r)
            name += f", quantised ({r['label']})" if r["precision"] == "int8" else ""
        seeds = len(r["seeds"])
        test = f"{r['test_mean']:.1f}%" + (f" ± {r['test_std']:.1f} ({seeds} seeds)" if seeds > 1 else " (1 seed)")
        speed = " / ".join(f"{r[k]:.1f}x" if r.get(k) else "-" for k in ("speedup_openvino", "speedup_ort"))
        tuned = f"{r['test_mean'] - r['teacher_finetuned']:+.1f} pts" if r.get("teacher_finetuned") and r["label"] != "fine-tuned" else "-"
        quantised = " / ".join(f"{r['test_mean'] - r['teacher_quantised'][fmt]:+.1f}" for fmt in ("openvino", "ort"))
        quantised = f"{quantised} pts" if r["method"] != "teacher" and r.get("teacher_quantised") else "-"
        asked = f"{r['asked_speedup']:g}x" if r["asked_speedup"] >= 2 else "-"
        lines.append(f"| {name} | {short(r['student'])} @ {r['student_size']} | {asked} | {speed} | "
                     f"{test} | {r['test_mean'] - r['probe']:+.1f} pts | {tuned} | {quantised} |")
    bar = next((r for r in rows if r["method"] == "proc-kd" and r["pool"] and len(r["seeds"]) > 1), rows[0])
    lines.append(f"| teacher's linear probe on the labels (the reference; seeds {', '.join(map(str, bar['seeds']))}) | "
                 f"{short(bar['teacher'])} @ {bar['teacher_size']} | - | 1.0x | {bar['probe']:.1f}% | | | |")
    return "\n".join(lines)


def is_ablation(row: dict) -> bool:
    """A validation ablation: a student's fp32 row that varies a default (it has a label)."""
    return bool(row["label"]) and row["method"] != "teacher" and row["precision"] == "fp32"


def headline_markdown(results: dict) -> str:
    """One line a task, the README's: the bar's student (ProC-KD with the pool, most seeds) against the same student
    alone and each of the teacher's references."""
    lines = ["| task (teacher) | student | speedup OpenVINO / ORT (fp32) | ProC-KD + pool | student alone | teacher's probe "
             "| teacher fine-tuned | teacher INT8 OpenVINO / ORT (its speedup) |", "|---|---|---|---|---|---|---|---|"]
    for task in dict.fromkeys(r["task"] for r in results["table"]):
        rows = [r for r in results["table"] if r["task"] == task and not r["label"]]
        bar = max((r for r in rows if r["method"] == "proc-kd" and r["pool"]), key=lambda r: len(r["seeds"]), default=None)
        if bar is None:
            continue
        alone = next((r for r in rows if r["method"] == "none" and r["asked_speedup"] == bar["asked_speedup"]), None)
        teacher = {r["label"]: r for r in results["table"] if r["task"] == task and r["method"] == "teacher"}

        def accuracy(r: dict | None) -> str:
            return "-" if r is None else f"{r['test_mean']:.1f}%" + (f" ± {r['test_std']:.1f}" if len(r["seeds"]) > 1 else "")

        int8 = " / ".join(f"{accuracy(teacher.get(f'{fmt} int8'))} ({teacher[f'{fmt} int8'][f'speedup_{fmt}']:.1f}x)"
                          if f"{fmt} int8" in teacher else "-" for fmt in ("openvino", "ort"))
        lines.append(f"| {task} ({short(bar['teacher'])} @ {bar['teacher_size']}) | "
                     f"{short(bar['student'])} @ {bar['student_size']} (asked {bar['asked_speedup']:g}x) | "
                     f"{bar['speedup_openvino']:.1f}x / {bar['speedup_ort']:.1f}x | **{accuracy(bar)}** ({len(bar['seeds'])} seeds) | "
                     f"{accuracy(alone)} | {bar['probe']:.1f}% | {accuracy(teacher.get('fine-tuned'))} | {int8} |")
    return "\n".join(lines)


def ablation_markdown(results: dict, task: str) -> str:
    """The task's validation ablations (labelled rows of a method), each beside the default row it varies: validation
    accuracy chose, and the test column only reports."""
    rows = [r for r in results["table"] if r["task"] == task and r["method"] != "teacher" and r["precision"] == "fp32"]
    lines = ["| run | network | epochs, cached views | validation | test |", "|---|---|---|---|---|"]
    for ablation in filter(is_ablation, rows):
        same = [r for r in rows if (r["method"], r["pool"], r["asked_speedup"]) == (ablation["method"], ablation["pool"],
                                                                                    ablation["asked_speedup"])]
        for r in sorted(same, key=lambda r: bool(r["label"])):
            name = run_name(r) + (f" ({r['label']})" if r["label"] else " (default)")
            seeds = f" ({len(r['seeds'])} seeds)" if len(r["seeds"]) > 1 else ""
            lines.append(f"| {name} | {short(r['student'])} @ {r['student_size']} | "
                         f"{r['epochs']}, {r['teacher_views']} | {r['val_mean']:.1f}%{seeds} | {r['test_mean']:.1f}%{seeds} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="clothing10,cifar10")
    parser.add_argument("--work", type=Path, default=REPO / ".cache" / "compression")
    parser.add_argument("--only", choices=("tabulate",))
    parser.add_argument("--markdown", action="store_true", help="also print each task's table as Markdown (the README's and docs')")
    parser.add_argument("--rows", help="comma-separated indices into ROWS, `quantised` for the bar's student in INT8, `teacher` for "
                                       "the fine-tuned teacher (default: all)")
    parser.add_argument("--clothing10", type=Path, help="clothing10/ already extracted from its archive (default: extract under --work)")
    args = parser.parse_args()
    os.environ.setdefault("PROCEDGE_CACHE_DIR", str(args.work / "cache"))
    results = with_references(read_json(OUT)) if OUT.exists() else {"table": []}
    results["host"] = {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform()}
    done = {row_key(r["task"], Row(r["method"], r["pool"], r["asked_speedup"], label=r["label"])): r["seeds"] for r in results["table"]}
    probes: dict = {}

    def record(result: dict) -> None:
        key = row_key(result["task"], Row(result["method"], result["pool"], result["asked_speedup"], label=result["label"]))
        results["table"] = [r for r in results["table"] if row_key(r["task"], Row(r["method"], r["pool"], r["asked_speedup"],
                                                                                   label=r["label"])) != key]
        results["table"].append(result)
        results["date"] = time.strftime("%Y-%m-%d")
        write_json(OUT, with_references(results))
        speed = ", ".join(f"{result[k]:.1f}x {fmt}" for k, fmt in (("speedup_openvino", "OV"), ("speedup_ort", "ORT")) if result.get(k))
        console.print(f"{key}: {result['test_mean']:.2f}% test, {speed}")

    if args.only != "tabulate":
        every = [*map(str, range(len(ROWS))), "quantised", "teacher"]
        chosen = args.rows.split(",") if args.rows else every
        if unknown := [i for i in chosen if i not in every]:
            parser.error(f"--rows {','.join(unknown)}: give indices 0 to {len(ROWS) - 1}, `quantised` or `teacher`")
        for name in args.tasks.split(","):
            task = TASKS[name]
            tree, test_root = build_tree(task, args.work, args.clothing10 if name == "clothing10" else None)
            students = results.setdefault("sized", {}).setdefault(name, {})  # kept in the JSON: a resumed run reuses them
            for row in [ROWS[int(i)] for i in chosen if i.isdigit()]:
                if row.tasks and name not in row.tasks:
                    continue
                if done.get(row_key(name, row)) == list(row.seeds):  # a row with more seeds asked runs the missing ones
                    continue
                result = run_row(task, tree, test_root, row, args.work, students, probes)
                record(result)
                if not any(r["task"] == name and r["method"] == "teacher" and r["precision"] == "int8" for r in results["table"]):
                    for teacher_row in quantised(task, RunDir(result["run"]), test_root, "teacher"):
                        record(teacher_row)
            bars = [r for r in results["table"] if r["task"] == name and r["method"] == "proc-kd" and r["pool"] and not r["label"]]
            if "quantised" in chosen and bars and not any(r["task"] == name and r["method"] != "teacher" and r["precision"] == "int8"
                                                          for r in results["table"]):
                bar = max(bars, key=lambda r: (len(r["seeds"]), r["asked_speedup"]))  # the bar's row: its last seed's student
                for student_row in quantised(task, RunDir(bar["run"]), test_root, "student", bar):
                    record(student_row)
            if "teacher" in chosen and row_key(name, Row("teacher", False, 1.0, label="fine-tuned")) not in done:
                teacher_size = next(r["teacher_size"] for r in results["table"] if r["task"] == name)
                record(finetuned_teacher(task, tree, test_root, args.work, teacher_size, probes))
    tabulate(results)
    if args.markdown:
        print(f"\nheadline\n\n{headline_markdown(results)}")
        for name in args.tasks.split(","):
            print(f"\n{name}\n\n{markdown(results, name)}")
            if ablations := ablation_markdown(results, name):
                print(f"\n{name}, validation ablations\n\n{ablations}")


if __name__ == "__main__":
    main()
