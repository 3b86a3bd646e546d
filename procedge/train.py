"""The training loop: AdamW with a one-cycle schedule, DDP under torchrun, a checkpoint after every epoch.

Images stream from disk through DataLoader workers (`procedge.loader`); the teacher's outputs stream from
its disk cache (`procedge.teacher_cache`) or, for methods that need it live, come from the teacher itself
on the same views. Each epoch draws one seeded permutation shared by every rank; rank r trains on every
world-th image of each global batch, and DDP averages the gradients, so N processes train the same global
batch as one. The teacher stays outside DDP, frozen; only rank 0 evaluates and writes. On a GPU the
student and the teacher run in bf16 autocast, channels-last, from pinned memory.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from procedge import distributed
from procedge.config import RunConfig
from procedge.data import Images
from procedge.errors import ProcedgeError
from procedge.io import atomic_path
from procedge.loader import EpochBatches, ViewedImages, default_workers, make_loader, normalise, split_batches
from procedge.metrics import top1
from procedge.methods import DistillMethod
from procedge.models.deploy import StudentNet
from procedge.models.load import Distiller
from procedge.models.teacher import FrozenTeacher
from procedge.progress import info, progress_bar
from procedge.run import RunDir
from procedge.teacher_cache import CacheRows, view_rows


@dataclass(frozen=True)
class Accelerator:
    """Where and how the networks run: channels-last everywhere (on this 2-core CPU it trains mobilenetv3 12% and
    resnet18 10% faster, and runs the Lite0 teacher 1.8x faster), bf16 autocast on CUDA only."""

    device: torch.device

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else contextlib.nullcontext()

    def prepare(self, module: nn.Module) -> nn.Module:
        return module.to(self.device, memory_format=torch.channels_last)

    def images(self, x: torch.Tensor, mean, std) -> torch.Tensor:
        """uint8 batch -> normalised float input on the device."""
        return normalise(x.to(self.device, non_blocking=True), mean, std).contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def evaluate(net: nn.Module, images: Images, size: int, batch_size: int = 200, workers: int = 0) -> float:
    """Top-1 accuracy of a [0, 1]-input network on a split (centre crops; unreadable images count as wrong)."""
    net.eval()
    device = next(net.parameters()).device
    return top1((net(batch["student"].to(device).float().div_(255).contiguous(memory_format=torch.channels_last)).cpu(),
                 batch["label"].where(batch["ok"], -1)) for batch in split_batches(images, {"student": size}, batch_size, workers))


def _diverged(what: str, epoch: int, run: RunDir, weight_hint: str) -> ProcedgeError:
    kept = run.last_checkpoint if run.last_checkpoint.exists() else "none (no epoch finished yet)"
    return ProcedgeError(f"{what} in epoch {epoch + 1}; the last good checkpoint is {kept}; lower the learning rate or {weight_hint}")


def _check_finite(terms: dict[str, torch.Tensor], weights: dict[str, float], epoch: int, run: RunDir) -> None:
    """One device sync for every term: each finite, and each finite once weighted."""
    values = torch.stack([v.detach().float() for v in terms.values()])
    scaled = values * torch.tensor([weights[n] for n in terms], device=values.device)
    if bool(torch.isfinite(scaled).all()):
        return
    for (name, value), weighted in zip(terms.items(), scaled.tolist()):
        if not math.isfinite(value.item()):
            raise _diverged(f"loss term {name!r} became {value.item()}", epoch, run, "that term's weight")
        if not math.isfinite(weighted):  # a finite term whose weight overflows it would corrupt the step
            raise _diverged(f"loss term {name!r} times its weight {weights[name]:g} became {weighted}", epoch, run, "that term's weight")


class Checkpoint:
    """The per-epoch `last.pt`: what a resumed run restores (weights, optimizer, schedule, the sampler's generator, history)."""

    def __init__(self, run: RunDir, generator: torch.Generator, **parts):
        self.run, self.generator, self.parts = run, generator, parts  # parts: name -> anything with (load_)state_dict

    def save(self, history: list[dict], epoch: int) -> None:
        with atomic_path(self.run.last_checkpoint) as tmp:
            torch.save({**{name: part.state_dict() for name, part in self.parts.items()}, "generator": self.generator.get_state(),
                        "history": history, "epoch": epoch}, tmp)

    def restore(self) -> tuple[list[dict], int]:
        """Load the last epoch's state in place; returns the history so far and the epoch to start from."""
        state = torch.load(self.run.last_checkpoint, map_location="cpu", weights_only=True)
        for name, part in self.parts.items():
            part.load_state_dict(state[name])
        self.generator.set_state(state["generator"])
        return state["history"], state["epoch"] + 1


class TeacherTargets:
    """What the teacher says about a batch, for the exact view the student sees: its cached outputs for a fixed view or
    for the centre crop (cropped and mirrored to the student's random view), or, with no cache, its own input images
    for a live pass."""

    def __init__(self, cache: CacheRows | None, config: RunConfig, train_images: int, acc: Accelerator, device: torch.device):
        self.cache, self.config, self.train_images, self.acc, self.device = cache, config, train_images, acc, device
        self.live = cache is None
        self.views = 0 if self.live else config.data.teacher_views

    def sizes(self) -> dict[str, int]:
        """The networks the loader renders each image for, at their input sizes."""
        return {"student": self.config.student.input_size} | ({"teacher": self.config.teacher.input_size} if self.live else {})

    def __call__(self, batch: dict, ok: torch.Tensor, index: torch.Tensor) -> dict:
        """The teacher keyword of the distiller's forward for the batch's readable images (`ok`)."""
        if self.live:
            tc = self.config.teacher
            return {"teacher_images": self.acc.images(batch["teacher"][ok], tc.mean, tc.std)}
        if self.views:
            return {"teacher_output": self.cache.batch(view_rows(index, batch["view"][ok], self.train_images), self.device)}
        view = (batch["box"][ok], batch["flip"][ok]) if self.config.data.augment else (None, None)
        return {"teacher_output": self.cache.batch(index, self.device, *view)}


def labelled_passes(labelled: int, pool: int, share: float) -> int:
    """How many times each labelled image enters an epoch so that at least `share` of it is labelled (1 at least)."""
    if not share or not labelled or not pool:
        return 1
    return max(1, round(share * pool / ((1 - share) * labelled)))


def labelled_repeats(labels: torch.Tensor, share: float) -> torch.Tensor:
    """The labelled samples (label >= 0) that enter each epoch again, once per extra pass (`labelled_passes`; label -1:
    the unlabelled pool); empty where one pass gives them their share."""
    labelled = (labels >= 0).nonzero().flatten()
    return labelled.repeat(labelled_passes(len(labelled), len(labels) - len(labelled), share) - 1)


def train_student(run: RunDir, config: RunConfig, backbone: nn.Module, method: DistillMethod, teacher: FrozenTeacher,
                  train_set: Images, val_set: Images, cache: CacheRows | None, resume: bool,
                  probe: nn.Linear | None = None) -> list[dict]:
    """Train in place on `train_set` (label -1: an unlabelled pool image); returns the per-epoch history.

    `cache`: the teacher's outputs on the training images (`teaching_cache`: centre crops, or fixed views);
    None for a live teacher. `probe`, the teacher's linear probe, gives a live teacher's outputs their task logits.
    `teacher` arrives prepared for the device (`Accelerator.prepare`) by `distill`, which built its cache with it.
    """
    t, s, d = config.train, config.student, config.data
    device, world, rank = distributed.device(t.device), distributed.world_size(), distributed.rank()
    acc = Accelerator(device)
    workers = default_workers() if t.workers is None else t.workers
    live_probe = None if probe is None else copy.deepcopy(probe).to(device)  # the caller's probe stays where it is (CPU)
    distiller = acc.prepare(Distiller(backbone, method, teacher, live_probe))
    model: nn.Module = DistributedDataParallel(distiller) if world > 1 else distiller
    optimizer = torch.optim.AdamW(distiller.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    repeat = labelled_repeats(train_set.labels, d.labelled_share)
    epoch_images = len(train_set) + len(repeat)
    steps_per_epoch = math.ceil(epoch_images / t.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=t.lr, total_steps=t.epochs * steps_per_epoch, pct_start=0.15)
    generator = torch.Generator().manual_seed(t.seed)
    checkpoint = Checkpoint(run, generator, backbone=backbone, method=method, optimizer=optimizer, scheduler=scheduler)
    history, start_epoch = checkpoint.restore() if resume else ([], 0)
    if resume:
        info(f"resuming after epoch {start_epoch} of {t.epochs}")
    weights = method.term_weights()
    eval_net = StudentNet(backbone, method.augmented_head(), s.mean, s.std).to(device)
    targets = TeacherTargets(cache, config, len(train_set), acc, device)
    sampler = EpochBatches(len(train_set), t.batch_size, generator, world, rank, views=targets.views,
                           random_views=d.augment and not targets.views, repeat=repeat)
    loader = make_loader(ViewedImages(train_set, targets.sizes(), d.crop_area, d.cutmix), batch_sampler=sampler, workers=workers, pin_memory=acc.cuda)
    for epoch in range(start_epoch, t.epochs):
        distiller.train()
        sums = torch.zeros(len(weights), dtype=torch.float64, device=device)
        seen = skipped = 0
        epoch_start = time.perf_counter()
        sampler.draw()  # the epoch's draws come from the generator now, in the main process, whatever the workers do
        with progress_bar(f"epoch {epoch + 1}/{t.epochs}", epoch_images) as advance:
            for batch in loader:
                ok = batch["ok"]
                skipped += int((~ok).sum())
                advance(len(ok) * world)
                if int(ok.sum()) < 2:  # BatchNorm needs two images
                    continue
                index, labels = batch["index"][ok], batch["label"][ok].to(device, non_blocking=True)
                student_in = acc.images(batch["student"][ok], s.mean, s.std)
                with acc.autocast():
                    terms = model(student_in, labels, **targets(batch, ok, index))
                _check_finite(terms, weights, epoch, run)
                loss = sum(weights[name] * value.float() for name, value in terms.items())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                sums += torch.stack([terms[n].detach().double() if n in terms else sums.new_zeros(()) for n in weights]) * len(index)
                seen += len(index)
        if not all(torch.isfinite(v).all() for v in distiller.state_dict().values() if v.is_floating_point()):
            raise _diverged("the weights became non-finite in the epoch's last step", epoch, run, "the loss weights")  # keep last.pt good
        means = (sums / max(seen, 1)).tolist()
        record = {"epoch": epoch + 1, **{f"loss_{k}": v for k, v in zip(weights, means)},
                  "seconds": time.perf_counter() - epoch_start, "skipped_images": skipped}
        if distributed.is_main():
            record["heldout_accuracy"] = evaluate(eval_net, val_set, s.input_size, workers=workers)
            history.append(record)
            info("  " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
            checkpoint.save(history, epoch)
        distributed.barrier()
    return history
