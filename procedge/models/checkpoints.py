"""Checkpoint files: read a state dict (.safetensors or a .pth/.pt state dict), load it strictly with one-line errors,
and rename the EfficientNet-PyTorch layout of the Lite weight packages into timm's."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from procedge.errors import ProcedgeError


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a `.safetensors` or `.pth`/`.pt` (weights_only) checkpoint into a flat state dict."""
    path = Path(path)
    if not path.is_file():
        raise ProcedgeError(f"checkpoint {path} does not exist; pass an existing .safetensors/.pth file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any reader failure means the file is not a usable checkpoint
        raise ProcedgeError(f"cannot read checkpoint {path} ({type(exc).__name__}); pass a .safetensors file or a .pth state dict") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ProcedgeError(f"checkpoint {path} is not a state dict (a mapping of tensor names to tensors); save model.state_dict()")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str, hint: str = "check the --teacher name") -> None:
    """Load a state dict strictly; on mismatch name the first offending tensor."""
    own = model.state_dict()
    for name, tensor in state.items():
        if name not in own:
            raise ProcedgeError(f"checkpoint {source} does not fit the model: unexpected tensor {name!r}; {hint}")
        if own[name].shape != tensor.shape:
            raise ProcedgeError(
                f"checkpoint {source} does not fit the model: tensor {name!r} has shape {tuple(tensor.shape)}, "
                f"the model expects {tuple(own[name].shape)}; {hint}"
            )
    missing = [n for n in own if n not in state]
    if missing:
        raise ProcedgeError(f"checkpoint {source} does not fit the model: tensor {missing[0]!r} is missing; {hint}")
    model.load_state_dict(state)


def remap_efficientnet_pytorch(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename EfficientNet-PyTorch keys (`_blocks.7._expand_conv`) to timm's (`blocks.2.1.conv_pw`)."""
    block_names = [f"blocks.{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    inverted_residual = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                         "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
    depthwise_separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    expanded = {int(k.split(".")[1]) for k in state if k.startswith("_blocks.") and "._expand_conv." in k}
    out = {}
    for key, tensor in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            index = int(parts[1])
            layers = inverted_residual if index in expanded else depthwise_separable
            out[".".join([block_names[index], layers[parts[2]], *parts[3:]])] = tensor
        else:
            out[".".join([top[parts[0]], *parts[1:]])] = tensor
    return out
