"""`none`: the student with cross-entropy only, the floor every method is measured against."""

from __future__ import annotations

import torch
from pydantic import Field

from procedge.methods.base import DistillMethod, MethodConfig, StudentFeatures, method_registry
from procedge.models.teacher import TeacherOutput


class NoDistillationConfig(MethodConfig):
    w_ce: float = Field(1.0, ge=0, description="cross-entropy on the labelled images")


@method_registry.register("none")
class NoDistillation(DistillMethod):
    """Pool, linear head, cross-entropy; the teacher is never used."""

    Config = NoDistillationConfig

    def losses(self, student: StudentFeatures, teacher: TeacherOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.classify(student.final)
        return {"ce": self.cross_entropy(logits, labels)} | self.teacher_terms(student, logits, teacher)
