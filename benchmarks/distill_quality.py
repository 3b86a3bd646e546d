"""Distillation quality on CIFAR-10: every method against `none`, with the ImageNet Lite0 teacher.

    python benchmarks/distill_quality.py                       # CPU mode (see CPU below), within an hour on 2 cores
    python benchmarks/distill_quality.py --full                # full CIFAR-10, for a GPU
    python benchmarks/distill_quality.py --assess              # also: teacher assessment ranking vs the students it gives
    python benchmarks/distill_quality.py --ablation            # ProC-KD ablation, validation split only

The same student, epochs, data, augmentation and seeds for every method. A validation split carved from
CIFAR-10's train folder is the runs' held-out split (all model selection and the ablation read it); the
test folder is read only for the final numbers. Runs are kept under --work and reused when their resolved
config is unchanged, so an interrupted benchmark continues where it stopped. Prints tables and writes JSON.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("PROCEDGE_QUIET", "1")

from procedge.config import RunConfig  # noqa: E402
from procedge.data import ImageSet, load_split  # noqa: E402
from procedge.distill import distill, resolve_config  # noqa: E402
from procedge.io import read_json, write_json  # noqa: E402
from procedge.models.load import load_trained  # noqa: E402
from procedge.run import RunDir  # noqa: E402
from procedge.train import evaluate  # noqa: E402

DEFAULT_ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
METHODS = ("none", "fitnets", "inverted-projection", "ot", "pat", "proc-kd")
console = Console(width=160)


@dataclass(frozen=True)
class Mode:
    name: str
    train_per_class: int
    val_per_class: int
    student: str
    student_size: int
    teacher_size: int
    epochs: int
    seeds: tuple[int, ...]
    batch_size: int = 64
    lr: float = 2e-3
    teacher_views: int = 8  # cached augmented views per training image (consistent teaching)
    assess_seeds: int = 2  # seeds per extra teacher in the assessment
    target: str = "intel-cpu"
    method_options: dict = field(default_factory=dict)


# 100 labelled images per class: the scarce-label regime where a cross-task teacher should pay (its linear probe is
# about 18 points ahead of the student trained alone), and 2 seeds x 6 methods fit in the hour on 2 CPU cores. The
# teacher's outputs are cached for 8 augmented views of each image and the student trains on exactly those views
# (consistent teaching). PAT's feedback prompts need the teacher live every step, so the CPU mode runs PAT without them.
CPU = Mode("cpu", train_per_class=100, val_per_class=100, student="resnet18", student_size=32, teacher_size=96, epochs=60,
           seeds=(0, 1), assess_seeds=1, method_options={"pat": {"prompts": False}})
FULL = Mode("full", train_per_class=4500, val_per_class=500, student="resnet18", student_size=32, teacher_size=160, epochs=30,
            seeds=(0, 1, 2), batch_size=128)

# ProC-KD ablation: each loss term off in turn, prototypes, width, temperatures, teacher stages.
ABLATION = {
    "default": {},
    "+L_feat": {"w_feat": 1.0},
    "+L_feat, no L_kl": {"w_feat": 1.0, "w_kl": 0.0},
    "+L_feat x10": {"w_feat": 10.0},
    "no L_kl": {"w_kl": 0.0},
    "tau=0.5": {"assign_temperature": 0.5},
    "no L_loc": {"w_loc": 0.0},
    "no L_t": {"w_t": 0.0},
    "no L_a": {"w_a": 0.0},
    "no L_s": {"w_s": 0.0},
    "T=1": {"kd_temperature": 1.0},
    "K=16": {"num_prototypes": 16},
    "D=256": {"dim": 256},
    "stages=last": {"@stages": -1},
    "stages=last3": {"@stages": -3},
}


def extract_cifar(archive: Path, dest: Path) -> Path:
    if not (dest / "test").is_dir():
        if not archive.exists():
            sys.exit(f"error: {archive} is absent; pass --archive with the CIFAR-10 JPEG tarball")
        console.print(f"extracting {archive} to {dest}")
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    return dest


def make_subset(cifar: Path, out: Path, train_per_class: int, val_per_class: int, seed: int = 0) -> Path:
    """`out/train/<class>` and `out/val/<class>` as links into CIFAR-10's train folder, disjoint, seeded."""
    if (out / "val").is_dir():
        return out
    tmp = out.with_name(out.name + ".tmp")
    for cls_dir in sorted(p for p in (cifar / "train").iterdir() if p.is_dir()):
        files = sorted(cls_dir.iterdir())
        random.Random(f"{seed}-{cls_dir.name}").shuffle(files)
        for split, chosen in (("val", files[:val_per_class]), ("train", files[val_per_class:val_per_class + train_per_class])):
            (tmp / split / cls_dir.name).mkdir(parents=True, exist_ok=True)
            for f in chosen:
                (tmp / split / cls_dir.name / f.name).symlink_to(f.resolve())
    tmp.rename(out)
    return out


class Bench:
    """One benchmark's data, runs and test evaluation."""

    def __init__(self, mode: Mode, work: Path, archive: Path):
        self.mode, self.work = mode, work
        self.cifar = extract_cifar(archive, work.parent / "cifar10")
        self.tree = make_subset(self.cifar, work / f"data-{mode.train_per_class}-{mode.val_per_class}", mode.train_per_class, mode.val_per_class)
        self.runs = work / f"runs-{mode.train_per_class}pc-{mode.epochs}ep" / f"views{mode.teacher_views}"
        self.classes = sorted(p.name for p in (self.cifar / "test").iterdir() if p.is_dir())
        self._test: dict[int, ImageSet] = {}

    def test_set(self, size: int) -> ImageSet:
        if size not in self._test:
            self._test[size] = load_split(self.cifar / "test", self.classes, size)
        return self._test[size]

    def config(self, method: str, seed: int, options: dict, teacher_weights: Path | None = None) -> RunConfig:
        m = self.mode
        options = dict(options)
        stages = options.pop("@stages", None)
        config, _ = resolve_config(m.target, teacher_weights=teacher_weights, data=self.tree, student=m.student, method=method,
                                   epochs=m.epochs, seed=seed, teacher_size=m.teacher_size, student_size=m.student_size,
                                   method_options=options, augment_data=True, teacher_views=m.teacher_views)
        update = {"train": config.train.model_copy(update={"batch_size": m.batch_size, "lr": m.lr})}
        if stages is not None:
            from procedge.models.teacher import create_teacher_model

            info = create_teacher_model(config.teacher.name, config.teacher.weights).feature_info
            update["teacher"] = config.teacher.model_copy(update={"stages": [e["module"] for e in info][stages:]})
        return config.model_copy(update=update)

    def run(self, label: str, config: RunConfig, test: bool = True) -> dict:
        """Distill (or reuse an identical finished run) and return its numbers; test accuracy only when asked."""
        out = self.runs / label
        run = RunDir(out)
        if not (run.metrics.exists() and RunConfig.load(run.config) == config):
            console.print(f"[bold]{label}[/bold]: distilling")
            distill(config, out, overwrite=True)
        metrics = run.read_metrics()
        row = {"label": label, "method": config.method, "seed": config.train.seed, "options": config.method_options,
               "val_accuracy": metrics["student_accuracy"], "teacher_probe_val_accuracy": metrics["teacher_probe_accuracy"],
               "train_seconds": sum(h["seconds"] for h in metrics["history"]), "wall_seconds": metrics["wall_seconds"],
               "history": metrics["history"]}
        if test:
            scores = out / "test.json"
            if not scores.exists():
                trained = load_trained(run)
                write_json(scores, {"student": evaluate(trained.student_net(), self.test_set(config.student.input_size), config.student.input_size)})
            row["test_accuracy"] = read_json(scores)["student"]
        console.print(f"  {label}: val {row['val_accuracy']:.2%}" + (f", test {row['test_accuracy']:.2%}" if test else "")
                      + f", {row['train_seconds']:.0f} s training")
        return row

    def teacher_probe_test(self, label: str) -> float:
        """The teacher's own accuracy on the task: its linear probe (fit on the training subset) on the test split."""
        out = self.runs / label
        scores = read_json(out / "test.json")
        if "teacher_probe" not in scores:
            trained = load_trained(RunDir(out))
            size = trained.config.teacher.input_size
            scores["teacher_probe"] = evaluate(trained.teacher_net(), self.test_set(size), size)
            write_json(out / "test.json", scores)
        return scores["teacher_probe"]


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def compare_methods(bench: Bench, methods: tuple[str, ...]) -> dict:
    m = bench.mode
    rows = [bench.run(f"{method}-s{seed}", bench.config(method, seed, m.method_options.get(method, {})))
            for seed in m.seeds for method in sorted(methods, key=lambda name: name not in ("none", "proc-kd"))]
    probe = bench.teacher_probe_test(rows[0]["label"])
    summary = {}
    for method in methods:
        mine = [r for r in rows if r["method"] == method]
        acc, spread = mean_std([r["test_accuracy"] for r in mine])
        summary[method] = {"test_mean": acc, "test_std": spread, "val_mean": statistics.fmean(r["val_accuracy"] for r in mine),
                           "train_seconds": statistics.fmean(r["train_seconds"] for r in mine),
                           "per_seed": {r["seed"]: r["test_accuracy"] for r in mine}}
    floor = summary.get("none", {}).get("test_mean")
    table = Table(title=f"CIFAR-10 {m.name} mode: {m.train_per_class}/class train, {m.student} at {m.student_size} px, "
                        f"{m.epochs} epochs, seeds {list(m.seeds)}; teacher Lite0 at {m.teacher_size} px")
    for column in ("method", "test acc (mean ± std)", "gain over none", "val acc", "train s / run", "per seed"):
        table.add_column(column)
    for method, s in summary.items():
        gain = f"{(s['test_mean'] - floor) * 100:+.2f} pt" if floor is not None else "-"
        table.add_row(method, f"{s['test_mean']:.2%} ± {s['test_std'] * 100:.2f}", gain, f"{s['val_mean']:.2%}", f"{s['train_seconds']:.0f}",
                      ", ".join(f"{v:.2%}" for v in s["per_seed"].values()))
    table.add_row("teacher linear probe (reference)", f"{probe:.2%}", "", f"{rows[0]['teacher_probe_val_accuracy']:.2%}", "", "")
    console.print(table)
    return {"summary": summary, "teacher_probe_test_accuracy": probe, "runs": rows}


def assess_vs_reality(bench: Bench) -> dict:
    """Rank teachers by the OT relatedness score, distill ProC-KD from each, and correlate the two rankings."""
    from scipy.stats import spearmanr

    from procedge.assess import TeacherSpec, assess_teachers
    from teachers import make_benchmark_teachers

    m = bench.mode
    teachers = make_benchmark_teachers(bench.work / "teachers", seed=0)
    started = time.perf_counter()
    specs = [TeacherSpec(name, path) for _, name, path in teachers]
    assessment = assess_teachers(bench.tree, specs, input_size=m.teacher_size, max_images=1000, seed=0)
    assess_seconds = time.perf_counter() - started
    by_weights = {str(r["weights"]) if r["weights"] else None: r for r in assessment["ranking"]}
    rows = []
    for label, _, path in teachers:
        seeds = m.seeds if path is None else m.seeds[:m.assess_seeds]
        runs = [bench.run(f"proc-kd-s{seed}" if path is None else f"proc-kd-{label}-s{seed}", bench.config("proc-kd", seed, {}, path))
                for seed in seeds]
        score = by_weights[str(path) if path else None]
        rows.append({"teacher": label, "score": score["score"], "assess_seconds": score["seconds"],
                     "student_test_mean": statistics.fmean(r["test_accuracy"] for r in runs),
                     "teacher_probe_val": runs[0]["teacher_probe_val_accuracy"]})
    rho = spearmanr([-r["score"] for r in rows], [r["student_test_mean"] for r in rows]).statistic
    table = Table(title=f"teacher assessment vs the students it gives (Spearman rho {rho:+.2f}; assessment {assess_seconds:.0f} s in all)")
    for column in ("teacher", "OT score (lower = more related)", "assess s", "ProC-KD student test acc", "teacher probe val acc"):
        table.add_column(column)
    for r in sorted(rows, key=lambda r: r["score"]):
        table.add_row(r["teacher"], f"{r['score']:.4f}", f"{r['assess_seconds']:.1f}", f"{r['student_test_mean']:.2%}", f"{r['teacher_probe_val']:.2%}")
    console.print(table)
    return {"spearman_rho": rho, "teachers": rows, "assessment": assessment, "assess_seconds": assess_seconds}


def ablation(bench: Bench, variants: list[str]) -> dict:
    """ProC-KD variants on the validation split (one seed), against `none` on the same split."""
    seed = bench.mode.seeds[0]
    floor = bench.run(f"none-s{seed}", bench.config("none", seed, {}), test=False)["val_accuracy"]
    rows = {}
    for name in variants:
        options = ABLATION[name]
        label = f"proc-kd-s{seed}" if not options else f"ablation-{name.replace(' ', '_').replace('=', '')}-s{seed}"
        rows[name] = bench.run(label, bench.config("proc-kd", seed, options), test=False)["val_accuracy"]
    table = Table(title=f"ProC-KD ablation, validation split, seed {seed} (none: {floor:.2%})")
    for column in ("variant", "val acc", "vs default", "vs none"):
        table.add_column(column)
    for name, acc in rows.items():
        table.add_row(name, f"{acc:.2%}", f"{(acc - rows.get('default', acc)) * 100:+.2f} pt", f"{(acc - floor) * 100:+.2f} pt")
    console.print(table)
    return {"none_val_accuracy": floor, "variants": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="full CIFAR-10 (45,000 train / 5,000 val), 30 epochs, 3 seeds: for a GPU")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods to compare")
    parser.add_argument("--assess", action="store_true", help="also rank the benchmark teachers and correlate with their students")
    parser.add_argument("--ablation", nargs="?", const="all", help="ProC-KD ablation on the validation split: 'all' or ';'-separated variant names")
    parser.add_argument("--skip-compare", action="store_true", help="only the assessment and/or the ablation")
    parser.add_argument("--epochs", type=int, help="override the mode's epochs")
    parser.add_argument("--train-per-class", type=int, help="override the mode's labelled training images per class")
    parser.add_argument("--seeds", help="override the mode's seeds, e.g. 0,1")
    parser.add_argument("--teacher-views", type=int, help="override the mode's cached teacher views (0: teacher on unaugmented images)")
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--work", type=Path, help="runs and extracted data (default: .cache/distill_quality/<mode>)")
    parser.add_argument("--out", type=Path, help="JSON results (default: benchmarks/results/distill_quality_<mode>.json)")
    args = parser.parse_args()

    mode = FULL if args.full else CPU
    if args.epochs:
        mode = replace(mode, epochs=args.epochs)
    if args.teacher_views is not None:
        mode = replace(mode, teacher_views=args.teacher_views)
    if args.train_per_class:
        mode = replace(mode, train_per_class=args.train_per_class)
    if args.seeds:
        mode = replace(mode, seeds=tuple(int(s) for s in args.seeds.split(",")))
    work = args.work or REPO / ".cache" / "distill_quality" / mode.name
    os.environ.setdefault("PROCEDGE_CACHE_DIR", str(work.parent / "cache"))
    bench = Bench(mode, work, args.archive)
    started = time.perf_counter()
    results: dict = {"mode": asdict(mode), "host": {"cpus": os.cpu_count()}}
    if not args.skip_compare:
        results["comparison"] = compare_methods(bench, tuple(args.methods.split(",")))
    if args.assess:
        results["assessment"] = assess_vs_reality(bench)
    if args.ablation:
        results["ablation"] = ablation(bench, list(ABLATION) if args.ablation == "all" else args.ablation.split(";"))
    results["wall_seconds"] = time.perf_counter() - started
    out = args.out or REPO / "benchmarks" / "results" / f"distill_quality_{mode.name}.json"
    write_json(out, results)
    console.print(f"{results['wall_seconds'] / 60:.1f} min; results written to {out}")


if __name__ == "__main__":
    main()
