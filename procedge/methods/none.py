"""`none`: the student with cross-entropy only, the floor every method is measured against."""

from __future__ import annotations

import torch
from torch import nn

from procedge.methods.base import DistillMethod, FeatureDims, MethodConfig, StudentFeatures, method_registry
from procedge.models.teacher import TeacherOutput


@method_registry.register("none")
class NoDistillation(DistillMethod):
    """Pool, linear head, cross-entropy; the teacher is never used."""

    def __init__(self, config: MethodConfig, dims: FeatureDims):
        super().__init__(config, dims)
        self.head = nn.Linear(dims.student_final, dims.num_classes)

    def loss_weights(self) -> dict[str, float]:
        return {"ce": 1.0}

    def losses(self, student: StudentFeatures, teacher: TeacherOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.classify(student.final)
        return {"ce": self.cross_entropy(logits, labels)} | self.teacher_terms(student, logits, teacher)
