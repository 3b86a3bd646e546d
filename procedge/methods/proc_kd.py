"""ProC-KD: prototype-guided cross-task knowledge distillation.

Architecture after the authors' partial public code (github Daniel00008/ProC-KD); the training loss
is procedge's reconstruction (see ../shared/docs/methods.md), not taken from the paper.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from procedge.folding import FoldedTAFA, fold_tafa
from procedge.methods.base import DistillMethod, FeatureDims, MethodConfig, PooledClassifier, StudentFeatures, method_registry, resize_to
from procedge.models.teacher import TeacherOutput


class ProcKDConfig(MethodConfig):
    dim: int = Field(128, gt=0, description="shared width D")
    num_prototypes: int = Field(72, gt=0, description="K")
    assign_temperature: float = Field(0.1, gt=0, description="tau of the prototype assignment softmax")
    kd_temperature: float = Field(4.0, gt=0, description="T of the logit KL term")
    w_s: float = Field(1.0, ge=0)
    w_t: float = Field(1.0, ge=0)
    w_a: float = Field(1.0, ge=0)
    w_kl: float = Field(1.0, ge=0)
    w_loc: float = Field(1.0, ge=0)
    w_feat: float = Field(0.0, ge=0, description="procedge's addition (off by default): per-position cosine alignment of "
                                                "phi_s(F_s) to the teacher's prototype-aware features PLM(phi_t(F_t))")


class TeacherAdapter(nn.Module):
    """phi_t: each teacher stage to D (1x1 conv), resized to the finest grid, concatenated, fused to D."""

    def __init__(self, channels: list[int], dim: int):
        super().__init__()
        self.proj = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in channels)
        self.fuse = nn.Sequential(nn.Conv2d(len(channels) * dim, dim, 1), nn.ReLU()) if len(channels) > 1 else nn.Identity()

    def forward(self, stages: list[torch.Tensor]) -> torch.Tensor:
        size = max((s.shape[-2:] for s in stages), key=lambda hw: hw[0] * hw[1])
        maps = []
        for proj, stage in zip(self.proj, stages):
            m = proj(stage.float())
            maps.append(m if m.shape[-2:] == size else F.interpolate(m, size=size, mode="bilinear", align_corners=False))
        return self.fuse(torch.cat(maps, 1))


class PrototypeLearning(nn.Module):
    """PLM: NetVLAD-style aggregation of teacher positions around the prototypes, fed back to each position."""

    def __init__(self, dim: int, num_prototypes: int):
        super().__init__()
        self.assign = nn.Conv2d(dim, num_prototypes, 1)
        self.aggregate = nn.Linear(num_prototypes * dim, dim)
        self.mlp = nn.Sequential(nn.Conv2d(2 * dim, dim, 1), nn.ReLU(), nn.Conv2d(dim, dim, 1))

    def forward(self, h0: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        hn = F.normalize(h0, dim=1)
        assign = self.assign(hn).softmax(1).flatten(2)  # (B, K, N)
        positions = hn.flatten(2)  # (B, D, N)
        residuals = torch.einsum("bkn,bdn->bkd", assign, positions) - assign.sum(2).unsqueeze(-1) * prototypes
        vlad = F.normalize(F.normalize(residuals, dim=2).flatten(1), dim=1)
        g = self.aggregate(vlad)[:, :, None, None].expand_as(h0)
        return self.mlp(torch.cat([h0, g], 1))


class TaskAdaptiveAugmentation(nn.Module):
    """TAFA: Z = ReLU(MLP([E(X); C'^T A]) + X) with A = softmax_K(C' E(X) / tau), C' = E(C)."""

    def __init__(self, dim: int, temperature: float):
        super().__init__()
        self.encoder = nn.Conv2d(dim, dim, 1)
        self.mlp = nn.Sequential(nn.Conv2d(2 * dim, dim, 1, bias=False), nn.BatchNorm2d(dim), nn.ReLU(), nn.Conv2d(dim, dim, 1))
        self.temperature = temperature

    def encode_prototypes(self, prototypes: torch.Tensor) -> torch.Tensor:
        return F.linear(prototypes, self.encoder.weight.flatten(1), self.encoder.bias)  # (K, D)

    def forward(self, x: torch.Tensor, prototypes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        encoded = self.encoder(x)
        protos = self.encode_prototypes(prototypes)
        assign = (torch.einsum("kd,bdhw->bkhw", protos, encoded) / self.temperature).softmax(1)
        recon = torch.einsum("kd,bkhw->bdhw", protos, assign)
        return F.relu(self.mlp(torch.cat([encoded, recon], 1)) + x), assign


@contextlib.contextmanager
def frozen_running_stats(module: nn.Module):
    """Normalise with batch statistics but leave the running statistics untouched (momentum 0)."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum


class ApplyTAFA(nn.Module):
    """The unfolded augmentation with its prototypes, as a map -> map module."""

    def __init__(self, tafa: TaskAdaptiveAugmentation, prototypes: nn.Parameter):
        super().__init__()
        self.tafa, self.prototypes = tafa, prototypes

    def forward(self, x):
        return self.tafa(x, self.prototypes)[0]


@method_registry.register("proc-kd")
class ProcKD(DistillMethod):
    """Prototypes of local parts learned from the teacher augment the student's local features."""

    Config = ProcKDConfig
    config: ProcKDConfig

    def __init__(self, config: ProcKDConfig, dims: FeatureDims):
        super().__init__(config, dims)
        d = config.dim
        self.phi_t = TeacherAdapter(dims.teacher_stages, d)
        self.phi_s = nn.Conv2d(dims.student_final, d, 1)
        self.prototypes = nn.Parameter(torch.randn(config.num_prototypes, d) / d**0.5)
        self.plm = PrototypeLearning(d, config.num_prototypes)
        self.tafa = TaskAdaptiveAugmentation(d, config.assign_temperature)
        self.head = nn.Linear(d, dims.num_classes)

    def loss_weights(self) -> dict[str, float]:
        c = self.config
        weights = {"s": c.w_s, "t": c.w_t, "a": c.w_a, "kl": c.w_kl, "loc": c.w_loc}
        return weights | ({"feat": c.w_feat} if c.w_feat > 0 else {})

    def losses(self, student: StudentFeatures, teacher: TeacherOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        x_s = self.phi_s(student.final)
        h_t = self.plm(self.phi_t(teacher.stages), self.prototypes)
        with frozen_running_stats(self.tafa):  # the deployed BN statistics come from the student path only
            z_t, assign_t = self.tafa(h_t, self.prototypes)
        z_a, assign_s = self.tafa(x_s, self.prototypes)
        logits_t, logits_a = self.classify(z_t), self.classify(z_a)
        temp = self.config.kd_temperature
        target_assign = resize_to(assign_t.detach(), assign_s.shape[-2:])
        terms = {
            "s": F.cross_entropy(self.classify(x_s), labels),
            "t": F.cross_entropy(logits_t, labels),
            "a": F.cross_entropy(logits_a, labels),
            "kl": F.kl_div(F.log_softmax(logits_a / temp, 1), F.softmax(logits_t.detach() / temp, 1), reduction="batchmean") * temp**2,
            "loc": F.kl_div(assign_s.clamp_min(1e-8).log(), target_assign, reduction="none").sum(1).mean(),
        }
        if self.config.w_feat > 0:
            target = resize_to(h_t.detach(), x_s.shape[-2:])
            terms["feat"] = (1 - F.cosine_similarity(x_s, target, dim=1)).mean()
        return terms

    def augmented_head(self) -> nn.Module:
        """Student path with the unfolded augmentation (training-time graph, for checks)."""
        return PooledClassifier(self.phi_s, ApplyTAFA(self.tafa, self.prototypes), head=self.head)

    def deploy_head(self) -> nn.Module:
        folded: FoldedTAFA = fold_tafa(self.tafa, self.prototypes.detach())
        return PooledClassifier(self.phi_s, folded, head=self.head)

    def plain_head(self) -> nn.Module:
        return PooledClassifier(self.phi_s, head=self.head)
