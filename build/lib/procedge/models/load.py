"""Rebuild a run's deployable networks from its config and checkpoints."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from procedge.config import RunConfig
from procedge.errors import ProcedgeError
from procedge.methods import DistillMethod, create_method
from procedge.models.deploy import StudentNet, TeacherNet
from procedge.models.student import create_backbone, feature_channels
from procedge.models.teacher import create_teacher_model
from procedge.run import RunDir


def teacher_channels(model: nn.Module, stages: list[str]) -> list[int]:
    info = {entry["module"]: entry["num_chs"] for entry in getattr(model, "feature_info", [])}
    missing = [s for s in stages if s not in info]
    if missing:
        raise ProcedgeError(f"teacher stage {missing[0]!r} is not in the teacher's feature_info; pick stages from model.feature_info")
    return [info[s] for s in stages]


def build_student(config: RunConfig, teacher_chs: list[int], num_classes: int) -> tuple[nn.Module, DistillMethod]:
    backbone = create_backbone(config.student.name)
    channels = feature_channels(backbone, config.student.input_size)
    method = create_method(config.method, config.method_options, teacher_chs, channels, num_classes)
    return backbone, method


@dataclass
class TrainedRun:
    config: RunConfig
    classes: list[str]
    backbone: nn.Module
    method: DistillMethod
    teacher: nn.Module
    probe: nn.Linear

    def student_net(self, variant: str = "student") -> StudentNet:
        """`student`: folded deploy graph; `student_noaug`: same student without the augmentation."""
        head = self.method.deploy_head() if variant == "student" else self.method.plain_head()
        s = self.config.student
        return StudentNet(self.backbone, head, s.mean, s.std).eval()

    def teacher_net(self) -> TeacherNet:
        t = self.config.teacher
        return TeacherNet(self.teacher, self.probe, t.mean, t.std).eval()


def load_trained(run: RunDir) -> TrainedRun:
    run.require_trained()
    config = RunConfig.load(run.config)
    ckpt = torch.load(run.student, map_location="cpu", weights_only=True)
    teacher = create_teacher_model(config.teacher.name, config.teacher.weights)
    backbone, method = build_student(config, teacher_channels(teacher, config.teacher.stages), len(ckpt["classes"]))
    backbone.load_state_dict(ckpt["backbone"])
    method.load_state_dict(ckpt["method"])
    probe_state = torch.load(run.teacher_probe, map_location="cpu", weights_only=True)
    probe = nn.Linear(probe_state["weight"].shape[1], probe_state["weight"].shape[0])
    probe.load_state_dict(probe_state)
    return TrainedRun(config, ckpt["classes"], backbone.eval(), method.eval(), teacher.eval(), probe.eval())
