"""The frozen teacher's outputs for every image of a split, computed once and kept on disk by content hash.

Runs that share a teacher and a split (the seeds and methods of a benchmark, a resumed run) read the
features instead of running the teacher again. The key covers the teacher (name, checkpoint file,
input size, normalisation, tapped stages) and the exact uint8 pixels, so a change to any of them
computes anew.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from procedge.config import TeacherConfig
from procedge.data import ImageSet, apply_augmentations, draw_augmentations, to_model_input
from procedge.io import atomic_path
from procedge.models.teacher import FrozenTeacher, TeacherOutput
from procedge.progress import progress_bar


def cache_dir() -> Path:
    return Path(os.environ.get("PROCEDGE_CACHE_DIR", Path.home() / ".cache" / "procedge")) / "teacher"


@dataclass
class TeacherCache:
    """fp16 tapped stages, pooled features and logits for every image of a split, in split order.

    `task_logits` (the teacher probe's logits on the student's task) depend on the run's labels, so they
    are attached per run and never stored.
    """

    stages: list[torch.Tensor]
    pooled: torch.Tensor
    logits: torch.Tensor
    task_logits: torch.Tensor | None = None

    def batch(self, index: torch.Tensor, flipped: torch.Tensor | None = None, device: torch.device | str = "cpu") -> TeacherOutput:
        """The outputs for `index`; stage maps of images that augmentation flipped are flipped with them."""
        stages = [s[index].to(device).float() for s in self.stages]
        if flipped is not None and flipped.any():
            mask = flipped.to(device).view(-1, 1, 1, 1)
            stages = [torch.where(mask, s.flip(-1), s) for s in stages]
        task = None if self.task_logits is None else self.task_logits[index].to(device).float()
        return TeacherOutput(stages, self.pooled[index].to(device).float(), self.logits[index].to(device).float(), task)

    def select(self, index: torch.Tensor | slice) -> "TeacherCache":
        return TeacherCache([s[index] for s in self.stages], self.pooled[index], self.logits[index],
                            None if self.task_logits is None else self.task_logits[index])

    @property
    def image_index(self) -> torch.Tensor:
        """The image each row is of (rows are images, in order)."""
        return torch.arange(len(self.pooled))

    def to_dict(self) -> dict:
        return {"stages": self.stages, "pooled": self.pooled, "logits": self.logits}


def concat_caches(parts: list[TeacherCache]) -> TeacherCache:
    """Rows of several caches, one after the other (the per-run `task_logits` are not carried)."""
    return TeacherCache([torch.cat([p.stages[i] for p in parts]) for i in range(len(parts[0].stages))],
                        torch.cat([p.pooled for p in parts]), torch.cat([p.logits for p in parts]))


def cache_key(config: TeacherConfig, images: ImageSet) -> str:
    digest = hashlib.sha256()
    weights = Path(config.weights) if config.weights else None
    weights_id = f"{weights.resolve()}:{weights.stat().st_size}:{weights.stat().st_mtime_ns}" if weights else "embedded"
    digest.update(repr((config.name, weights_id, config.input_size, config.mean, config.std, config.stages)).encode())
    digest.update(images.images.numpy().tobytes())
    return digest.hexdigest()[:32]


@torch.no_grad()
def compute_teacher_outputs(teacher: FrozenTeacher, images: ImageSet, config: TeacherConfig, label: str,
                            device: torch.device | str = "cpu", batch_size: int = 100) -> TeacherCache:
    parts: list[TeacherOutput] = []
    with progress_bar(f"teacher features ({label})", len(images)) as advance:
        for start in range(0, len(images), batch_size):
            x = to_model_input(images.images[start:start + batch_size], config.input_size, config.mean, config.std)
            out = teacher(x.to(device))
            parts.append(TeacherOutput([s.half().cpu() for s in out.stages], out.pooled.half().cpu(), out.logits.half().cpu()))
            advance(len(x))
    return concat_caches([TeacherCache(p.stages, p.pooled, p.logits) for p in parts])


def teacher_outputs(teacher: FrozenTeacher, images: ImageSet, config: TeacherConfig, label: str,
                    device: torch.device | str = "cpu", write: bool = True) -> TeacherCache:
    """Read the split's teacher outputs from the cache, or compute them (and store them when `write`)."""
    path = cache_dir() / f"{cache_key(config, images)}.pt"
    if path.exists():
        try:
            return TeacherCache(**torch.load(path, map_location="cpu", weights_only=True))
        except Exception:  # a damaged cache entry is recomputed, never trusted
            pass
    cache = compute_teacher_outputs(teacher, images, config, label, device)
    if write:
        with atomic_path(path) as tmp:
            torch.save(cache.to_dict(), tmp)
    return cache


VIEW_SEED = 0  # views are drawn once per split, so every run (seed, method) on it shares one cache


@dataclass
class TeacherViews:
    """Teacher outputs for `views` fixed augmented views of every image (consistent teaching, FKD-style).

    The student trains on exactly the views the teacher saw: `params[v, i]` is view v of image i, and its
    outputs sit at row `v * N + i` of `cache`.
    """

    params: torch.Tensor  # (V, N, 3) rows of data.draw_augmentations
    cache: TeacherCache

    @property
    def count(self) -> int:
        return self.params.shape[0]

    def images(self, images: torch.Tensor, index: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        return apply_augmentations(images[index], self.params[view, index])

    def batch(self, index: torch.Tensor, view: torch.Tensor, device: torch.device | str = "cpu") -> TeacherOutput:
        return self.cache.batch(view * self.params.shape[1] + index, None, device)

    @property
    def image_index(self) -> torch.Tensor:
        """The image each cache row is a view of."""
        return torch.arange(len(self.cache.pooled)) % self.params.shape[1]


def teacher_views(teacher: FrozenTeacher, images: ImageSet, config: TeacherConfig, views: int,
                  device: torch.device | str = "cpu", write: bool = True, label: str = "train") -> TeacherViews:
    """The teacher's outputs on `views` seeded augmented views of the split (each view cached on its own)."""
    generator = torch.Generator().manual_seed(VIEW_SEED)
    params = torch.stack([draw_augmentations(len(images), images.images.shape[-2], generator) for _ in range(views)])
    parts = [teacher_outputs(teacher, ImageSet(apply_augmentations(images.images, params[v]), images.labels), config,
                             f"{label}, view {v + 1}/{views}", device, write) for v in range(views)]
    return TeacherViews(params, concat_caches(parts))


def teaching_views(teacher: FrozenTeacher, parts: dict[str, ImageSet], config: TeacherConfig, views: int,
                   device: torch.device | str = "cpu") -> TeacherViews:
    """The teacher's outputs on `views` fixed augmented views of the training images, part after part (labelled,
    then the pool), each part cached on its own; rows are ordered view-major over all parts."""
    each = [teacher_views(teacher, images, config, views, device, label=label) for label, images in parts.items()]
    rows = [e.cache.select(slice(v * e.params.shape[1], (v + 1) * e.params.shape[1])) for v in range(views) for e in each]
    return TeacherViews(torch.cat([e.params for e in each], 1), concat_caches(rows))
