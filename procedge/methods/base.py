"""The interface every distillation method implements, and its registry."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from torch import nn

from procedge.errors import ProcedgeError
from procedge.models.teacher import TeacherOutput
from procedge.registry import Registry


class MethodConfig(BaseModel):
    """A method's hyper-parameters; loss weights are fields named `w_<term>`."""

    model_config = ConfigDict(extra="forbid")


class DistillMethod(nn.Module):
    """Trainable parts a method adds beside the student backbone, its named losses and its deploy head.

    `losses` gets the student's last-stage map (B, C_s, H, W), the frozen teacher's output and the
    labels; it returns the unweighted loss terms by name. `deploy_head` maps the student's map to
    logits with static ops only; `plain_head` is the same head without any method-specific
    augmentation (the reference for its latency overhead).
    """

    Config: ClassVar[type[MethodConfig]] = MethodConfig

    def __init__(self, config: MethodConfig, teacher_channels: list[int], student_channels: int, num_classes: int):
        super().__init__()
        self.config = config

    def loss_weights(self) -> dict[str, float]:
        raise NotImplementedError

    def losses(self, student_map: torch.Tensor, teacher: TeacherOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def deploy_head(self) -> nn.Module:
        raise NotImplementedError

    def augmented_head(self) -> nn.Module:
        """The training-time head before folding; methods with nothing to fold deploy it as it is."""
        return self.deploy_head()

    def plain_head(self) -> nn.Module:
        raise NotImplementedError


method_registry: Registry[type[DistillMethod]] = Registry("distillation method")


def create_method(name: str, options: dict, teacher_channels: list[int], student_channels: int, num_classes: int) -> DistillMethod:
    cls = method_registry.get(name)
    return cls(parse_method_config(name, options), teacher_channels, student_channels, num_classes)


def parse_method_config(name: str, options: dict) -> MethodConfig:
    cls = method_registry.get(name)
    try:
        return cls.Config.model_validate(options)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise ProcedgeError(f"method {name!r} option '{field}': {err['msg']}; fix it in the config") from exc
