"""INT8 calibration sets: drawn by a recipe (calibration/*.yaml) from the training split, stored once per run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import numpy as np
import yaml
from pydantic import Field, ValidationError

from procedge.errors import ProcedgeError
from procedge.io import atomic_path, write_json
from procedge.resources import Traversable, resource
from procedge.run import RunDir
from procedge.schema import StrictModel, first_error



class CalibrationRecipe(StrictModel):
    split: Literal["train"] = "train"
    size: int = Field(300, ge=1)
    stratified: bool = True
    seed: int = 0


def load_recipe(path: Path | Traversable | None = None) -> CalibrationRecipe:
    """A recipe file; by default the one shipped in the package (`calibration/default.yaml` of the source tree)."""
    path = resource("calibration", "default.yaml") if path is None else path
    try:
        return CalibrationRecipe.model_validate(yaml.safe_load(path.read_text()))
    except ValidationError as exc:
        raise ProcedgeError(f"calibration recipe {path}: {first_error(exc)}; see calibration/default.yaml") from exc
    except (OSError, yaml.YAMLError) as exc:
        raise ProcedgeError(f"calibration recipe {path} is unreadable ({type(exc).__name__}); see calibration/default.yaml") from exc


def _choose(labels: np.ndarray, count: int, recipe: CalibrationRecipe) -> np.ndarray:
    """`count` distinct indices in draw order: any prefix of a stratified draw is itself stratified."""
    rng = np.random.default_rng(recipe.seed)
    if not recipe.stratified:
        return rng.choice(len(labels), count, replace=False)
    classes = np.unique(labels)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in classes]
    chosen, turn = [], 0
    while len(chosen) < count:  # round-robin over classes: every class gets its share
        pool = per_class[turn % len(classes)]
        taken = turn // len(classes)
        if taken < len(pool):
            chosen.append(pool[taken])
        turn += 1
    return np.asarray(chosen)


def calibration_set(run: RunDir, size: int | None = None, recipe: CalibrationRecipe | None = None,
                    validation: int = 0) -> dict[str, np.ndarray]:
    """The run's calibration images (uint8, `student` and `teacher` input sizes, `labels`); built once, then reused.

    With `validation`, also that many further training images, disjoint from the calibration ones
    (`val_student`, `val_teacher`, `val_labels`), for accuracy-controlled quantization."""
    from procedge.config import RunConfig

    recipe = recipe or load_recipe()
    if size is not None:
        recipe = recipe.model_copy(update={"size": size})
    config = RunConfig.load(run.config)
    key_fields = [recipe.model_dump(), str(config.data.root), config.data.val_fraction, config.train.seed,
                  config.student.input_size, config.teacher.input_size] + ([validation] if validation else [])
    key = hashlib.sha256(json.dumps(key_fields).encode()).hexdigest()[:16]
    directory = run.path / "calibration"
    path, manifest_path = directory / f"{key}.npz", directory / f"{key}.json"
    if path.exists() and manifest_path.exists():
        try:
            with np.load(path) as data:
                return {k: data[k] for k in data.files}
        except Exception:  # a corrupt calibration set is rebuilt, never trusted
            path.unlink(missing_ok=True)
    return _build(run, config, recipe, validation, path, manifest_path)


def _build(run: RunDir, config, recipe: CalibrationRecipe, validation: int, path: Path, manifest_path: Path) -> dict[str, np.ndarray]:
    import torch

    from procedge.data import load_task_data
    from procedge.loader import arrays_at_sizes

    if config.data.root is not None and not Path(config.data.root).is_dir():
        raise ProcedgeError(f"INT8 needs calibration images from the run's training data, {config.data.root}, which is not there; "
                            f"restore it (or copy {run.path / 'calibration'} from the machine that has it) and retry")
    data = load_task_data(config.data.root, config.data.val_fraction, config.train.seed)
    available = len(data.train) - validation
    if recipe.size > available:
        raise ProcedgeError(f"calibration size {recipe.size} is larger than the {available} training images available"
                            f"{' besides the accuracy-control ones' if validation else ''}; pass --calib-size {available} or less")

    def take(index: np.ndarray, prefix: str = "") -> dict[str, np.ndarray]:
        """The images at `index` (centre crops) at each network's input size, and their labels; keys prefixed."""
        subset = data.train.subset(torch.from_numpy(np.sort(index)))
        arrays = arrays_at_sizes(subset, {"student": config.student.input_size, "teacher": config.teacher.input_size})
        return {f"{prefix}{name}": a.numpy() for name, a in arrays.items()} | {f"{prefix}labels": subset.labels.numpy()}

    drawn = _choose(data.train.labels.numpy(), recipe.size + validation, recipe)
    arrays = take(drawn[:recipe.size])
    if validation:
        arrays.update(take(drawn[recipe.size:], "val_"))
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    write_json(manifest_path, {
        "recipe": recipe.model_dump(),
        "source": data.source,
        "split": "train (the held-out split is never used)",
        "count": int(recipe.size),
        "accuracy_control_images": validation,
        "per_class": np.bincount(arrays["labels"], minlength=len(data.classes)).tolist(),
        "content_sha256": hashlib.sha256(arrays["student"].tobytes()).hexdigest(),
        "preprocessing": {"student_input": config.student.input_size, "teacher_input": config.teacher.input_size,
                          "resize": "shorter side to the input size, centre crop; bilinear, antialiased", "range": "uint8 0-255, divided by 255 at use; normalisation is in the graph"},
    })
    return arrays


def float_batches(images: np.ndarray) -> list[np.ndarray]:
    """Calibration images as the batch-1 float inputs the exported graphs take."""
    return [images[i:i + 1].astype(np.float32) / 255.0 for i in range(len(images))]
