"""`ot`: selective cross-task distillation by optimal transport between label spaces (after Lu, Ye, Zhan, arXiv 2204.11526).

Only the paper's abstract was readable; the design is procedge's (see ../shared/docs/methods.md, section 2).
The ground cost between teacher class i and student class j is `1 - cos(w_i, mu_j)` (teacher classifier row,
mean teacher feature of the student's class j over the training split), fitted once before training. The loss
is `CE + w_ot W_eps(p_t(x), q_s(x))`, the entropic OT cost from the teacher's prediction to the student's.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from procedge.errors import ProcedgeError
from procedge.methods.base import DistillMethod, FeatureDims, MethodConfig, StudentFeatures, method_registry
from procedge.models.teacher import FrozenTeacher, TeacherOutput
from procedge.transport import class_cost_matrix, class_means, entropic_ot_loss


class OTConfig(MethodConfig):
    w_ce: float = Field(1.0, ge=0)
    w_ot: float = Field(1.0, ge=0, description="lambda: weight of the entropic OT term")
    eps: float = Field(0.05, gt=0, description="entropic regularisation of the Sinkhorn solver")
    iterations: int = Field(50, gt=0, description="Sinkhorn iterations")


@method_registry.register("ot")
class OptimalTransportKD(DistillMethod):
    Config = OTConfig
    config: OTConfig

    def __init__(self, config: OTConfig, dims: FeatureDims):
        super().__init__(config, dims)
        self.register_buffer("cost", torch.zeros(dims.teacher_classes, dims.num_classes))

    def prepare(self, teacher: FrozenTeacher, sample: TeacherOutput, labels: torch.Tensor) -> None:
        pooled = sample.pooled
        classifier = teacher.model.get_classifier()
        if not isinstance(classifier, nn.Linear) or classifier.in_features != pooled.shape[1]:
            raise ProcedgeError("method 'ot' needs a teacher whose classifier is one Linear layer over its pooled features; pick another --method")
        means = class_means(pooled.float().cpu(), labels.cpu(), self.cost.shape[1])
        self.cost.copy_(class_cost_matrix(classifier.weight.detach().float().cpu(), means).to(self.cost.device))

    def losses(self, student: StudentFeatures, teacher: TeacherOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.classify(student.final)
        transport = entropic_ot_loss(teacher.logits.float().softmax(1), logits.softmax(1), self.cost, self.config.eps, self.config.iterations)
        return {"ce": self.cross_entropy(logits, labels), "ot": transport} | self.teacher_terms(student, logits, teacher)
