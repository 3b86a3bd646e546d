"""`fitnets`: FitNets-style feature KD; the student's map is projected to the teacher's and matched by MSE.

The teacher map is standardised per channel over the batch first (procedge's choice, as in `pat`): raw
EfficientNet stages have channel scales from 0.5 to 12, which would let a few channels own the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from procedge.methods.base import DistillMethod, FeatureDims, MethodConfig, StudentFeatures, method_registry, resize_to, standardise
from procedge.models.teacher import TeacherOutput


class FitNetsConfig(MethodConfig):
    w_ce: float = Field(1.0, ge=0)
    w_hint: float = Field(1.0, ge=0, description="weight of the feature-matching MSE")


@method_registry.register("fitnets")
class FitNets(DistillMethod):
    """CE + w_hint * ||P(F_s) - std(F_t)||^2, P a 1x1 conv to the teacher's last tapped stage (on the student's grid)."""

    Config = FitNetsConfig
    config: FitNetsConfig

    def __init__(self, config: FitNetsConfig, dims: FeatureDims):
        super().__init__(config, dims)
        self.regressor = nn.Conv2d(dims.student_final, dims.teacher_stages[-1], 1)

    def losses(self, student: StudentFeatures, teacher: TeacherOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        target = standardise(resize_to(teacher.stages[-1].float(), student.final.shape[-2:]))
        logits = self.classify(student.final)
        return {"ce": self.cross_entropy(logits, labels), "hint": F.mse_loss(self.regressor(student.final), target)} \
            | self.teacher_terms(student, logits, teacher)
