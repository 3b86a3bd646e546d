"""`procedge distill` as a library function: resolve the config, cache the teacher, probe it, train the student."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import timm
import torch
from torch import nn

from procedge import distributed
from procedge.config import DataConfig, RunConfig, StudentConfig, TeacherConfig, TrainConfig
from procedge.data import ImageSet, TaskData, check_data_root, load_task_data, to_model_input
from procedge.errors import ProcedgeError
from procedge.io import atomic_dir, atomic_path, write_json
from procedge.methods import DistillMethod
from procedge.methods.base import parse_method_config
from procedge.models.deploy import StudentNet
from procedge.models.load import build_student
from procedge.models.cost import measure_cost
from procedge.models.student import size_student
from procedge.models.teacher import (
    EMBEDDED_TEACHER,
    FrozenTeacher,
    check_timm_name,
    create_teacher_model,
    default_mean_std,
    default_stages,
)
from procedge.probe import fit_linear_probe
from procedge.progress import info
from procedge.run import RunDir
from procedge.teacher_cache import teacher_outputs, teacher_views
from procedge.train import evaluate, train_student
from procedge.targets import resolve_target

# The embedded MNIST task: 28 px digits, so small inputs keep the demo within minutes on 2 cores.
EMBEDDED_TEACHER_SIZE = 96
EMBEDDED_STUDENT_SIZE = 64
EMBEDDED_EPOCHS = 5
DEFAULT_EPOCHS = 30


def resolve_config(
    target: str,
    teacher: str = EMBEDDED_TEACHER,
    teacher_weights: Path | None = None,
    data: Path | None = None,
    student: str | None = None,
    method: str = "proc-kd",
    epochs: int | None = None,
    seed: int = 0,
    teacher_size: int | None = None,
    student_size: int | None = None,
    method_options: dict | None = None,
    augment_data: bool = False,
    lr: float | None = None,
    batch_size: int | None = None,
    teacher_views: int = 0,
) -> tuple[RunConfig, dict | None]:
    """Fill every default (embedded teacher and data, target-sized student); returns the config and the sizing decision."""
    profile = resolve_target(target)
    method_options = parse_method_config(method, method_options or {}).model_dump(mode="json", exclude_unset=True)  # typed, as validated
    if data is not None:
        check_data_root(Path(data))
    if student is not None:
        check_timm_name(student)
    if teacher_weights is not None and not Path(teacher_weights).is_file():
        raise ProcedgeError(f"teacher checkpoint {teacher_weights} does not exist; pass an existing .safetensors/.pth file")
    teacher_model = create_teacher_model(teacher, teacher_weights)
    mean, std = default_mean_std(teacher, teacher_model)
    embedded_data = data is None
    teacher_cfg = TeacherConfig(
        name=teacher,
        weights=Path(teacher_weights).resolve() if teacher_weights else None,
        input_size=teacher_size or (EMBEDDED_TEACHER_SIZE if embedded_data else teacher_model.pretrained_cfg["input_size"][-1]),
        mean=mean,
        std=std,
        stages=default_stages(teacher_model),
    )
    s_size = student_size or (EMBEDDED_STUDENT_SIZE if embedded_data else profile.input_size)
    sizing = None
    if student is None:
        teacher_ms = measure_cost(teacher_model, teacher_cfg.input_size).predict_ms(profile.hardware, profile.precision)
        decision = size_student(profile, s_size, teacher_ms)
        sizing = decision.to_dict()
        student = decision.chosen
        info(f"student sized for {profile.name}: [bold]{student}[/bold] ({decision.reason})")
        for c in decision.candidates:
            info(f"  {c.name:24s} {c.gflops:6.3f} GFLOPs  predicted {c.predicted_ms:7.2f} ms  {'fits' if c.fits else 'too slow'}")
    s_cfg = timm.create_model(student, pretrained=False).pretrained_cfg
    config = RunConfig(
        target=profile,
        teacher=teacher_cfg,
        student=StudentConfig(
            name=student,
            input_size=s_size,
            mean=tuple(s_cfg.get("mean", (0.485, 0.456, 0.406))),
            std=tuple(s_cfg.get("std", (0.229, 0.224, 0.225))),
        ),
        data=DataConfig(root=Path(data).resolve() if data else None, augment=augment_data or teacher_views > 0, teacher_views=teacher_views),
        train=TrainConfig(epochs=epochs or (EMBEDDED_EPOCHS if embedded_data else DEFAULT_EPOCHS), seed=seed,
                          **({"lr": lr} if lr is not None else {}), **({"batch_size": batch_size} if batch_size is not None else {})),
        method=method,
        method_options=method_options,
    )
    return config, sizing


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
    main, device = distributed.is_main(), distributed.device()
    data = load_task_data(config.data.root, max(config.teacher.input_size, config.student.input_size), config.data.val_fraction, config.train.seed)
    info(f"data: {data.source}: {len(data.train)} train / {len(data.val)} held-out images, {len(data.classes)} classes"
         + (f", {data.skipped_files} unreadable files skipped" if data.skipped_files else ""))
    if main:
        run.path.mkdir(parents=True, exist_ok=True)
        if not resume:
            config.save(run.config)
            if sizing is not None:
                write_json(run.sizing, sizing)
        _save_heldout(run, data, config)

    teacher_model = create_teacher_model(config.teacher.name, config.teacher.weights)
    teacher = FrozenTeacher(teacher_model, config.teacher.stages).to(device)
    backbone, method = build_student(config, teacher_model, len(data.classes))
    if not main:  # rank 0 computes (or reads) the teacher's features and stores them; the others read them
        distributed.barrier()
    cache_train = teacher_outputs(teacher, data.train, config.teacher, "train", device)
    cache_val = teacher_outputs(teacher, data.val, config.teacher, "held-out", device) if main else None
    views = None
    if config.data.teacher_views and not method.needs_live_teacher:  # a live teacher sees the real views anyway
        views = teacher_views(teacher, data.train, config.teacher, config.data.teacher_views, device)
    if main:
        distributed.barrier()

    method.prepare(teacher, cache_train.pooled.float(), data.train.labels)
    teaching = None if method.needs_live_teacher else (views if views is not None else cache_train)
    history = train_student(run, config, backbone, method, teacher, data, teaching, resume)
    if not main:
        return {}

    probe = fit_linear_probe(cache_train.pooled, data.train.labels, config.train.seed)
    probe_acc = (probe(cache_val.pooled.float()).argmax(1) == data.val.labels).float().mean().item()
    info(f"teacher linear probe: {probe_acc:.2%} on the held-out split")
    with atomic_path(run.teacher_probe) as tmp:
        torch.save(probe.state_dict(), tmp)

    backbone.cpu().eval(), method.cpu().eval()
    s = config.student
    deployed = StudentNet(backbone, method.deploy_head(), s.mean, s.std)
    plain = StudentNet(backbone, method.plain_head(), s.mean, s.std)
    metrics = {
        "method": config.method,
        "teacher_probe_accuracy": probe_acc,
        "student_accuracy": evaluate(deployed, data.val, s.input_size),
        "student_noaug_accuracy": evaluate(plain, data.val, s.input_size),
        "fold_max_abs_diff": fold_max_abs_diff(backbone, method, data.val, config),
        "train_images": len(data.train),
        "heldout_images": len(data.val),
        "skipped_files": data.skipped_files,
        "classes": data.classes,
        "history": history,
        "processes": distributed.world_size(),
        "device": distributed.device_name(),
        "wall_seconds": time.perf_counter() - started,
    }
    with atomic_path(run.student) as tmp:
        torch.save({"backbone": backbone.state_dict(), "method": method.state_dict(), "classes": data.classes}, tmp)
    write_json(run.metrics, metrics)
    run.last_checkpoint.unlink(missing_ok=True)
    info(f"student {s.name}: {metrics['student_accuracy']:.2%} held-out (without augmentation {metrics['student_noaug_accuracy']:.2%}); "
         f"teacher probe {probe_acc:.2%}; {metrics['wall_seconds']:.0f} s")
    return metrics


def _save_heldout(run: RunDir, data: TaskData, config: RunConfig) -> None:
    """The held-out split at each network's input size, uint8, so bench needs neither the data nor torch."""
    student = to_model_input(data.val.images, config.student.input_size).mul(255).round().to(torch.uint8)
    teacher = to_model_input(data.val.images, config.teacher.input_size).mul(255).round().to(torch.uint8)
    with atomic_path(run.heldout) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, student=student.numpy(), teacher=teacher.numpy(), labels=data.val.labels.numpy())


@torch.no_grad()
def fold_max_abs_diff(backbone: nn.Module, method: DistillMethod, images: ImageSet, config: RunConfig, count: int = 256) -> float:
    """Folded vs unfolded augmentation on real held-out images (float32 logits)."""
    x = to_model_input(images.images[:count], config.student.input_size, config.student.mean, config.student.std)
    feats = backbone.eval().forward_features(x)
    return (method.augmented_head()(feats) - method.deploy_head()(feats)).abs().max().item()
