"""timm's pretrained weights for a model name: from the local Hugging Face cache first, else from the hub.

procedge never needs the network: with the weights neither cached nor reachable (an offline site), the
caller gets one line saying which option to pass instead (a checkpoint file).
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch

from procedge.errors import ProcedgeError
from procedge.models.teacher import read_state_dict

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm publishes on the hub, newest form first
HUB_TIMEOUT_S = 10


def pretrained_file(name: str) -> Path | None:
    """The cached or downloaded weight file of timm's default pretrained tag for `name`, or None where it has none on the hub."""
    from huggingface_hub import hf_hub_download

    hub_id = timm.create_model(name, pretrained=False).pretrained_cfg.get("hf_hub_id")
    if not hub_id:
        return None
    for local_only in (True, False):  # the cache first: no network call at all when it holds the file
        for filename in WEIGHT_FILES:
            try:
                return Path(hf_hub_download(hub_id, filename, local_files_only=local_only, etag_timeout=HUB_TIMEOUT_S))
            except Exception:  # not cached / offline / unreachable / no such file: try the next source
                continue
    return None


def pretrained_state(name: str, option: str) -> dict[str, torch.Tensor]:
    """timm's pretrained state dict for `name`; one line naming `option` (the checkpoint flag) where it cannot be had."""
    path = pretrained_file(name)
    if path is None:
        raise ProcedgeError(f"timm's pretrained weights for {name!r} are not in the local Hugging Face cache and cannot be "
                            f"downloaded here; pass {option} FILE (.safetensors or .pth)")
    return read_state_dict(path)
