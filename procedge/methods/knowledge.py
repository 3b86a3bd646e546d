"""Label-free targets that carry the teacher's knowledge, available to every method.

Three terms, each off unless its weight is set (every method's config has these fields):

- `emb`: the student's pooled feature, through a learned linear projector, regresses the teacher's pooled
  embedding (standardised per dimension with statistics of the training images: `mse`; or `cosine`);
- `logits`: a learned linear head on the student's pooled feature follows the teacher's own label-space
  distribution (e.g. its 1,000 ImageNet classes), temperature-scaled KL;
- `soft`: the student's task logits follow the teacher's linear probe's soft labels (temperature-scaled
  KL). For a labelled image the probe is one that did not see it (out-of-fold), so the target says more
  than the label; for a pool image it is the probe fitted on every labelled image.

None of them needs labels, so they run on every image the teacher saw, labelled or not.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from procedge.models.teacher import TeacherOutput
from procedge.schema import StrictModel

STD_FLOOR = 0.1  # an embedding dimension's std is at least this share of the median std


class KnowledgeOptions(StrictModel):
    """The shared label-free terms' options; `MethodConfig` inherits them, so every method takes them."""

    w_emb: float = Field(0.0, ge=0, description="label-free: regress the teacher's pooled embedding through a learned projector")
    emb_loss: Literal["mse", "cosine"] = Field("mse", description="emb: MSE to the standardised embedding, or 1 - cosine")
    w_logits: float = Field(0.0, ge=0, description="label-free: KL to the teacher's own label-space distribution (e.g. ImageNet)")
    logits_temperature: float = Field(2.0, gt=0, description="T of the `logits` term")
    w_soft: float = Field(0.0, ge=0, description="label-free: KL to the teacher probe's soft labels (out-of-fold on labelled images)")
    soft_temperature: float = Field(1.0, gt=0, description="T of the `soft` term")


def soft_kl(student_logits: torch.Tensor, target_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 KL(softmax(target/T) || softmax(student/T)), averaged over the batch."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, 1), F.log_softmax(target_logits.float() / t, 1),
                    reduction="batchmean", log_target=True) * t * t


class TeacherKnowledge(nn.Module):
    """The projector and head the shared terms train (training-only: never part of the deploy graph)."""

    def __init__(self, options: KnowledgeOptions, student_width: int, teacher_pooled: int, teacher_classes: int):
        super().__init__()
        self.options = options
        if options.w_emb > 0:  # only modules that get a gradient exist (DDP)
            self.projector = nn.Linear(student_width, teacher_pooled)
            self.register_buffer("emb_mean", torch.zeros(teacher_pooled))
            self.register_buffer("emb_std", torch.ones(teacher_pooled))
        if options.w_logits > 0:
            self.teacher_head = nn.Linear(student_width, teacher_classes)

    def weights(self) -> dict[str, float]:
        o = self.options
        return {name: w for name, w in (("emb", o.w_emb), ("logits", o.w_logits), ("soft", o.w_soft)) if w > 0}

    @torch.no_grad()
    def fit_statistics(self, pooled_chunks) -> None:
        """Per-dimension mean and std of the teacher's embedding over the training rows (the `mse` target's scale),
        from chunks of rows (the cache is read in pieces).

        Each std is floored at a tenth of the median std: Lite0 has embedding dimensions that almost never fire
        (std 0.0008 against a median of 0.49 on CIFAR-10), and one view that fires one of them would otherwise
        put a standardised value of ~60 into the loss and swing it by whole units from epoch to epoch.
        """
        if self.options.w_emb <= 0:
            return
        count, total, squares = 0, 0.0, 0.0
        for chunk in pooled_chunks:
            chunk = chunk.double()
            count, total, squares = count + len(chunk), total + chunk.sum(0), squares + chunk.square().sum(0)
        mean = total / count
        std = ((squares - count * mean.square()) / max(count - 1, 1)).clamp_min(0).sqrt().float()
        self.emb_mean.copy_(mean.float())
        self.emb_std.copy_(std.clamp_min(STD_FLOOR * std.median().clamp_min(1e-8)))

    def losses(self, student_pooled: torch.Tensor, task_logits: torch.Tensor, teacher: TeacherOutput) -> dict[str, torch.Tensor]:
        o, terms = self.options, {}
        if o.w_emb > 0:
            projected = self.projector(student_pooled)
            if o.emb_loss == "mse":
                terms["emb"] = F.mse_loss(projected, (teacher.pooled.float() - self.emb_mean) / self.emb_std)
            else:
                terms["emb"] = (1 - F.cosine_similarity(projected, teacher.pooled.float(), dim=1)).mean()
        if o.w_logits > 0:
            terms["logits"] = soft_kl(self.teacher_head(student_pooled), teacher.logits, o.logits_temperature)
        if o.w_soft > 0:
            if teacher.task_logits is None:
                raise ValueError("the soft term needs the teacher probe's logits (TeacherOutput.task_logits)")
            terms["soft"] = soft_kl(task_logits, teacher.task_logits, o.soft_temperature)
        return terms


def labelled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the batch's labelled images (label -1 marks an unlabelled pool image); 0 when there are none."""
    labelled = labels >= 0
    if not labelled.any():
        return logits.sum() * 0.0  # keeps the graph (DDP) and the term's name in the log
    return F.cross_entropy(logits[labelled], labels[labelled])
