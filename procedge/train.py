"""The training loop: AdamW with a one-cycle schedule, DDP under torchrun, a checkpoint after every epoch.

Each epoch draws one seeded permutation shared by every rank; rank r trains on every world-th image of
each global batch, and DDP averages the gradients, so N processes train the same global batch as one.
The teacher stays outside DDP, frozen; only rank 0 evaluates and writes.
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from procedge import distributed
from procedge.config import RunConfig
from procedge.data import ImageSet, augment, to_model_input
from procedge.errors import ProcedgeError
from procedge.io import atomic_path
from procedge.methods import DistillMethod
from procedge.models.deploy import StudentNet
from procedge.models.load import Distiller
from procedge.models.teacher import FrozenTeacher
from procedge.progress import info, progress_bar
from procedge.run import RunDir
from procedge.teacher_cache import TeacherCache, TeacherViews


@torch.no_grad()
def evaluate(net: nn.Module, images: ImageSet, size: int, batch_size: int = 200) -> float:
    """Top-1 accuracy of a [0, 1]-input network on a split."""
    net.eval()
    device = next(net.parameters()).device
    correct = 0
    for start in range(0, len(images), batch_size):
        x = to_model_input(images.images[start:start + batch_size], size).to(device)
        correct += (net(x).argmax(1).cpu() == images.labels[start:start + batch_size]).sum().item()
    return correct / len(images)


def _diverged(what: str, epoch: int, run: RunDir, weight_hint: str) -> ProcedgeError:
    kept = run.last_checkpoint if run.last_checkpoint.exists() else "none (no epoch finished yet)"
    return ProcedgeError(f"{what} in epoch {epoch + 1}; the last good checkpoint is {kept}; lower the learning rate or {weight_hint}")


def train_student(run: RunDir, config: RunConfig, backbone: nn.Module, method: DistillMethod, teacher: FrozenTeacher,
                  train_set: ImageSet, val_set: ImageSet, cache: TeacherCache | TeacherViews | None, resume: bool,
                  probe: nn.Linear | None = None) -> list[dict]:
    """Train in place on `train_set` (label -1: an unlabelled pool image); returns the per-epoch history.

    `probe`, the teacher's linear probe, gives a live teacher's outputs their task logits (cached outputs carry them).
    """
    t, s, tc = config.train, config.student, config.teacher
    device, world, rank = distributed.device(), distributed.world_size(), distributed.rank()
    distiller = Distiller(backbone, method, teacher, None if probe is None else probe.to(device)).to(device)
    model: nn.Module = DistributedDataParallel(distiller) if world > 1 else distiller
    optimizer = torch.optim.AdamW(distiller.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    steps_per_epoch = math.ceil(len(train_set) / t.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=t.lr, total_steps=t.epochs * steps_per_epoch, pct_start=0.15)
    generator = torch.Generator().manual_seed(t.seed)
    history: list[dict] = []
    start_epoch = 0
    if resume:
        state = torch.load(run.last_checkpoint, map_location="cpu", weights_only=True)
        backbone.load_state_dict(state["backbone"])
        method.load_state_dict(state["method"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        history, start_epoch = state["history"], state["epoch"] + 1
        info(f"resuming after epoch {start_epoch} of {t.epochs}")
    weights = method.term_weights()
    eval_net = StudentNet(backbone, method.augmented_head(), s.mean, s.std).to(device)
    for epoch in range(start_epoch, t.epochs):
        distiller.train()
        order = torch.randperm(len(train_set), generator=generator)
        sums = dict.fromkeys(weights, 0.0)
        epoch_start = time.perf_counter()
        with progress_bar(f"epoch {epoch + 1}/{t.epochs}", len(order)) as advance:
            for start in range(0, len(order), t.batch_size):
                batch = order[start:start + t.batch_size]
                if len(batch) < 2 * world:  # BatchNorm needs two images per process
                    continue
                index = batch[rank::world]
                # Random draws cover the global batch, so every rank draws the same numbers and the generators stay in step.
                if isinstance(cache, TeacherViews):  # the student sees exactly the view the teacher's cached output is of
                    view = torch.randint(0, cache.count, (len(batch),), generator=generator)[rank::world]
                    images = cache.images(train_set.images, index, view)
                    teacher_output = cache.batch(index, view, device)
                else:
                    images, flipped = train_set.images[batch], None
                    if config.data.augment:
                        images, flipped = augment(images, generator)
                        flipped = flipped[rank::world]
                    images = images[rank::world]
                    teacher_output = None if cache is None else cache.batch(index, flipped, device)
                labels = train_set.labels[index].to(device)
                student_in = to_model_input(images, s.input_size, s.mean, s.std).to(device)
                if teacher_output is None:  # a live-teacher method
                    terms = model(student_in, labels, teacher_images=to_model_input(images, tc.input_size, tc.mean, tc.std).to(device))
                else:
                    terms = model(student_in, labels, teacher_output=teacher_output)
                for name, value in terms.items():
                    if not torch.isfinite(value):
                        raise _diverged(f"loss term {name!r} became {value.item()}", epoch, run, "that term's weight")
                    if not torch.isfinite(weights[name] * value):  # a finite term whose weight overflows it would corrupt the step
                        raise _diverged(f"loss term {name!r} times its weight {weights[name]:g} became {(weights[name] * value).item()}",
                                        epoch, run, "that term's weight")
                    sums[name] += value.item() * len(index)
                loss = sum(weights[name] * value for name, value in terms.items())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                advance(len(batch))
        if not all(torch.isfinite(v).all() for v in distiller.state_dict().values() if v.is_floating_point()):
            raise _diverged("the weights became non-finite in the epoch's last step", epoch, run, "the loss weights")  # keep last.pt good
        record = {"epoch": epoch + 1, **{f"loss_{k}": v * world / len(order) for k, v in sums.items()},
                  "seconds": time.perf_counter() - epoch_start}
        if distributed.is_main():
            record["heldout_accuracy"] = evaluate(eval_net, val_set, s.input_size)
            history.append(record)
            info("  " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
            with atomic_path(run.last_checkpoint) as tmp:
                torch.save({"backbone": backbone.state_dict(), "method": method.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "generator": generator.get_state(), "history": history,
                            "epoch": epoch}, tmp)
        distributed.barrier()
    return history
