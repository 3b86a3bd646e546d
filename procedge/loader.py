"""Images to network inputs, per batch, in DataLoader workers: views, preprocessing, sampling.

Every network gets the image at its own input size, from the same view of it:

- evaluation (and the teacher's outputs without augmentation): the shorter side resized to the input size
  and the centre square crop (`centre_box`);
- training: a random-resized crop (at least `crop_area` of the image, 35% by default; aspect 3/4-4/3) and a
  horizontal flip (`random_view`), drawn from a per-sample seed, so a view is reproducible and the same view can be given to the student
  and to the teacher (consistent teaching) or looked up in the teacher's cache (fixed views);
- CutMix on the unlabelled pool (`cutmix`: the share of its training views mixed): a square box of another pool
  image's view pasted in (`Paste`), drawn from the same seed, so the teacher's cached or live targets are for the
  mixed view the student sees. Labelled images are never mixed: their labels stay exact.

A view is a crop box in pixels of the decoded image and a flip; `box_in_centre_frame` expresses it
relative to the centre crop, where the cached teacher maps of un-augmented images live.
Unreadable files (deleted, truncated, no permission) give a sample with `ok` False; the training loop
drops and counts them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms.v2 import functional as TF

from procedge.config import DataConfig
from procedge.data import Images, ImageSet

CROP_AREA = DataConfig.model_fields["crop_area"].default  # smallest area share of a random-resized crop
RATIO = (3 / 4, 4 / 3)
FIXED_VIEW_SEED = 0  # the fixed views of a split are the same for every run (seed, method) on it, so they share one cache
PASTE_SALT = 7_919  # a view's CutMix draw uses its seed plus this, so it is independent of the view's own crop


@dataclass(frozen=True)
class View:
    top: int
    left: int
    height: int
    width: int
    flip: bool


def centre_box(height: int, width: int) -> View:
    side = min(height, width)
    return View((height - side) // 2, (width - side) // 2, side, side, False)


def random_view(height: int, width: int, seed: int, crop_area: float = CROP_AREA) -> View:
    """A random-resized crop (area share `crop_area`-1) and flip of an image of this size, from `seed` alone
    (torchvision's RandomResizedCrop draw)."""
    g = torch.Generator().manual_seed(seed)
    area = height * width
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    flip = bool(torch.rand(1, generator=g) < 0.5)
    for _ in range(10):
        target = area * float(torch.empty(1).uniform_(crop_area, 1.0, generator=g))
        ratio = math.exp(float(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=g)))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=g))
            left = int(torch.randint(0, width - w + 1, (1,), generator=g))
            return View(top, left, h, w, flip)
    box = centre_box(height, width)
    return View(box.top, box.left, box.height, box.width, flip)


@dataclass(frozen=True)
class Paste:
    """CutMix: the box (y0, x0, y1, x1, fractions of the rendered square) is filled with the same box of `view` of
    `image` (the decoded partner image)."""

    image: torch.Tensor
    view: View
    box: tuple[float, float, float, float]


def draw_paste(seed: int, candidates: torch.Tensor, share: float, read, crop_area: float = CROP_AREA) -> Paste | None:
    """From `seed` alone: with probability `share`, a partner among `candidates` (decoded by `read(i)`; None when it
    cannot be read, then no paste), its view, and a square box whose area is uniform in 0-1 (CutMix's Beta(1, 1)),
    centred uniformly and clipped to the frame."""
    g = torch.Generator().manual_seed(seed + PASTE_SALT)
    if not len(candidates) or float(torch.rand(1, generator=g)) >= share:
        return None
    partner = int(candidates[int(torch.randint(len(candidates), (1,), generator=g))])
    half = math.sqrt(float(torch.rand(1, generator=g))) / 2
    cy, cx = torch.rand(2, generator=g).tolist()
    view_seed = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
    image = read(partner)
    if image is None:
        return None
    box = (max(cy - half, 0.0), max(cx - half, 0.0), min(cy + half, 1.0), min(cx + half, 1.0))
    return Paste(image, random_view(*image.shape[-2:], view_seed, crop_area), box)


def fixed_view_seed(view: int, index: int) -> int:
    """The seed of fixed view `view` of image `index` (views start at 1; 0 is the centre crop)."""
    return (FIXED_VIEW_SEED * 1_000_003 + view) * 2_147_483_629 + index


def render(image: torch.Tensor, view: View, size: int) -> torch.Tensor:
    """uint8 (3, size, size): the view's box resized (bilinear, antialiased), then flipped if the view says so."""
    out = TF.resized_crop(image, view.top, view.left, view.height, view.width, [size, size], antialias=True)
    return out.flip(-1) if view.flip else out


def box_in_centre_frame(view: View, height: int, width: int) -> tuple[float, float, float, float]:
    """The view's box as (x0, y0, x1, y1) relative to the centre square crop (0-1 inside it)."""
    c = centre_box(height, width)
    return ((view.left - c.left) / c.width, (view.top - c.top) / c.height,
            (view.left + view.width - c.left) / c.width, (view.top + view.height - c.top) / c.height)


class ViewedImages(Dataset):
    """Samples of `images` at the student's (and optionally the teacher's) input size.

    An item key is (index, view, seed): view 0 with seed < 0 is the centre crop; view v > 0 is fixed view v
    (its seed from `fixed_view_seed`); view 0 with a seed >= 0 is a fresh random view drawn from that seed.
    With `cutmix` > 0, that share of the unlabelled images' (label -1) training views get a `Paste` from another one.
    """

    def __init__(self, images: Images, sizes: dict[str, int], crop_area: float = CROP_AREA, cutmix: float = 0.0):
        self.images, self.sizes, self.crop_area, self.cutmix = images, sizes, crop_area, cutmix
        self.pool = (images.labels < 0).nonzero().flatten() if cutmix > 0 else torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key) -> dict:
        index, view_id, seed = key if isinstance(key, tuple) else (int(key), 0, -1)
        image = self.images.read(index)
        item = {"index": index, "view": view_id, "label": int(self.images.labels[index]), "ok": image is not None}
        if image is None:  # unreadable now (deleted, truncated, no permission): a placeholder the loop drops and counts
            for name, size in self.sizes.items():
                item[name] = torch.zeros(3, size, size, dtype=torch.uint8)
            item["box"], item["flip"] = torch.tensor([0.0, 0.0, 1.0, 1.0]), False
            return item
        h, w = image.shape[-2:]
        if view_id > 0:
            seed = fixed_view_seed(view_id, index)
        view = random_view(h, w, seed, self.crop_area) if seed >= 0 else centre_box(h, w)
        mixed = seed >= 0 and len(self.pool) and self.images.labels[index] < 0
        paste = draw_paste(seed, self.pool, self.cutmix, self.images.read, self.crop_area) if mixed else None
        for name, size in self.sizes.items():
            item[name] = render(image, view, size)
            if paste is not None:
                y0, x0, y1, x1 = (round(f * size) for f in paste.box)
                item[name][:, y0:y1, x0:x1] = render(paste.image, paste.view, size)[:, y0:y1, x0:x1]
        item["box"], item["flip"] = torch.tensor(box_in_centre_frame(view, h, w)), view.flip
        return item


class EpochBatches(Sampler):
    """This rank's share of each global batch of one epoch, as (index, view, seed) keys.

    The permutation, the fixed view of each sample (1..views) or the seed of its fresh random view, are drawn
    from `generator` over the whole global batch, so every rank draws the same numbers and the generators stay
    in step (the checkpoint saves the generator: a resumed run replays the same epochs).
    """

    def __init__(self, count: int, batch_size: int, generator: torch.Generator, world: int = 1, rank: int = 0,
                 views: int = 0, random_views: bool = False, repeat: torch.Tensor | None = None):
        """`repeat`: samples that enter every epoch once more (on top of each sample's one pass), listed once per extra pass."""
        self.items = torch.arange(count) if repeat is None else torch.cat([torch.arange(count), repeat.long()])
        self.count, self.batch_size, self.generator = len(self.items), batch_size, generator
        self.world, self.rank, self.views, self.random_views = world, rank, views, random_views
        self.batches: list[list[tuple[int, int, int]]] | None = None

    def draw(self) -> None:
        """Draw the epoch's batches now (before the DataLoader starts its workers)."""
        order = self.items[torch.randperm(self.count, generator=self.generator)]
        self.batches = []
        for start in range(0, self.count, self.batch_size):
            batch = order[start:start + self.batch_size]
            if self.views:
                view = torch.randint(1, self.views + 1, (len(batch),), generator=self.generator)
                seed = torch.full((len(batch),), -1)
            elif self.random_views:
                view = torch.zeros(len(batch), dtype=torch.long)
                seed = torch.randint(0, 2**31 - 1, (len(batch),), generator=self.generator)
            else:
                view, seed = torch.zeros(len(batch), dtype=torch.long), torch.full((len(batch),), -1)
            if len(batch) < 2 * self.world:  # BatchNorm needs two images per process
                continue
            keys = list(zip(batch.tolist(), view.tolist(), seed.tolist()))
            self.batches.append(keys[self.rank::self.world])

    def __iter__(self):
        if self.batches is None:
            self.draw()
        batches, self.batches = self.batches, None
        return iter(batches)

    def __len__(self) -> int:
        return math.ceil(self.count / self.batch_size)


def default_workers() -> int:
    """Half the cores (the other half trains), at most 8; none on 2 cores or fewer, where a worker process would
    take a core from training's two threads and decoding in the training process costs less."""
    cores = os.cpu_count() or 1
    return 0 if cores <= 2 else min(8, cores // 2)


def make_loader(dataset: Dataset, batch_sampler, workers: int = 0, pin_memory: bool = False) -> DataLoader:
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=workers, pin_memory=pin_memory,
                      prefetch_factor=4 if workers else None)


def split_batches(images: Images, sizes: dict[str, int], batch_size: int = 100, workers: int = 0, pin_memory: bool = False,
                  view: int = 0, crop_area: float = CROP_AREA, cutmix: float = 0.0):
    """Batches of a whole split, in order: its centre crops (`view` 0: evaluation, the held-out arrays, the teacher's
    cache), or fixed view `view` (1..) of every image (the teacher's cache of that view, mixed as `ViewedImages` says)."""
    keys = [[(i, view, -1) for i in range(start, min(start + batch_size, len(images)))] for start in range(0, len(images), batch_size)]
    return make_loader(ViewedImages(images, sizes, crop_area, cutmix), batch_sampler=keys, workers=workers, pin_memory=pin_memory)


def arrays_at_sizes(images: Images, sizes: dict[str, int], workers: int = 0) -> dict[str, torch.Tensor]:
    """A (small) split in memory: each image's centre crop at each named size, uint8 (unreadable images are left black)."""
    batches = list(split_batches(images, sizes, 100, workers))
    return {name: torch.cat([b[name] for b in batches]) for name in sizes}


def normalise(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> float, /255, minus mean, over std (on the images' device)."""
    x = images.float().div_(255.0)
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def centre_crops(images: Images, size: int, workers: int = 0) -> ImageSet:
    """A (small) split in memory at one size, with its labels."""
    return ImageSet(arrays_at_sizes(images, {"image": size}, workers)["image"], images.labels.clone())
