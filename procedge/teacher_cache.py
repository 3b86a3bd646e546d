"""The frozen teacher's outputs for every image (or fixed view) of a split, computed once and kept on disk.

A cache is a directory of raw fp16 row files (each tapped stage, the pooled features, the logits) plus
`meta.json`; rows are read per batch with positioned reads, so memory stays flat however large the split
(a memory map would count every page it ever touched). Runs that share a teacher, a split and its views (the
seeds and methods of a benchmark, a resumed run) read it instead of running the teacher again. The key
covers the teacher (name, checkpoint file, input size, normalisation, tapped stages), the images (files:
path, size, mtime; images in memory: pixels) and the view, so a change to any of them computes anew.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import roi_align

from procedge.config import TeacherConfig
from procedge.data import Images
from procedge.io import atomic_dir, cache_dir, write_json
from procedge.loader import CROP_AREA, normalise, split_batches
from procedge.models.teacher import FrozenTeacher, TeacherOutput
from procedge.progress import progress_bar

FORMAT = 2  # bump when the on-disk layout changes


class RowFile:
    """Fixed-size fp16 rows in a raw file, read by positioned reads (no memory map)."""

    def __init__(self, path: Path, shape: tuple[int, ...]):
        self.path, self.shape = path, tuple(shape)
        self.row_bytes = int(np.prod(self.shape[1:])) * 2
        self._fd: int | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, rows: torch.Tensor | list[int]) -> torch.Tensor:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        rows = rows.tolist() if isinstance(rows, torch.Tensor) else list(rows)
        out = np.empty((len(rows), *self.shape[1:]), dtype=np.float16)
        flat = out.reshape(len(rows), -1).view(np.uint8)
        for k, r in enumerate(rows):
            flat[k] = np.frombuffer(os.pread(self._fd, self.row_bytes, r * self.row_bytes), dtype=np.uint8)
        return torch.from_numpy(out)

    def chunks(self, size: int = 4096):
        """All rows in order, `size` at a time (sequential reads)."""
        for start in range(0, len(self), size):
            yield self.read(range(start, min(start + size, len(self))))


@dataclass
class TeacherCache:
    """fp16 tapped stages, pooled features and logits of every row of a split, on disk, read per batch."""

    stages: list[RowFile]
    pooled: RowFile
    logits: RowFile

    def __len__(self) -> int:
        return len(self.pooled)

    def batch(self, rows: torch.Tensor, device: torch.device | str = "cpu", boxes: torch.Tensor | None = None,
              flips: torch.Tensor | None = None) -> TeacherOutput:
        """The outputs of `rows`; with `boxes` (x0, y0, x1, y1 relative to the cached view), each stage map is cropped to
        its box and resized back (RoIAlign), and with `flips` mirrored: the maps of the view the student sees."""
        stages = [s.read(rows).to(device).float() for s in self.stages]
        if boxes is not None:
            boxes = boxes.to(device).float()
            stages = [_crop_maps(s, boxes) for s in stages]
        if flips is not None and flips.any():
            mask = flips.to(device).view(-1, 1, 1, 1)
            stages = [torch.where(mask, s.flip(-1), s) for s in stages]
        return TeacherOutput(stages, self.pooled.read(rows).to(device).float(), self.logits.read(rows).to(device).float())

    def pooled_chunks(self, size: int = 4096):
        """Every row's pooled features (fp16), in order, `size` rows at a time."""
        return self.pooled.chunks(size)


def _crop_maps(maps: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Each (C, H, W) map cropped to its relative box and resized back to (H, W)."""
    _, _, h, w = maps.shape
    scale = torch.tensor([w, h, w, h], device=maps.device, dtype=maps.dtype)
    rois = torch.cat([torch.arange(len(maps), device=maps.device, dtype=maps.dtype).unsqueeze(1), boxes * scale], 1)
    return roi_align(maps, rois, output_size=(h, w), spatial_scale=1.0, sampling_ratio=1, aligned=True)


def cache_key(config: TeacherConfig, images: Images, view: int = 0, crop_area: float = CROP_AREA, cutmix: float = 0.0) -> str:
    digest = hashlib.sha256()
    weights = Path(config.weights) if config.weights else None
    weights_id = f"{weights.resolve()}:{weights.stat().st_size}:{weights.stat().st_mtime_ns}" if weights else "embedded"
    digest.update(repr((FORMAT, config.name, weights_id, config.input_size, config.mean, config.std, config.stages, view)).encode())
    if view:  # a fixed view's crop depends on the smallest crop area
        digest.update(repr(crop_area).encode())
    if view and cutmix:  # and on the share of mixed views and which images are the pool
        digest.update(repr(("cutmix", cutmix)).encode())
        digest.update((images.labels < 0).numpy().tobytes())
    images.fingerprint(digest)
    return digest.hexdigest()[:32]


def _open(directory: Path) -> TeacherCache:
    meta = json.loads((directory / "meta.json").read_text())
    rows = meta["rows"]
    stages = [RowFile(directory / f"stage{k}.bin", (rows, *shape)) for k, shape in enumerate(meta["stages"])]
    cache = TeacherCache(stages, RowFile(directory / "pooled.bin", (rows, meta["pooled"])), RowFile(directory / "logits.bin", (rows, meta["logits"])))
    for f in [*cache.stages, cache.pooled, cache.logits]:
        if f.path.stat().st_size != f.row_bytes * rows:
            raise ValueError(f"{f.path.name} is truncated")
    return cache


@torch.no_grad()
def _compute(teacher: FrozenTeacher, batches, count: int, config: TeacherConfig, out: Path, label: str,
             device: torch.device | str) -> int:
    """Stream the teacher's outputs for `batches` into row files under `out`; returns how many images could not be read."""
    files: dict[str, object] = {}
    shapes: dict = {}
    unreadable = 0
    use_amp = torch.device(device).type == "cuda"
    try:
        with progress_bar(f"teacher features ({label})", count) as advance:
            for batch in batches:
                x = normalise(batch["teacher"].to(device, non_blocking=True), config.mean, config.std)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                    output = teacher(x.contiguous(memory_format=torch.channels_last))  # 1.8x faster on the CPU too
                unreadable += int((~batch["ok"]).sum())
                parts = {f"stage{k}": s for k, s in enumerate(output.stages)} | {"pooled": output.pooled, "logits": output.logits}
                if not files:
                    shapes = {"stages": [list(s.shape[1:]) for s in output.stages], "pooled": output.pooled.shape[1],
                              "logits": output.logits.shape[1]}
                    files = {name: open(out / f"{name}.bin", "wb") for name in parts}
                for name, tensor in parts.items():
                    files[name].write(tensor.float().half().cpu().numpy().tobytes())
                advance(len(x))
    finally:
        for f in files.values():
            f.close()
    write_json(out / "meta.json", {"rows": count, **shapes, "label": label, "unreadable": unreadable})
    return unreadable


def teacher_outputs(teacher: FrozenTeacher, images: Images, config: TeacherConfig, label: str,
                    device: torch.device | str = "cpu", view: int = 0, workers: int = 0, batch_size: int = 100,
                    crop_area: float = CROP_AREA, cutmix: float = 0.0) -> TeacherCache:
    """Read the split's teacher outputs (of the centre crops, or of fixed view `view`, a crop of at least `crop_area`
    with `cutmix` of the pool's views mixed) from the cache, or compute them."""
    path = cache_dir("teacher") / cache_key(config, images, view, crop_area, cutmix)
    if path.is_dir():
        try:
            return _open(path)
        except (OSError, ValueError, KeyError, json.JSONDecodeError):  # a damaged entry is recomputed, never trusted
            shutil.rmtree(path, ignore_errors=True)
    sizes = {"teacher": config.input_size}
    pin = torch.device(device).type == "cuda"
    batches = split_batches(images, sizes, batch_size, workers, pin, view, crop_area, cutmix)
    with atomic_dir(path) as tmp:
        tmp.mkdir(parents=True, exist_ok=True)
        _compute(teacher, batches, len(images), config, tmp, label, device)
    return _open(path)


class CacheRows:
    """Several caches read as one, rows one part after the other (the fixed views of a split). `image_index[r]` is
    the image row r is of; `task_logits` (the teacher probe's logits on the student's task) depend on the run's
    labels, so they are attached per run, in memory, and never stored."""

    def __init__(self, parts: list[TeacherCache], image_index: torch.Tensor):
        self.parts = parts
        self.offsets = torch.tensor([0] + [len(p) for p in parts]).cumsum(0)
        self.image_index = image_index
        self.task_logits: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def batch(self, rows: torch.Tensor, device: torch.device | str = "cpu", boxes: torch.Tensor | None = None,
              flips: torch.Tensor | None = None) -> TeacherOutput:
        part_of = torch.searchsorted(self.offsets[1:], rows, right=True)
        outputs, order = [], []
        for k in part_of.unique().tolist():
            picked = (part_of == k).nonzero().flatten()
            outputs.append(self.parts[k].batch(rows[picked] - self.offsets[k], device,
                                               None if boxes is None else boxes[picked], None if flips is None else flips[picked]))
            order.append(picked)
        inverse = torch.empty_like(rows)
        inverse[torch.cat(order)] = torch.arange(len(rows))
        inverse = inverse.to(device)
        stages = [torch.cat([o.stages[i] for o in outputs])[inverse] for i in range(len(outputs[0].stages))]
        task = None if self.task_logits is None else self.task_logits[rows].to(device).float()
        return TeacherOutput(stages, torch.cat([o.pooled for o in outputs])[inverse], torch.cat([o.logits for o in outputs])[inverse], task)

    def pooled_chunks(self, size: int = 4096):
        for part in self.parts:
            yield from part.pooled_chunks(size)


def teaching_cache(teacher: FrozenTeacher, images: Images, config: TeacherConfig, views: int,
                   device: torch.device | str = "cpu", workers: int = 0, crop_area: float = CROP_AREA, cutmix: float = 0.0) -> CacheRows:
    """The teacher's outputs the student trains against, over the training set (labelled, then the pool): its centre
    crops (`views` 0), or each of its `views` fixed views. Rows are view-major: row `(v - 1) * N + i` is view v of
    training image i."""
    caches = [teacher_outputs(teacher, images, config, f"training images, view {view}/{views}" if views else "training images",
                              device, view, workers, crop_area=crop_area, cutmix=cutmix) for view in (range(1, views + 1) if views else [0])]
    return CacheRows(caches, torch.arange(len(images)).repeat(len(caches)))


def view_rows(keys_index: torch.Tensor, keys_view: torch.Tensor, images: int) -> torch.Tensor:
    """Cache rows of (image, fixed view) pairs in a `teaching_cache` of `images` images (view 0: the centre crop)."""
    return (keys_view.clamp_min(1) - 1) * images + keys_index
