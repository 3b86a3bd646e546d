"""The data path at scale: peak memory of `procedge distill` against the image count, training throughput against a
plain PyTorch loop, and the teacher cache's build rate.

    python benchmarks/train_scale.py                         # 5,000 / 20,000 / 50,000 CIFAR-10 images, teacher at 224 px
    python benchmarks/train_scale.py --sizes 5000,20000 --teacher-size 224

- Peak RSS: one `procedge distill` process per size (1 epoch, the teacher at --teacher-size on images the loader upscales
  from CIFAR's 32 px, a fresh teacher cache, a fixed 1,000-image validation split), read from the kernel's accounting of
  the finished child (ru_maxrss). Bars: 50,000 images under 4 GB, and 50k / 5k under 1.3.
- Throughput: student images/s of the same distill's epoch (cached teacher, pseudo-label terms) against a plain loop
  written here (torchvision ImageFolder, RandomResizedCrop + flip, DataLoader, the same model, batch, size and
  optimizer, cross-entropy only) on the same images. Bar: >= 0.9x.
- Teacher-cache build: images/s of the teacher's forward passes into the disk cache (from the distill's log of its run).

Prints a table and writes benchmarks/results/train_scale.json (`rss_mb`, `throughput_ratio`, `cache_images_per_s`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from distill_quality import DEFAULT_ARCHIVE, extract_cifar, make_subset  # noqa: E402

from procedge.distill import SMALL_IMAGE_CROP_AREA  # noqa: E402

console = Console(width=160)
VAL_PER_CLASS = 100


def peak_rss_run(command: list[str], env: dict) -> tuple[float, float, str]:
    """(peak RSS in MB, wall seconds, stderr) of `command`, run in a child that alone is measured."""
    probe = ("import resource, subprocess, sys, time; start = time.perf_counter(); "
             "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "sys.stderr.write(r.stderr[-20000:]); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - start, r.returncode)")
    result = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True, env=env)
    maxrss_kb, seconds, code = result.stdout.split()
    if int(code) != 0:
        raise SystemExit(f"error: {' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return int(maxrss_kb) / 1024, float(seconds), result.stderr


def distill_at_scale(cifar: Path, work: Path, count: int, args) -> dict:
    per_class = count // 10
    data = make_subset(cifar, work / f"data-{per_class}", per_class, VAL_PER_CLASS)
    out, cache = work / f"run-{count}", work / f"cache-{count}"
    shutil.rmtree(out, ignore_errors=True), shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "PROCEDGE_CACHE_DIR": str(cache), "PROCEDGE_QUIET": "1"}
    command = [str(Path(sys.executable).parent / "procedge"), "distill", "--target", "intel-cpu", "--data", str(data),
               "--student", args.student, "--student-size", str(args.student_size), "--teacher-size", str(args.teacher_size),
               "--epochs", "1", "--teacher-views", "0", "--augment", "--crop-area", str(args.crop_area), "--method", "pseudo-label",
               "--batch-size", str(args.batch_size), "--out", str(out), "--overwrite"] + (["--workers", str(args.workers)] if args.workers is not None else [])
    console.print(f"distill on {count} images (teacher {args.teacher_size} px) ...")
    rss_mb, seconds, _ = peak_rss_run(command, env)
    metrics = json.loads((out / "metrics.json").read_text())
    epoch = metrics["history"][0]
    row = {"images": count, "peak_rss_mb": round(rss_mb), "wall_s": round(seconds, 1), "epoch_s": round(epoch["seconds"], 1),
           "train_images_per_s": round(count / epoch["seconds"], 1), "workers": metrics["data_workers"],
           "cache_bytes": sum(f.stat().st_size for f in cache.rglob("*.bin"))}
    shutil.rmtree(cache, ignore_errors=True)
    return row


def cache_rate(cifar: Path, work: Path, args) -> float:
    """Teacher forward passes into the disk cache, images/s, on 1,000 images at the teacher's size."""
    import torch

    from procedge.config import TeacherConfig
    from procedge.data import load_image_folder
    from procedge.models.teacher import EMBEDDED_TEACHER, FrozenTeacher, create_teacher_model, default_stages
    from procedge.teacher_cache import teacher_outputs

    os.environ["PROCEDGE_CACHE_DIR"] = tempfile.mkdtemp(prefix="train-scale-cache-")
    model = create_teacher_model(EMBEDDED_TEACHER, None)
    teacher = FrozenTeacher(model, default_stages(model))
    images = load_image_folder(make_subset(cifar, work / "data-100", 100, VAL_PER_CLASS), 0.2, 0).train
    config = TeacherConfig(name=EMBEDDED_TEACHER, input_size=args.teacher_size, mean=(0.5,) * 3, std=(0.5,) * 3, stages=default_stages(model))
    from procedge.loader import default_workers

    start = time.perf_counter()
    with torch.inference_mode():
        teacher_outputs(teacher, images, config, "rate", workers=default_workers() if args.workers is None else args.workers)
    rate = len(images) / (time.perf_counter() - start)
    shutil.rmtree(os.environ["PROCEDGE_CACHE_DIR"], ignore_errors=True)
    return rate


def plain_loop_rate(data: Path, args) -> float:
    """Student images/s of a plain PyTorch epoch with the same model, batch, input size and augmentation."""
    import timm
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from torchvision import datasets
    from torchvision.transforms import v2

    from procedge.loader import default_workers

    cfg = timm.create_model(args.student, pretrained=False).pretrained_cfg
    transform = v2.Compose([v2.PILToTensor(), v2.RandomResizedCrop(args.student_size, scale=(args.crop_area, 1.0), antialias=True),
                            v2.RandomHorizontalFlip(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(cfg["mean"], cfg["std"])])
    dataset = datasets.ImageFolder(str(data / "train"), transform=transform)
    workers = default_workers() if args.workers is None else args.workers
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=workers, drop_last=True,
                        prefetch_factor=4 if workers else None)
    model = timm.create_model(args.student, num_classes=10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    model.train()
    start, seen = time.perf_counter(), 0
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000,20000,50000", help="training image counts (CIFAR-10 has 5,000 a class in all)")
    parser.add_argument("--teacher-size", type=int, default=224)
    parser.add_argument("--student", default="resnet18")
    parser.add_argument("--student-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--crop-area", type=float, default=SMALL_IMAGE_CROP_AREA,
                        help="smallest training crop, for procedge and the plain loop (procedge's default for CIFAR's 32 px images)")
    parser.add_argument("--workers", type=int, help="DataLoader workers (default: procedge's)")
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--work", type=Path, default=REPO / ".cache" / "train_scale")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train_scale.json")
    args = parser.parse_args()
    requested = [int(s) for s in args.sizes.split(",")]
    sizes = [min(s, 50_000 - 10 * VAL_PER_CLASS) for s in requested]  # CIFAR-10's training split minus the validation images
    cifar = extract_cifar(args.archive, args.work / "cifar10")
    rows = [distill_at_scale(cifar, args.work, n, args) for n in sizes]
    smallest = rows[0]
    plain = plain_loop_rate(make_subset(cifar, args.work / f"data-{smallest['images'] // 10}", smallest["images"] // 10, VAL_PER_CLASS), args)
    cache = cache_rate(cifar, args.work, args)
    ratio = smallest["train_images_per_s"] / plain
    rss = {str(n): r["peak_rss_mb"] for n, r in zip(requested, rows)}  # keyed by the size asked for (50000: all 49,000 there are)
    table = Table(title=f"procedge distill at scale: {args.student} @ {args.student_size} px, teacher Lite0 @ {args.teacher_size} px, "
                        f"1 epoch, batch {args.batch_size}")
    for column in ("images", "peak RSS MB", "wall s", "epoch s", "train img/s", "workers", "teacher cache MB"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(str(r["images"]), str(r["peak_rss_mb"]), str(r["wall_s"]), str(r["epoch_s"]), str(r["train_images_per_s"]),
                      str(r["workers"]), f"{r['cache_bytes'] / 1e6:.0f}")
    console.print(table)
    console.print(f"plain PyTorch loop on {smallest['images']} images: {plain:.1f} img/s; procedge {smallest['train_images_per_s']} img/s "
                  f"-> ratio {ratio:.2f} (bar >= 0.9)")
    console.print(f"teacher cache build: {cache:.1f} img/s at {args.teacher_size} px")
    largest = rows[-1]
    bars = {"rss_under_4gb_at_50k": largest["peak_rss_mb"] < 4096 if largest["images"] >= 49_000 else None,
            "rss_ratio_largest_over_smallest": round(largest["peak_rss_mb"] / smallest["peak_rss_mb"], 3),
            "throughput_at_least_0.9x": ratio >= 0.9}
    console.print(f"bars: {bars}")
    import torch

    result = {"rss_mb": rss, "throughput_ratio": round(ratio, 3), "cache_images_per_s": round(cache, 1), "rows": rows,
              "plain_loop_images_per_s": round(plain, 1), "bars": bars,
              "setup": {"student": args.student, "student_size": args.student_size, "teacher": "tf_efficientnet_lite0",
                        "teacher_size": args.teacher_size, "batch_size": args.batch_size, "epochs": 1, "method": "pseudo-label",
                        "device": "cpu", "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                        "maxrss": "ru_maxrss of the distill process (RUSAGE_CHILDREN of a wrapper that runs only it)"}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    console.print(f"written to {args.out}")


if __name__ == "__main__":
    main()
