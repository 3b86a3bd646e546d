"""Distillation quality on CIFAR-10: every method against `none`, with the ImageNet Lite0 teacher.

    python benchmarks/distill_quality.py                       # CPU mode (see CPU below): several hours on 2 cores, resumable
    python benchmarks/distill_quality.py --only priority       # the cells the bars read first (none, pseudo-label, proc-kd)
    python benchmarks/distill_quality.py --only seeds --settings labelled   # none and proc-kd, every seed, labelled-only
    python benchmarks/distill_quality.py --only tabulate       # no new runs: the table of the finished ones
    python benchmarks/distill_quality.py --full                # full CIFAR-10 labels, for a GPU
    python benchmarks/distill_quality.py --live-teacher        # for a GPU: the teacher live on every fresh crop, 3x the pool epochs
    python benchmarks/distill_quality.py --assess              # also: teacher assessment ranking vs the students it gives
    python benchmarks/distill_quality.py --ablation            # ProC-KD ablation, validation split only
    python benchmarks/distill_quality.py --skip-compare --ablation "4 views, 3x epochs" --ablation-setting unlabelled \
        --seeds 0,1,2 --ablation-test                          # a variant chosen on val, on test over 3 seeds
    python benchmarks/distill_quality.py --skip-compare --pool-size 44000 --ablation "procedge's schedule" \
        --ablation-setting unlabelled --seeds 0 --ablation-test  # a 44,000-image pool on procedge's own schedule

Two settings: `labelled` (the labelled images only) and `unlabelled` (plus a pool of CIFAR-10 training
images used without labels, disjoint from the labelled, validation and test images). The same student,
augmentation and seeds for every method of a setting. A validation split carved from CIFAR-10's train
folder is the runs' held-out split (all model selection and the ablation read it); the test folder is read
only for the final numbers. Runs are kept under --work and reused when their resolved config is unchanged,
so an interrupted benchmark continues where it stopped; cells not run yet are listed as such. Prints
tables and writes JSON.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
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
from procedge.data import ImageFiles, load_split  # noqa: E402
from procedge.distill import SMALL_IMAGE_CROP_AREA, distill, resolve_config  # noqa: E402
from procedge.io import read_json, write_json  # noqa: E402
from procedge.methods.base import full_method_options, reads_unlabelled  # noqa: E402
from procedge.metrics import top1  # noqa: E402
from procedge.models.load import load_trained  # noqa: E402
from procedge.run import RunDir  # noqa: E402
from procedge.train import evaluate  # noqa: E402

DEFAULT_ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpg.tar.gz"
METHODS = ("none", "pseudo-label", "fitnets", "inverted-projection", "ot", "pat", "proc-kd")
SETTINGS = ("labelled", "unlabelled")
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
    unlabeled: int = 10_000  # the pool of the `unlabelled` setting (CIFAR-10 training images, labels unused)
    pool_epochs: int = 20  # epochs over labelled + pool (11,000 images an epoch at 100 labels a class)
    pool_views: int = 2  # cached teacher views of every image in the `unlabelled` setting
    crop_area: float = SMALL_IMAGE_CROP_AREA  # smallest training crop (area share): procedge's default for images under 112 px
    pool_batch_size: int = 256  # batch and peak learning rate of the `unlabelled` setting (10 epochs at 64 and 2e-3: +0.6 pt
    pool_lr: float = 4e-3  # on val for pseudo-label; 20 epochs at 256 and 4e-3: +7.3 pt, and 1.8x the images/s on 2 cores)
    curve: tuple[int, ...] = (25, 100, 500)  # labels a class of the learning curve (none vs proc-kd, with the pool)
    main_seeds: int = 3  # seeds for none, proc-kd and the strongest other method of each setting; 1 for the rest
    assess_seeds: int = 2  # seeds per extra teacher in the assessment
    live_teacher: bool = False  # the teacher run on every fresh crop of a method that reads it, instead of cached views
    target: str = "intel-cpu"
    method_options: dict = field(default_factory=dict)


# 100 labelled images per class: the scarce-label regime where a cross-task teacher should pay (its linear probe is
# about 20 points ahead of the student trained alone). The teacher runs at 160 px (CIFAR's 32 px images upscaled: at
# 96 px its probe loses about 5 points). Its outputs are cached for fixed augmented views of each image and the
# student trains on exactly those views (consistent teaching): 8 views of the 1,000 labelled images, 2 of each image
# when the 10,000-image pool is added. PAT's feedback prompts need the teacher live every step, so the CPU mode runs
# PAT without them.
CPU = Mode("cpu", train_per_class=100, val_per_class=100, student="resnet18", student_size=32, teacher_size=160, epochs=60,
           seeds=(0, 1, 2), assess_seeds=1, method_options={"pat": {"prompts": False}})
FULL = Mode("full", train_per_class=4500, val_per_class=500, student="resnet18", student_size=32, teacher_size=160, epochs=30,
            seeds=(0, 1, 2), batch_size=128, unlabeled=0, pool_epochs=30, curve=())

# ProC-KD ablation (validation split): each term off in turn, the prototype path off, prototypes, initialisation, and the
# shared label-free terms on the plain student (`@method`: the method a variant runs instead of proc-kd), and the schedule
# (`@epochs_factor`: times the setting's epochs) and the augmentation (`@crop_area`: the smallest area share of a crop;
# `@cutmix`: the share of the pool's views mixed, which needs the `unlabelled` setting; `@views`: cached teacher views per image;
# `@augment`: False for none at all; `@live`: the teacher run on every fresh crop instead of cached views; `@schedule`:
# epochs, views, batch size, lr and the labelled share of an epoch left to procedge's `Schedule`),
# the student's input size (`@student_size`), and the pool's images given their true labels (`@pool_labelled`, the
# `unlabelled` setting's schedule on as many labelled images).
ABLATION = {
    "default": {},
    "no L_t": {"w_t": 0.0},
    "no L_kl": {"w_kl": 0.0},
    "no L_loc, L_bal": {"w_loc": 0.0, "w_bal": 0.0},
    "no L_feat": {"w_feat": 0.0},
    "no emb": {"w_emb": 0.0},
    "no soft": {"w_soft": 0.0},
    "no prototype terms": {"w_t": 0.0, "w_kl": 0.0, "w_loc": 0.0, "w_bal": 0.0, "w_feat": 0.0},
    "random init": {"init_from_teacher": False},
    "K=16": {"num_prototypes": 16},
    "no logits": {"w_logits": 0.0},  # the default before 2026-11-24 (its ablation ran as "+logits")
    "stages=last": {"@stages": -1},
    "plain student, emb + soft": {"@method": "none", "w_emb": 1.0, "w_soft": 1.0},  # the label-free terms without ProC-KD
    "plain student, emb + soft + logits": {"@method": "none", "w_emb": 1.0, "w_soft": 1.0, "w_logits": 1.0},  # ProC-KD's shared terms
    "0.25x epochs": {"@epochs_factor": 0.25},  # with the pool: the 5 epochs procedge gave 11,000 images until 2026-11-24
    "2x epochs": {"@epochs_factor": 2},  # the schedule: does fitting the soft labels more closely generalise?
    "none, 2x epochs": {"@method": "none", "@epochs_factor": 2, "@views": 8},  # the floor on that schedule (on 8 fixed views)
    "pseudo-label, 2x epochs": {"@method": "pseudo-label", "@epochs_factor": 2},  # the reference on that schedule
    "flip only": {"@crop_area": 1.0},  # no crops: the probe's soft labels are more often right on flipped images than on crops
    "cutmix 0.5": {"@cutmix": 0.5},  # half the pool's cached views mixed (teacher on the mixed view): more distinct teacher queries
    "4 views": {"@views": 4},  # twice the cached views of every image: more teacher queries, with crops
    "4 views, 3x epochs": {"@views": 4, "@epochs_factor": 3},  # more distinct teacher-labelled views, seen as often as 2 in 20 epochs
    "8 views, 3x epochs": {"@views": 8, "@epochs_factor": 3},  # twice those views again: how far cached views go towards live
    "pseudo-label, 4 views, 3x epochs": {"@method": "pseudo-label", "@views": 4, "@epochs_factor": 3},  # the reference there
    "16 views": {"@views": 16},  # labelled setting: twice its 8 cached views
    "none, 16 views": {"@method": "none", "@views": 16},  # the student alone on the same 16 views
    "flip only, 2x epochs": {"@crop_area": 1.0, "@epochs_factor": 2},  # the two single-seed gains together
    # the student's resolution: at 64 px (CIFAR upscaled) resnet18 ends in a 2x2 map instead of 1x1, at 4x the compute
    "student 64 px": {"@student_size": 64},
    "pseudo-label, student 64 px": {"@method": "pseudo-label", "@student_size": 64},
    "none, student 64 px": {"@method": "none", "@student_size": 64, "@views": 8},  # labelled setting: the floor at that size
    # the ceiling of the `unlabelled` setting: the student alone on as many images, every one with its true label
    "none, pool's true labels": {"@method": "none", "@pool_labelled": True, "@views": 2},  # on the setting's 2 fixed views
    "none, pool's true labels, 2x epochs": {"@method": "none", "@pool_labelled": True, "@epochs_factor": 2, "@views": 2},
    "none, pool's true labels, fresh crops": {"@method": "none", "@pool_labelled": True, "@views": 0},  # a new random crop each epoch
    "none, 8 views": {"@method": "none", "@views": 8},  # the student alone on 8 fixed views (`none`'s default before 2026-11-24)
    "pseudo-label, fresh crops": {"@method": "pseudo-label", "@views": 0},  # the probe's label of the image on every crop of it
    "fresh crops": {"@views": 0},  # the teacher's centre-crop outputs, its maps cropped and mirrored to each fresh crop
    "fresh crops, 3x epochs": {"@views": 0, "@epochs_factor": 3},  # the live teacher's schedule without the live teacher
    "live teacher": {"@views": 0, "@live": True},  # the teacher on every fresh crop the student sees (for a GPU)
    "pseudo-label, live teacher": {"@method": "pseudo-label", "@views": 0, "@live": True},
    "live teacher, 3x epochs": {"@views": 0, "@live": True, "@epochs_factor": 3},  # fresh crops keep adding: under-trained?
    "pseudo-label, live teacher, 3x epochs": {"@method": "pseudo-label", "@views": 0, "@live": True, "@epochs_factor": 3},
    "no augmentation": {"@views": 0, "@augment": False},  # centre crops only: procedge's default past 20,000 images until 2026-11-24
    # procedge's own choice from the data's size (epochs, views or fresh crops, batch, lr, labelled share): with --pool-size, a pool
    # run at a size the fixed settings above never reach
    "procedge's schedule": {"@schedule": True},
    "pseudo-label, procedge's schedule": {"@method": "pseudo-label", "@schedule": True},
    # the same before labelled images kept their share of an epoch (`@labelled_share`: DataConfig.labelled_share)
    "procedge's schedule, labelled once": {"@schedule": True, "@labelled_share": 0.0},
    "pseudo-label, procedge's schedule, labelled once": {"@method": "pseudo-label", "@schedule": True, "@labelled_share": 0.0},
    "procedge's schedule, labelled twice": {"@schedule": True, "@labelled_share": 1 / 6},  # 10,000 pool: 2 passes (share 1/6)
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


def _link_tree(cifar: Path, out: Path, picks: dict[str, tuple[int, int]], seed: int = 0) -> Path:
    """`out/<split>/<class>` as links into CIFAR-10's train folder: split takes files [start, stop) of each class's seeded order."""
    if out.is_dir():
        return out
    orders = {}
    for cls_dir in sorted(p for p in (cifar / "train").iterdir() if p.is_dir()):
        orders[cls_dir.name] = sorted(cls_dir.iterdir())
        random.Random(f"{seed}-{cls_dir.name}").shuffle(orders[cls_dir.name])
        for split, (start, stop) in picks.items():
            if stop > len(orders[cls_dir.name]):
                sys.exit(f"error: {split} needs images {start}-{stop} of each class; {cls_dir.name} has "
                         f"{len(orders[cls_dir.name])}: ask for fewer")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # an interrupted earlier attempt
    for name, files in orders.items():
        for split, (start, stop) in picks.items():
            (tmp / split / name).mkdir(parents=True)
            for f in files[start:stop]:
                (tmp / split / name / f.name).symlink_to(f.resolve())
    tmp.rename(out)
    return out


def make_subset(cifar: Path, out: Path, train_per_class: int, val_per_class: int, seed: int = 0) -> Path:
    """`out/train/<class>` and `out/val/<class>`, disjoint, seeded: the labelled sets of every size are nested."""
    return _link_tree(cifar, out, {"val": (0, val_per_class), "train": (val_per_class, val_per_class + train_per_class)}, seed)


def make_pool(cifar: Path, out: Path, per_class: int, after: int, seed: int = 0) -> Path:
    """`out/pool/<class>/...`: CIFAR-10 training images past the first `after` of each class (so disjoint from every
    validation and labelled set the benchmark draws), used without their labels."""
    return _link_tree(cifar, out, {"pool": (after, after + per_class)}, seed) / "pool"


class Bench:
    """One benchmark's data, runs and test evaluation."""

    def __init__(self, mode: Mode, work: Path, archive: Path):
        self.mode, self.work = mode, work
        self.cifar = extract_cifar(archive, work.parent / "cifar10")
        self.tree = self.labelled_tree(mode.train_per_class)
        self.runs = self.runs_dir("labelled", mode.train_per_class)
        self.classes = sorted(p.name for p in (self.cifar / "test").iterdir() if p.is_dir())
        self._test: ImageFiles | None = None
        reserve = mode.val_per_class + max((mode.train_per_class, *mode.curve))
        per_class = mode.unlabeled // len(self.classes)
        self.pool = make_pool(self.cifar, work / f"pool-{per_class}-after{reserve}", per_class, reserve) if per_class else None

    def labelled_tree(self, per_class: int) -> Path:
        return make_subset(self.cifar, self.work / f"data-{per_class}-{self.mode.val_per_class}", per_class, self.mode.val_per_class)

    def runs_dir(self, setting: str, per_class: int, live: bool = False) -> Path:
        """Where a setting's runs go; `live`: those whose config runs the teacher live (the `--live-teacher` mode)."""
        m = self.mode
        views = "live" if live else f"views{m.teacher_views if setting == 'labelled' else m.pool_views}"
        if setting == "labelled":
            return self.work / f"runs-{per_class}pc-{m.epochs}ep" / f"{views}-crop{m.crop_area:g}"
        recipe = "" if (m.pool_batch_size, m.pool_lr) == (64, 2e-3) else f"-b{m.pool_batch_size}-lr{m.pool_lr:g}"
        return self.work / f"runs-{per_class}pc-pool{m.unlabeled}-{m.pool_epochs}ep{recipe}" / f"{views}-crop{m.crop_area:g}"

    def test_set(self) -> ImageFiles:
        """The test split's files (read per batch, at each network's size, by `evaluate`)."""
        if self._test is None:
            self._test = load_split(self.cifar / "test", self.classes)
        return self._test

    def config(self, method: str, seed: int, options: dict, teacher_weights: Path | None = None, setting: str = "labelled",
               per_class: int | None = None) -> RunConfig:
        m = self.mode
        options = dict(options)
        stages = options.pop("@stages", None)
        epochs_factor = options.pop("@epochs_factor", 1)
        crop_area = options.pop("@crop_area", m.crop_area)
        cutmix = options.pop("@cutmix", 0.0)
        augment = options.pop("@augment", True)
        live_teacher = options.pop("@live", m.live_teacher and "@views" not in options and reads_unlabelled(method, options))
        student_size = options.pop("@student_size", m.student_size)
        procedge_schedule = options.pop("@schedule", False)
        labelled_share = options.pop("@labelled_share", None if procedge_schedule else 0.0)  # fixed settings: each image once an epoch
        pooled = setting == "unlabelled"
        per_class = per_class or m.train_per_class
        pool_labelled = options.pop("@pool_labelled", False)
        if pool_labelled:  # the pool's images and the labelled ones, all labelled (drawn alike from the training images)
            per_class += m.unlabeled // len(self.classes)
        if "@views" in options:
            views = options.pop("@views")
        elif procedge_schedule:
            views = None
        else:  # a method with no term on the teacher's outputs (`none`) takes procedge's choice: a fresh crop every epoch
            views = (m.pool_views if pooled else m.teacher_views) if reads_unlabelled(method, options) and not live_teacher else None
        epochs = None if procedge_schedule else (m.pool_epochs if pooled else m.epochs) * epochs_factor
        config, _ = resolve_config(m.target, teacher_weights=teacher_weights, data=self.labelled_tree(per_class),
                                   student=m.student, method=method, epochs=epochs, seed=seed,
                                   teacher_size=m.teacher_size, student_size=student_size, method_options=options, augment_data=augment,
                                   teacher_views=views, crop_area=crop_area, cutmix=cutmix, live_teacher=live_teacher,
                                   unlabeled=self.pool if pooled and not pool_labelled else None,
                                   labelled_share=labelled_share)
        update = {} if procedge_schedule else {"train": config.train.model_copy(update={
            "batch_size": m.pool_batch_size if pooled else m.batch_size, "lr": m.pool_lr if pooled else m.lr})}
        if stages is not None:
            from procedge.models.teacher import create_teacher_model

            info = create_teacher_model(config.teacher.name, config.teacher.weights).feature_info
            update["teacher"] = config.teacher.model_copy(update={"stages": [e["module"] for e in info][stages:]})
        return config.model_copy(update=update)

    def run(self, label: str, config: RunConfig, test: bool = True, runs: Path | None = None, cached_only: bool = False) -> dict | None:
        """Distill (or reuse an identical finished run) and return its numbers; test accuracy only when asked.

        With `cached_only`, a run not finished yet is not started: None."""
        out = (runs or self.runs) / label
        run = RunDir(out)
        if not (run.metrics.exists() and same_run(RunConfig.load(run.config), config)):
            if cached_only:
                return None
            console.print(f"[bold]{out.relative_to(self.work)}[/bold]: distilling")
            distill(config, out, overwrite=True)
        metrics = run.read_metrics()
        row = {"label": label, "method": config.method, "seed": config.train.seed, "options": config.method_options,
               "train_images": metrics["train_images"], "unlabeled_images": metrics.get("unlabeled_images", 0),
               "val_accuracy": metrics["student_accuracy"], "teacher_probe_val_accuracy": metrics["teacher_probe_accuracy"],
               "train_seconds": sum(h["seconds"] for h in metrics["history"]), "wall_seconds": metrics["wall_seconds"],
               "history": metrics["history"]}
        if test:
            scores = out / "test.json"
            if not scores.exists():
                trained = load_trained(run)
                write_json(scores, {"student": evaluate(trained.student_net(), self.test_set(), config.student.input_size)})
            row["test_accuracy"] = read_json(scores)["student"]
        console.print(f"  {label}: val {row['val_accuracy']:.2%}" + (f", test {row['test_accuracy']:.2%}" if test else "")
                      + f", {row['train_seconds']:.0f} s training")
        return row

    def teacher_probe_test(self, label: str, runs: Path | None = None) -> float:
        """The teacher's own accuracy on the task: its linear probe (fit on the training subset) on the test split."""
        out = (runs or self.runs) / label
        scores = read_json(out / "test.json")
        if "teacher_probe" not in scores:
            trained = load_trained(RunDir(out))
            size = trained.config.teacher.input_size
            scores["teacher_probe"] = evaluate(trained.teacher_net(), self.test_set(), size)
            write_json(out / "test.json", scores)
        return scores["teacher_probe"]


def same_run(saved: RunConfig, config: RunConfig) -> bool:
    """Equal configs, method options compared with their defaults filled in: runs saved before configs held every
    option stay reusable. (A method default changed since such a run is invisible here: move that run aside.)"""
    def full(c: RunConfig) -> RunConfig:
        return c.model_copy(update={"method_options": full_method_options(c.method, c.method_options)})

    return full(saved) == full(config)


def cpu_model() -> str:
    """The CPU's model name (training seconds are comparable only on the same one)."""
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


@dataclass(frozen=True)
class Cell:
    setting: str  # "labelled" or "unlabelled"
    per_class: int  # labelled images a class
    method: str
    seeds: tuple[int, ...]


def plan(mode: Mode, methods: tuple[str, ...], strongest: dict[str, str]) -> list[Cell]:
    """Every cell of the benchmark, the ones the bars read first. `strongest[setting]` is the best other method so far."""
    one, main, n = mode.seeds[:1], mode.seeds[:mode.main_seeds], mode.train_per_class
    settings = [s for s in SETTINGS if s == "labelled" or mode.unlabeled]
    cells = [Cell("labelled", n, "none", one)]
    if mode.unlabeled:
        cells += [Cell("unlabelled", n, "pseudo-label", one), Cell("unlabelled", n, "proc-kd", one)]
    cells += [Cell("labelled", n, "proc-kd", one)]
    cells += [Cell("labelled", n, "none", main)] + [Cell(s, n, "proc-kd", main) for s in settings]
    cells += [Cell(s, n, m, one) for s in settings for m in methods if m not in ("none", "proc-kd")]
    cells += [Cell(s, n, strongest[s], main) for s in settings if s in strongest]
    cells += [Cell(s, k, m, one) for k in mode.curve if k != n for s, m in (("labelled", "none"), ("unlabelled", "proc-kd")) if mode.unlabeled]
    return [c for c in cells if c.method in methods]


PRIORITY = 4  # the first cells of `plan`: none and proc-kd labelled-only, pseudo-label and proc-kd with the pool


def cell_rows(bench: Bench, cell: Cell, cached_only: bool) -> list[dict]:
    """The runs of a cell (`none` has no pool to use: its `unlabelled` cell is the labelled-only student)."""
    setting = "labelled" if cell.method == "none" else cell.setting
    options = bench.mode.method_options.get(cell.method, {})
    configs = {seed: bench.config(cell.method, seed, options, setting=setting, per_class=cell.per_class) for seed in cell.seeds}
    runs = bench.runs_dir(setting, cell.per_class, live=configs[cell.seeds[0]].data.live_teacher)
    rows = [bench.run(f"{cell.method}-s{seed}", config, runs=runs, cached_only=cached_only) for seed, config in configs.items()]
    return [r for r in rows if r is not None]


def strongest_others(bench: Bench, methods: tuple[str, ...]) -> dict[str, str]:
    """Per setting, the other method (not none, proc-kd) with the best validation accuracy among its finished runs."""
    best = {}
    for setting in SETTINGS:
        scores = {m: r[0]["val_accuracy"] for m in methods if m not in ("none", "proc-kd")
                  for r in [cell_rows(bench, Cell(setting, bench.mode.train_per_class, m, bench.mode.seeds[:1]), cached_only=True)] if r}
        if scores:
            best[setting] = max(scores, key=scores.get)
    return best


def compare_methods(bench: Bench, methods: tuple[str, ...], only: str | None, settings: tuple[str, ...] = SETTINGS) -> dict:
    """Run the plan's missing cells of `settings` (all; with `only`: the priority ones, the seeds of none and proc-kd, or
    none for "tabulate"), then tabulate every finished cell."""
    m = bench.mode
    cells = plan(m, methods, strongest_others(bench, methods))
    seeds = [c for c in cells if c.method in ("none", "proc-kd") and c.per_class == m.train_per_class]
    for cell in [c for c in {"priority": cells[:PRIORITY], "seeds": seeds, "tabulate": []}.get(only, cells) if c.setting in settings]:
        cell_rows(bench, cell, cached_only=False)
        if only is None:
            cells = plan(m, methods, strongest_others(bench, methods))  # the strongest other method may change as runs finish
    merged: dict[tuple[str, int, str], list[dict]] = {}
    for cell in cells:  # a cell of more seeds includes the one-seed cell of the same method
        rows = cell_rows(bench, cell, cached_only=True)
        key = (cell.setting, cell.per_class, cell.method)
        if len(rows) >= len(merged.get(key, [])):
            merged[key] = rows
    probes = {k: bench.teacher_probe_test("none-s0", bench.runs_dir("labelled", k))
              for k in sorted({key[1] for key, rows in merged.items() if rows})
              if (bench.runs_dir("labelled", k) / "none-s0" / "metrics.json").exists()}
    table = []
    for (setting, per_class, method), rows in merged.items():
        if not rows:
            continue
        acc, spread = mean_std([r["test_accuracy"] * 100 for r in rows])
        none_rows = merged.get(("labelled", per_class, "none")) or []
        floor = statistics.fmean(r["test_accuracy"] * 100 for r in none_rows) if none_rows else None
        probe = probes.get(per_class)
        gap = (acc - floor) / (probe * 100 - floor) if floor is not None and probe is not None and probe * 100 > floor else None
        table.append({"setting": setting, "labels_per_class": per_class, "method": method, "test_mean": round(acc, 2),
                      "test_std": round(spread, 2), "seeds": len(rows), "gain_over_none": None if floor is None else round(acc - floor, 2),
                      "gap_closed": None if gap is None else round(gap, 3), "val_mean": round(statistics.fmean(r["val_accuracy"] * 100 for r in rows), 2),
                      "train_seconds": round(statistics.fmean(r["train_seconds"] for r in rows)),
                      "train_images": rows[0]["train_images"], "unlabeled_images": rows[0]["unlabeled_images"] if method != "none" else 0})
    table.sort(key=lambda r: (r["labels_per_class"] != m.train_per_class, r["labels_per_class"], SETTINGS.index(r["setting"]), METHODS.index(r["method"])))
    out = Table(title=f"CIFAR-10 {m.name} mode: {m.student} at {m.student_size} px, teacher Lite0 at {m.teacher_size} px; labelled: "
                      f"{m.epochs} epochs, {m.teacher_views} views; unlabelled: +{m.unlabeled} pool images, {m.pool_epochs} epochs, "
                      f"{m.pool_views} views (none: the labelled-only student)")
    for column in ("setting", "labels/class", "method", "test acc (mean ± std)", "seeds", "gain over none", "gap closed", "val acc", "train s / run"):
        out.add_column(column)
    for r in table:
        out.add_row(r["setting"], str(r["labels_per_class"]), r["method"], f"{r['test_mean']:.2f}% ± {r['test_std']:.2f}", str(r["seeds"]),
                    "" if r["gain_over_none"] is None else f"{r['gain_over_none']:+.2f} pt",
                    "" if r["gap_closed"] is None else f"{r['gap_closed']:.0%}", f"{r['val_mean']:.2f}%", str(r["train_seconds"]))
    for k, probe in probes.items():
        out.add_row("teacher probe", str(k), "(reference)", f"{probe:.2%}", "", "", "", "", "")
    console.print(out)
    missing = [c for c in cells if len(cell_rows(bench, c, cached_only=True)) < len(c.seeds)]
    if missing:
        console.print(f"{len(missing)} planned cells not run yet: " + "; ".join(f"{c.setting}/{c.per_class}/{c.method} x{len(c.seeds)}" for c in missing))
    return {"table": table, "teacher_probe_test": {str(k): round(v * 100, 2) for k, v in probes.items()},
            "not_run": [asdict(c) for c in missing], "runs": [r for rows in merged.values() for r in rows]}


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


def ablation(bench: Bench, variants: list[str], setting: str = "labelled", test: bool = False) -> dict:
    """ProC-KD variants on the validation split in one setting, against `none` on the same split, for each of the mode's
    seeds. `test`: also score the variants on the test split, for one chosen on val (never to choose between them)."""
    n = bench.mode.train_per_class
    floors, rows = {}, {name: [] for name in variants}
    for seed in bench.mode.seeds:
        floors[seed] = bench.run(f"none-s{seed}", bench.config("none", seed, {}), test=test, runs=bench.runs_dir("labelled", n))
        for name in variants:
            options = dict(ABLATION[name])
            method = options.pop("@method", "proc-kd")
            label = f"proc-kd-s{seed}" if not options else f"ablation-{name.replace(' ', '_').replace('=', '')}-s{seed}"
            row = bench.run(label, bench.config(method, seed, options, setting=setting), test=test, runs=bench.runs_dir(setting, n))
            rows[name].append({key: row[key] for key in ("seed", "val_accuracy", "test_accuracy", "train_seconds", "history") if key in row})
    splits = ("val_accuracy", "test_accuracy") if test else ("val_accuracy",)
    floor = {split: statistics.mean(row[split] for row in floors.values()) for split in splits}
    seeds = ",".join(map(str, bench.mode.seeds))
    table = Table(title=f"ProC-KD ablation ({setting}), seeds {seeds}, mean (none: {', '.join(f'{v:.2%}' for v in floor.values())})")
    for column in ("variant", *(s.replace("_accuracy", " acc") for s in splits), "std", "vs default", "vs none"):
        table.add_column(column)
    means = {name: {split: statistics.mean(r[split] for r in runs) for split in splits} for name, runs in rows.items()}
    last = splits[-1]  # the split the comparisons read: test where asked, else val
    for name, mean in means.items():
        spread = statistics.stdev(r[last] for r in rows[name]) if len(rows[name]) > 1 else 0.0
        default = means.get("default", mean)[last]
        table.add_row(name, *(f"{mean[s]:.2%}" for s in splits), f"{spread * 100:.2f}",
                      f"{(mean[last] - default) * 100:+.2f} pt", f"{(mean[last] - floor[last]) * 100:+.2f} pt")
    console.print(table)
    return {"setting": setting, "seeds": list(bench.mode.seeds), "none": {str(seed): {s: row[s] for s in splits} for seed, row in floors.items()},
            "none_mean": floor, "variants": rows, "means": means}


def probe_on_crops(bench: Bench, areas: tuple[float, ...] = (0.35, 0.6, 0.8, 1.0)) -> dict:
    """The teacher probe (fitted on the labelled images' centre crops) on random training-style crops of the validation
    images, by smallest crop area: how right the soft labels a student learns from are, at each crop setting."""
    import torch

    from procedge.data import load_task_data
    from procedge.loader import ViewedImages, normalise
    from procedge.models.teacher import FrozenTeacher, create_teacher_model
    from procedge.probe import fit_linear_probe
    from procedge.teacher_cache import teacher_outputs

    config = bench.config("none", bench.mode.seeds[0], {})
    tc, d = config.teacher, config.data
    data = load_task_data(d.root, d.val_fraction, config.train.seed)
    teacher = FrozenTeacher(create_teacher_model(tc.name, tc.weights), tc.stages).eval()
    labels = data.train.labels
    probe = fit_linear_probe(teacher_outputs(teacher, data.train, tc, "train").pooled.read(torch.arange(len(labels))), labels, 0)
    scores = {}

    def batches(views: ViewedImages):
        for start in range(0, len(data.val), 200):
            index = range(start, min(start + 200, len(data.val)))
            x = normalise(torch.stack([views[(i, 0, 1000 + i)]["teacher"] for i in index]), tc.mean, tc.std)
            yield probe(teacher(x).pooled.float()), data.val.labels[start:index.stop]

    for area in areas:
        with torch.no_grad():
            scores[f"{area:g}"] = top1(batches(ViewedImages(data.val, {"teacher": tc.input_size}, crop_area=area)))
        console.print(f"teacher probe on validation crops of {area:.0%}-100% of the image: {scores[f'{area:g}']:.2%}")
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="full CIFAR-10 (45,000 train / 5,000 val), 30 epochs, 3 seeds: for a GPU")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods to compare")
    parser.add_argument("--only", choices=["priority", "seeds", "tabulate"],
                        help="run only the cells the bars read first (priority), every seed of none and proc-kd (seeds), "
                             "or none (tabulate), then tabulate every finished cell")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated settings whose cells run (all are tabulated)")
    parser.add_argument("--assess", action="store_true", help="also rank the benchmark teachers and correlate with their students")
    parser.add_argument("--ablation", nargs="?", const="all", help="ProC-KD ablation on the validation split: 'all' or ';'-separated variant names")
    parser.add_argument("--ablation-setting", choices=SETTINGS, default="labelled", help="the setting the ablation runs in")
    parser.add_argument("--ablation-test", action="store_true", help="also score the ablation's variants (and none) on the test "
                        "split: only for a variant already chosen on the validation split")
    parser.add_argument("--crop-probe", action="store_true", help="also score the teacher probe on training-style crops of the "
                        "validation images, by smallest crop area (why small images get milder crops)")
    parser.add_argument("--skip-compare", action="store_true", help="only the assessment, the ablation and/or the crop probe")
    parser.add_argument("--epochs", type=int, help="override the mode's epochs")
    parser.add_argument("--pool-epochs", type=int, help="override the mode's epochs of the `unlabelled` setting")
    parser.add_argument("--pool-batch-size", type=int, help="override the mode's batch size of the `unlabelled` setting")
    parser.add_argument("--pool-lr", type=float, help="override the mode's peak learning rate of the `unlabelled` setting")
    parser.add_argument("--pool-views", type=int, help="override the mode's cached teacher views of the `unlabelled` setting (0: "
                        "the teacher's centre-crop outputs, matched to fresh random crops)")
    parser.add_argument("--pool-size", type=int, help="override the `unlabelled` setting's pool (10,000 images; at most 44,000 in "
                        "CPU mode: CIFAR-10's training images past the validation and largest labelled sets)")
    parser.add_argument("--live-teacher", action="store_true", help="run the teacher on every fresh crop (methods that read it) "
                        "instead of caching fixed views: for a GPU")
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
    if args.live_teacher:  # a live teacher keeps paying for longer: 3x the epochs (ProC-KD, val: 70.5% at 60, 61.8% at 20)
        mode = replace(mode, live_teacher=True, pool_epochs=3 * mode.pool_epochs)
    if args.pool_epochs:
        mode = replace(mode, pool_epochs=args.pool_epochs)
    if args.pool_batch_size:
        mode = replace(mode, pool_batch_size=args.pool_batch_size)
    if args.pool_lr:
        mode = replace(mode, pool_lr=args.pool_lr)
    if args.teacher_views is not None:
        mode = replace(mode, teacher_views=args.teacher_views)
    if args.pool_views is not None:
        mode = replace(mode, pool_views=args.pool_views)
    if args.pool_size is not None:
        mode = replace(mode, unlabeled=args.pool_size)
    if args.train_per_class:
        mode = replace(mode, train_per_class=args.train_per_class)
    if args.seeds:
        mode = replace(mode, seeds=tuple(int(s) for s in args.seeds.split(",")))
    work = args.work or REPO / ".cache" / "distill_quality" / mode.name
    os.environ.setdefault("PROCEDGE_CACHE_DIR", str(work.parent / "cache"))
    bench = Bench(mode, work, args.archive)
    started = time.perf_counter()
    results: dict = {"mode": asdict(mode), "host": {"cpus": os.cpu_count(), "cpu": cpu_model()}}
    if not args.skip_compare:
        comparison = compare_methods(bench, tuple(args.methods.split(",")), args.only, tuple(args.settings.split(",")))
        results["table"], results["teacher_probe_test"] = comparison["table"], comparison["teacher_probe_test"]
        results["comparison"] = comparison
    if args.crop_probe:
        results["crop_probe"] = probe_on_crops(bench)
    if args.assess:
        results["assessment"] = assess_vs_reality(bench)
    if args.ablation:
        results["ablation"] = ablation(bench, list(ABLATION) if args.ablation == "all" else args.ablation.split(";"), args.ablation_setting,
                                       args.ablation_test)
    results["wall_seconds"] = time.perf_counter() - started
    out = args.out or REPO / "benchmarks" / "results" / f"distill_quality_{mode.name}.json"
    write_json(out, results)
    console.print(f"{results['wall_seconds'] / 60:.1f} min; results written to {out}")


if __name__ == "__main__":
    main()
