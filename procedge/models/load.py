"""Rebuild a run's deployable networks from its config and checkpoints."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from procedge.config import RunConfig
from procedge.errors import ProcedgeError
from procedge.methods import DistillMethod, FeatureDims, StudentFeatures, create_method
from procedge.methods.base import method_registry
from procedge.models.deploy import StudentNet, TeacherNet
from procedge.models.features import FeatureTap
from procedge.models.student import create_backbone, feature_channels
from procedge.models.teacher import FrozenTeacher, TeacherOutput, create_teacher_model
from procedge.run import RunDir, damaged


def stage_channels(model: nn.Module, stages: list[str], who: str) -> list[int]:
    info = {entry["module"]: entry["num_chs"] for entry in getattr(model, "feature_info", [])}
    missing = [s for s in stages if s not in info]
    if missing:
        raise ProcedgeError(f"{who} stage {missing[0]!r} is not in the {who}'s feature_info; pick stages from model.feature_info")
    return [info[s] for s in stages]


def student_stage_paths(backbone: nn.Module, count: int) -> list[str]:
    """The module paths of the student's last `count` feature_info stages."""
    return [entry["module"] for entry in backbone.feature_info][-count:] if count else []


class Distiller(nn.Module):
    """Student backbone plus a method's trainable parts; one forward gives the named loss terms (DDP wraps this).

    The frozen teacher is held outside the module tree (never wrapped, saved or trained); it runs here on
    `teacher_images` when the run has no cache (`live_teacher`, or a method that needs it live); otherwise its cached
    `teacher_output` is used.
    """

    def __init__(self, backbone: nn.Module, method: DistillMethod, teacher: FrozenTeacher | None = None, probe: nn.Linear | None = None):
        super().__init__()
        self.backbone, self.method = backbone, method
        self._teacher = [teacher]  # a list keeps it out of parameters(), state_dict() and DDP
        self._probe = [probe]  # the teacher's frozen linear probe: soft labels for a live teacher's outputs
        self._tap = FeatureTap(backbone, student_stage_paths(backbone, method.student_stage_count))

    def forward(self, images: torch.Tensor, labels: torch.Tensor, teacher_output: TeacherOutput | None = None,
                teacher_images: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if teacher_output is None:
            teacher_output = self._live_teacher(teacher_images)
        final = self.backbone.forward_features(images)
        return self.method.losses(StudentFeatures(final, self._tap.take()), teacher_output, labels)

    def _live_teacher(self, images: torch.Tensor) -> TeacherOutput:
        """The teacher on this step's views: through the method where gradients must reach it (PAT's prompts), else
        without a graph; the frozen probe adds its soft labels on the task."""
        if self.method.needs_live_teacher:
            output = self.method.teacher_forward(self._teacher[0], images)
        else:
            with torch.no_grad():
                output = self._teacher[0](images)
        if self._probe[0] is not None:
            with torch.no_grad():
                output.task_logits = self._probe[0](output.pooled.detach().float())
        return output


def build_student(config: RunConfig, teacher: nn.Module, num_classes: int, initial_weights: bool = True) -> tuple[nn.Module, DistillMethod]:
    """The student backbone (from its configured starting weights, unless a trained checkpoint will be loaded over it:
    `initial_weights=False`) and the run's method, sized by the teacher's and the student's feature shapes."""
    s = config.student
    backbone = create_backbone(s.name, s.weights, s.pretrained) if initial_weights else create_backbone(s.name)
    count = method_registry.get(config.method).student_stage_count
    dims = FeatureDims(
        teacher_stages=stage_channels(teacher, config.teacher.stages, "teacher"),
        teacher_pooled=teacher.num_features,
        teacher_classes=teacher.num_classes,
        student_final=feature_channels(backbone, config.student.input_size),
        num_classes=num_classes,
        student_stages=stage_channels(backbone, student_stage_paths(backbone, count), "student"),
    )
    return backbone, create_method(config.method, config.method_options, dims)


@dataclass
class TrainedRun:
    config: RunConfig
    classes: list[str]
    backbone: nn.Module
    method: DistillMethod
    teacher: nn.Module
    probe: nn.Linear

    def student_net(self, variant: str = "student") -> StudentNet:
        """One of the method's student variants ("student": the folded deploy graph)."""
        head = self.method.variant_head(variant)
        s = self.config.student
        return StudentNet(self.backbone, head, s.mean, s.std).eval()

    def teacher_net(self) -> TeacherNet:
        t = self.config.teacher
        return TeacherNet(self.teacher, self.probe, t.mean, t.std).eval()


def load_trained(run: RunDir) -> TrainedRun:
    run.require_trained()
    config = RunConfig.load(run.config)
    ckpt = run.load_torch(run.student)
    teacher = create_teacher_model(config.teacher.name, config.teacher.weights)
    probe_state = run.load_torch(run.teacher_probe)
    try:
        backbone, method = build_student(config, teacher, len(ckpt["classes"]), initial_weights=False)
        backbone.load_state_dict(ckpt["backbone"])
        method.load_state_dict(ckpt["method"])
        probe = nn.Linear(probe_state["weight"].shape[1], probe_state["weight"].shape[0])
        probe.load_state_dict(probe_state)
    except (KeyError, RuntimeError, TypeError, AttributeError) as exc:  # a checkpoint of another run or config
        raise damaged(run.student, exc, f"it does not match {run.config}; re-run `procedge distill --out {run.path} --overwrite`") from exc
    return TrainedRun(config, ckpt["classes"], backbone.eval(), method.eval(), teacher.eval(), probe.eval())
