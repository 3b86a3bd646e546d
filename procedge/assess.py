"""Teacher assessment: rank candidate teachers for a task by their OT relatedness score, without training a student."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from procedge.data import load_task_data, stratified_sample, to_model_input
from procedge.loader import centre_crops
from procedge.errors import ProcedgeError
from procedge.models.teacher import EMBEDDED_TEACHER, EMBEDDED_TEACHER_SIZE, check_timm_name, create_teacher_model, default_mean_std
from procedge.progress import progress_bar
from procedge.transport import class_cost_matrix, class_means, relatedness_score

VAL_FRACTION = 0.2  # the split `procedge distill` uses by default: the sample comes from the same training images
BATCH_SIZE = 50


@dataclass(frozen=True)
class TeacherSpec:
    name: str  # timm model name
    weights: Path | None = None  # checkpoint; None: the embedded ImageNet Lite0 (only for its name)


def parse_teacher_specs(text: str) -> list[TeacherSpec]:
    """`NAME[=WEIGHTS],...` -> specs; an empty list, item, name or weights path is a ProcedgeError."""
    items = [item.strip() for item in text.split(",")]
    if not text.strip() or not any(items):
        raise ProcedgeError("--teachers is empty; pass NAME[=WEIGHTS],... e.g. tf_efficientnet_lite0,resnet18=r18.safetensors")
    specs = []
    for item in items:
        name, sep, weights = (part.strip() for part in item.partition("="))
        if not item:
            raise ProcedgeError(f"--teachers {text!r} has an empty entry; separate NAME[=WEIGHTS] entries with single commas")
        if not name:
            raise ProcedgeError(f"--teachers entry {item!r} has no model name before '='; write NAME=WEIGHTS")
        if sep and not weights:
            raise ProcedgeError(f"--teachers entry {item!r} has no checkpoint after '='; write NAME=WEIGHTS, or NAME alone for the embedded Lite0")
        specs.append(TeacherSpec(name, Path(weights) if weights else None))
    return specs


def _check_spec(spec: TeacherSpec) -> None:
    """The cheap checks, before any data is read or model built."""
    check_timm_name(spec.name)
    if spec.weights is None and spec.name != EMBEDDED_TEACHER:
        raise ProcedgeError(f"teacher {spec.name!r} needs a checkpoint (NAME=WEIGHTS; procedge never downloads weights); only {EMBEDDED_TEACHER} is embedded")
    if spec.weights is not None and not spec.weights.is_file():
        raise ProcedgeError(f"checkpoint {spec.weights} does not exist; pass an existing .safetensors/.pth file as NAME=WEIGHTS")


def _input_size(spec: TeacherSpec, input_size: int | None, embedded_data: bool) -> int:
    if input_size is not None:
        return input_size
    if embedded_data:
        return EMBEDDED_TEACHER_SIZE
    cfg = timm.models.get_pretrained_cfg(spec.name)
    return int(cfg.input_size[-1]) if cfg is not None else 224


def _linear_classifier(model: nn.Module, spec: TeacherSpec, features: int) -> nn.Linear:
    head = model.get_classifier()
    if not isinstance(head, nn.Linear) or head.in_features != features:
        kind = type(head).__name__
        raise ProcedgeError(f"teacher {spec.name} ({spec.weights or 'embedded'}) has a {kind} classifier, not a Linear over its "
                            f"{features} pooled features; assess needs a checkpoint whose head is one Linear layer")
    return head


@torch.inference_mode()
def _teacher_outputs(model: nn.Module, spec: TeacherSpec, images: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pooled features, softmax probabilities, classifier weight) over the sample, in batches."""
    mean, std = default_mean_std(spec.name, model)
    pooled, probs, head = [], [], None
    with progress_bar(f"teacher {spec.name}", len(images)) as advance:
        for start in range(0, len(images), BATCH_SIZE):
            x = to_model_input(images[start:start + BATCH_SIZE], size, mean, std)
            feats = model.forward_head(model.forward_features(x), pre_logits=True)
            if feats.ndim != 2:
                raise ProcedgeError(f"teacher {spec.name} gives pre-logits features of shape {tuple(feats.shape)}, not (batch, features); "
                                    "assess needs a classifier over pooled features")
            if head is None:
                head = _linear_classifier(model, spec, feats.shape[1])
            pooled.append(feats.float())
            probs.append(head(feats).float().softmax(1))
            advance(len(x))
    return torch.cat(pooled), torch.cat(probs), head.weight.detach().float()


def assess_teachers(data: Path | None, teachers: list[TeacherSpec], input_size: int | None = None, max_images: int = 1000,
                    seed: int = 0) -> dict:
    """Rank `teachers` for the task at `data` (None: the embedded MNIST) by relatedness score, lowest (most related) first.

    One forward pass per teacher over a seeded stratified sample of the training split; `seconds` is the wall time
    of that teacher's whole assessment (loading it, the forward pass, the score).
    """
    if not teachers:
        raise ProcedgeError("no teacher to assess; pass --teachers NAME[=WEIGHTS],...")
    if max_images < 1:
        raise ProcedgeError(f"--max-images {max_images} must be at least 1")
    for spec in teachers:
        _check_spec(spec)
    sizes = [_input_size(spec, input_size, data is None) for spec in teachers]
    task = load_task_data(data, VAL_FRACTION, seed)
    if max_images < len(task.classes):
        raise ProcedgeError(f"--max-images {max_images} is fewer than the task's {len(task.classes)} classes; pass at least {len(task.classes)}")
    sample = centre_crops(task.train.subset(stratified_sample(task.train.labels, max_images, seed)), max(sizes))
    rows = []
    for spec, size in zip(teachers, sizes):
        start = time.perf_counter()
        model = create_teacher_model(spec.name, spec.weights)
        pooled, probs, weight = _teacher_outputs(model, spec, sample.images, size)
        cost = class_cost_matrix(weight, class_means(pooled, sample.labels, len(task.classes)))
        score = relatedness_score(probs, sample.labels, cost)
        rows.append({"teacher": spec.name, "weights": str(spec.weights) if spec.weights else None, "input_size": size,
                     "teacher_classes": int(weight.shape[0]), "score": score, "seconds": round(time.perf_counter() - start, 3)})
        del model
    rows.sort(key=lambda row: row["score"])
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return {"task": task.source, "classes": len(task.classes), "images": len(sample), "seed": seed, "ranking": rows}


def ranking_table(result: dict):
    """A rich Table of the ranking: rank, teacher, weights, score, seconds."""
    from rich.table import Table

    table = Table(title=f"teachers for {result['task']}", caption=f"{result['images']} images; lower score = more related")
    for column in ("rank", "teacher", "weights", "score", "seconds"):
        table.add_column(column, justify="right" if column in ("rank", "score", "seconds") else "left")
    for row in result["ranking"]:
        table.add_row(str(row["rank"]), row["teacher"], row["weights"] or "embedded", f"{row['score']:.4f}", f"{row['seconds']:.1f}")
    return table
