"""torchrun + DDP plumbing: the process group, this process's rank and device; only rank 0 writes artifacts."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from procedge.errors import ProcedgeError


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def device(choice: str = "auto") -> torch.device:
    """This process's device: `auto` takes its GPU (under torchrun, the one of its local rank) where there is one."""
    if choice == "cpu":
        return torch.device("cpu")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise ProcedgeError(f"--device {choice}: no CUDA GPU is visible to PyTorch here; use --device cpu (or auto)")
    if choice.startswith("cuda:"):
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def device_name(here: torch.device | None = None) -> str:
    """What trains, for the run's metrics: e.g. `cuda:0 (NVIDIA H100 80GB HBM3)` or `cpu (2 threads)`."""
    here = here or device()
    if here.type == "cuda":
        return f"{here} ({torch.cuda.get_device_name(here)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def init() -> None:
    """Join the process group torchrun describes in the environment (NCCL on GPUs, gloo on CPUs)."""
    if world_size() > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            local, gpus = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
            if local >= gpus:
                raise ProcedgeError(f"torchrun started more processes per node than the {gpus} visible GPU(s) (local rank {local}); "
                                    f"use --nproc_per_node={gpus}, or CUDA_VISIBLE_DEVICES= to train on the CPU")
            torch.cuda.set_device(device())
        dist.init_process_group(backend)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
