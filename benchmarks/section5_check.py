"""An independent re-run of the quick check in ../shared/docs/methods.md section 5, outside procedge's pipeline.

    python benchmarks/section5_check.py                               # the check as section 5 words it (15 epochs, batch 64)
    python benchmarks/section5_check.py --epochs 20 --batch 256 --lr 4e-3   # the same loss on distill_quality's pool schedule

Section 5 reports that resnet18 at 32 px, trained with cross-entropy on 1,000 labelled CIFAR-10 images plus, on
those and 10,000 unlabelled ones, an MSE to the teacher's standardised pooled embedding (through a learned
projector) and a KL to the teacher probe's soft labels (Lite0 at 160 px, computed once on un-augmented images),
reached 67.8% after 15 epochs. This script is that recipe as written, with nothing of procedge's training
path: the images live in memory as uint8 tensors, the teacher's outputs are computed once per image and per
flip, the student sees reflect-padded random 32 px crops and flips, AdamW with a one-cycle schedule. It uses
distill_quality's labelled, validation and pool images, and reads only the validation split. Prints each
epoch and writes a JSON per run under benchmarks/results/section5_check/.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import timm
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from distill_quality import CPU, DEFAULT_ARCHIVE, Bench  # noqa: E402

from procedge.io import atomic_path, write_json  # noqa: E402
from procedge.methods.knowledge import soft_kl  # noqa: E402
from procedge.models.teacher import EMBEDDED_MEAN_STD, EMBEDDED_TEACHER, create_teacher_model  # noqa: E402
from procedge.probe import fit_linear_probe  # noqa: E402

STUDENT_MEAN = torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)  # timm's resnet18 normalisation
STUDENT_STD = torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)


def load_images(folder: Path, classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((folder / name).iterdir()):
            images.append(torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1))
            labels.append(label)
    return torch.stack(images), torch.tensor(labels)


@torch.no_grad()
def teacher_outputs(teacher: nn.Module, images: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled embedding and ImageNet logits of every image, as is and flipped: (2, N, F) and (2, N, 1000)."""
    mean, std = EMBEDDED_MEAN_STD
    pooled, logits = [], []
    for flip in (False, True):
        parts_p, parts_l = [], []
        for batch in images.split(200):
            x = batch.float().div(255)
            x = x.flip(3) if flip else x
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
            feats = teacher.forward_head(teacher.forward_features(((x - mean) / std).contiguous(memory_format=torch.channels_last)),
                                         pre_logits=True)
            parts_p.append(feats)
            parts_l.append(teacher.get_classifier()(feats))
        pooled.append(torch.cat(parts_p))
        logits.append(torch.cat(parts_l))
    return torch.stack(pooled), torch.stack(logits)


def build_data(cache: Path, teacher_size: int) -> dict:
    """The labelled, validation and pool images with the teacher's outputs, computed once and kept in `cache`."""
    path = cache / f"section5-teacher{teacher_size}.pt"
    if path.exists():
        return torch.load(path)
    bench = Bench(CPU, REPO / ".cache" / "distill_quality" / "cpu", DEFAULT_ARCHIVE)
    teacher = create_teacher_model(EMBEDDED_TEACHER, None).eval().to(memory_format=torch.channels_last)
    folders = {"train": bench.tree / "train", "val": bench.tree / "val", "pool": bench.pool}
    data = {}
    for name, folder in folders.items():
        images, labels = load_images(folder, bench.classes)
        pooled, logits = teacher_outputs(teacher, images, teacher_size)
        data[name] = {"images": images, "labels": labels, "pooled": pooled, "logits": logits.half()}
        print(f"teacher outputs for {name}: {len(images)} images", flush=True)
    with atomic_path(path) as tmp:
        torch.save(data, tmp)
    return data


def pad_crop_flip(images: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    images = torch.where(flips.view(-1, 1, 1, 1), images.flip(3), images)
    padded = F.pad(images.float(), (4, 4, 4, 4), mode="reflect")
    offsets = torch.randint(0, 9, (len(images), 2)).tolist()
    return torch.stack([padded[k, :, i:i + 32, j:j + 32] for k, (i, j) in enumerate(offsets)])


def student_input(images: torch.Tensor, size: int) -> torch.Tensor:
    x = images.float().div(255)
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return ((x - STUDENT_MEAN) / STUDENT_STD).contiguous(memory_format=torch.channels_last)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--w-emb", type=float, default=1.0)
    parser.add_argument("--w-soft", type=float, default=1.0)
    parser.add_argument("--pool", type=int, default=10_000, help="unlabelled images used (0: labelled only)")
    parser.add_argument("--teacher-size", type=int, default=160)
    parser.add_argument("--student-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    data = build_data(REPO / ".cache" / "section5_check", args.teacher_size)
    train, val, pool = data["train"], data["val"], data["pool"]
    probe = fit_linear_probe(train["pooled"][0], train["labels"], args.seed)

    images = torch.cat([train["images"], pool["images"][:args.pool]])
    labels = torch.cat([train["labels"], torch.full((len(images) - len(train["images"]),), -1)])  # -1: unlabelled
    pooled = torch.cat([train["pooled"], pool["pooled"][:, :args.pool]], 1)
    with torch.no_grad():
        soft_labels = probe(pooled.flatten(0, 1)).view(2, len(images), -1)  # in-fold on labelled images, as section 5 words it
        probe_val = (probe(val["pooled"][0]).argmax(1) == val["labels"]).float().mean().item()
    emb_mean, emb_std = pooled[0].mean(0), pooled[0].std(0)
    emb_std = emb_std.clamp_min(0.1 * emb_std.median())

    student = timm.create_model("resnet18", num_classes=10).to(memory_format=torch.channels_last)
    projector = nn.Linear(student.num_features, pooled.shape[-1])
    optimizer = torch.optim.AdamW([*student.parameters(), *projector.parameters()], lr=args.lr, weight_decay=args.weight_decay)
    steps = args.epochs * math.ceil(len(images) / args.batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=steps, pct_start=0.15)
    history = []
    for epoch in range(args.epochs):
        started, sums = time.perf_counter(), torch.zeros(3)
        student.train()
        for index in torch.randperm(len(images)).split(args.batch):
            if len(index) < 2:
                continue
            flips = torch.rand(len(index)) < 0.5
            feats = student.forward_head(student.forward_features(student_input(pad_crop_flip(images[index], flips), args.student_size)),
                                         pre_logits=True)
            logits = student.get_classifier()(feats)
            labelled = labels[index] >= 0
            ce = F.cross_entropy(logits[labelled], labels[index][labelled]) if labelled.any() else logits.sum() * 0
            emb = F.mse_loss(projector(feats), (pooled[flips.long(), index] - emb_mean) / emb_std)
            soft = soft_kl(logits, soft_labels[flips.long(), index], 1.0)
            loss = ce + args.w_emb * emb + args.w_soft * soft
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            sums += torch.tensor([ce.item(), emb.item(), soft.item()]) * len(index)
        student.eval()
        with torch.no_grad():
            correct = sum((student(student_input(x, args.student_size)).argmax(1) == y).sum().item()
                          for x, y in zip(val["images"].split(500), val["labels"].split(500)))
        ce, emb, soft = (sums / len(images)).tolist()
        history.append({"epoch": epoch + 1, "loss_ce": ce, "loss_emb": emb, "loss_soft": soft,
                        "val_accuracy": correct / len(val["images"]), "seconds": time.perf_counter() - started})
        print(json.dumps(history[-1]), flush=True)
    name = f"e{args.epochs}-b{args.batch}-lr{args.lr:g}-pool{args.pool}-s{args.student_size}-seed{args.seed}"
    out = REPO / "benchmarks" / "results" / "section5_check" / f"{name}.json"
    write_json(out, {"options": vars(args), "teacher_probe_val_accuracy": probe_val, "val_accuracy": history[-1]["val_accuracy"],
                     "train_seconds": sum(h["seconds"] for h in history), "history": history})
    print(f"val {history[-1]['val_accuracy']:.2%} (teacher probe {probe_val:.2%}); written to {out}")


if __name__ == "__main__":
    main()
