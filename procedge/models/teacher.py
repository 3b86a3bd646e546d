"""The frozen teacher: any timm model plus a checkpoint; the embedded default is ImageNet EfficientNet-Lite0."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn

from procedge.errors import ProcedgeError
from procedge.models.features import FeatureTap, tokens_to_grid

EMBEDDED_TEACHER = "tf_efficientnet_lite0"
EMBEDDED_MEAN_STD = (0.5, 0.5)  # the TF EfficientNet-Lite weights take inputs scaled to [-1, 1]


def check_timm_name(name: str) -> None:
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('_')[0]}*")[:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise ProcedgeError(f"unknown timm model {name!r}{hint}; see timm.list_models() for valid names")


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


def create_teacher_model(name: str, weights: Path | None) -> nn.Module:
    """A timm model with weights: a user checkpoint; else the installed weight package (the embedded Lite0), the local
    Hugging Face cache or the hub (one line asking for --teacher-weights if none has them)."""
    check_timm_name(name)
    if weights is None:
        from procedge.models.pretrained import pretrained_state

        state, source = pretrained_state(name, "--teacher-weights"), f"pretrained {name}"
    else:
        state, source = read_state_dict(weights), str(weights)
    probe = timm.create_model(name, pretrained=False)
    classifier = probe.pretrained_cfg.get("classifier")
    num_classes = state[f"{classifier}.weight"].shape[0] if isinstance(classifier, str) and f"{classifier}.weight" in state else probe.num_classes
    model = probe if num_classes == probe.num_classes else timm.create_model(name, pretrained=False, num_classes=num_classes)
    load_checked(model, state, source)
    return model.eval()


def default_mean_std(name: str, model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if name == EMBEDDED_TEACHER:
        return (EMBEDDED_MEAN_STD[0],) * 3, (EMBEDDED_MEAN_STD[1],) * 3
    cfg = model.pretrained_cfg
    return tuple(cfg.get("mean", (0.485, 0.456, 0.406))), tuple(cfg.get("std", (0.229, 0.224, 0.225)))


def default_stages(model: nn.Module) -> list[str]:
    """The teacher stages ProC-KD taps by default: the last two of timm's feature_info."""
    info = getattr(model, "feature_info", None)
    if not info:
        raise ProcedgeError("this teacher has no timm feature_info; pass the stage module paths in the config (teacher.stages)")
    return [entry["module"] for entry in info[-2:]]


@dataclass
class TeacherOutput:
    stages: list[torch.Tensor]  # (B, C_i, H_i, W_i) per tapped stage
    pooled: torch.Tensor  # (B, F) pre-logits features
    logits: torch.Tensor  # (B, C_teacher) in the teacher's own label space
    task_logits: torch.Tensor | None = None  # (B, C_task) the teacher's linear probe on the student's task, where known


class FrozenTeacher(nn.Module):
    """A timm teacher frozen in eval mode; one forward gives tapped stages, pooled features and logits."""

    def __init__(self, model: nn.Module, stages: list[str]):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.stage_paths = stages
        self._tap = FeatureTap(self.model, stages)
        self._prefix = getattr(model, "num_prefix_tokens", 0)

    def train(self, mode: bool = True) -> "FrozenTeacher":
        return super().train(False)  # stays in eval mode whatever the caller asks

    def forward(self, x: torch.Tensor) -> TeacherOutput:
        """Gradients flow only where a caller asks (a live-teacher method's prompts); the weights never train."""
        feats = self.model.forward_features(x)
        pooled = self.model.forward_head(feats, pre_logits=True)
        logits = self.model.get_classifier()(pooled)
        stages = [tokens_to_grid(t, self._prefix) for t in self._tap.take()]
        return TeacherOutput(stages, pooled, logits)
