"""`inverted-projection`: Learning to Project (Auty et al., arXiv 2403.14494), teacher features projected to the student's.

`L = CE + w_proj ||P(F_t) - F_s||^2`, P a bias-free 1x1 conv, F_t brought to the student's grid. With
`teacher_free`, the teacher is not used: the student's batch-centred pooled-feature spectrum beyond its
top `rank` singular values is penalised (procedge's reconstruction of the paper's spectral regulariser).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from procedge.methods.base import DistillMethod, FeatureDims, MethodConfig, StudentFeatures, method_registry, resize_to
from procedge.models.teacher import TeacherOutput


class InvertedProjectionConfig(MethodConfig):
    w_ce: float = Field(1.0, ge=0)
    w_proj: float = Field(1.0, ge=0, description="weight of ||P(F_t) - F_s||^2 (or of the spectral term when teacher_free)")
    teacher_free: bool = Field(False, description="spectral regulariser on the student alone instead of the projection loss")
    rank: int = Field(16, gt=0, description="teacher_free: singular directions kept free of the penalty")


def spectral_tail(features: torch.Tensor, rank: int) -> torch.Tensor:
    """Fraction of a batch's centred feature energy outside its top-`rank` singular directions."""
    centred = features - features.mean(0, keepdim=True)
    energy = torch.linalg.svdvals(centred).square()
    return energy[rank:].sum() / energy.sum().clamp_min(1e-8)


@method_registry.register("inverted-projection")
class InvertedProjection(DistillMethod):
    Config = InvertedProjectionConfig
    config: InvertedProjectionConfig

    def __init__(self, config: InvertedProjectionConfig, dims: FeatureDims):
        super().__init__(config, dims)
        if not config.teacher_free:  # every parameter must get a gradient (DDP)
            self.projector = nn.Conv2d(dims.teacher_stages[-1], dims.student_final, 1, bias=False)

    def losses(self, student: StudentFeatures, teacher: TeacherOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        pooled = student.final.mean((2, 3))
        if self.config.teacher_free:
            proj = spectral_tail(pooled, self.config.rank)
        else:
            teacher_map = resize_to(teacher.stages[-1].float(), student.final.shape[-2:])
            proj = F.mse_loss(self.projector(teacher_map), student.final)
        logits = self.head(pooled)
        return {"ce": self.cross_entropy(logits, labels), "proj": proj} | self.teacher_terms(student, logits, teacher)
