"""ProC-KD: prototype-guided cross-task knowledge distillation.

Architecture after the authors' partial public code (github Daniel00008/ProC-KD): a teacher adapter
(phi_t), a prototype learning module (PLM), the task-adaptive feature augmentation (TAFA) shared by the
teacher and student paths, one classifier head. That code trains the student with cross-entropy only;
the training design below is procedge's (see ../shared/docs/methods.md, section 5), not the paper's.

What procedge changed after the first benchmark, where the teacher path memorised the labelled images
(`L_t` -> 0), its soft targets became the labels and the prototype assignments collapsed:

- The teacher path is anchored to the frozen linear probe, never to the labels: `L_t` is the KL from the
  probe's soft labels (out-of-fold on labelled images, so they are not the labels) to the teacher path's
  logits. It is label-free and runs on the unlabelled pool too.
- The prototypes start from the teacher's local features: phi_t starts as the whitened PCA of the tapped
  stages (standardised per channel, resized to one grid, concatenated), the prototypes as spherical
  k-means centres of those positions, the TAFA encoder as the identity, and the PLM is residual
  (`H = H0 + MLP([H0; g])`, last layer zero-initialised) so that at the start the teacher path's input is
  exactly that PCA space. The prototypes are scaled so the assignment logits start with a spread of ~2.
- Assignments stay balanced: the teacher's assignment over each batch's positions is made balanced by
  Sinkhorn-Knopp (every prototype gets equal mass, SwAV-style); the student's assignment follows these
  codes (`L_loc`) and so does the teacher's own (`L_bal`), which keeps the prototypes from collapsing.
- Per-position alignment of the student's projected map to the teacher's prototype-aware features
  (`L_feat`, cosine) and the shared label-free terms `emb` (the teacher's pooled embedding) and `soft`
  (the probe's soft labels on the deployed, augmented path) are on by default.

Loss: `w_s L_s + w_a L_a` (labelled images only) `+ w_t L_t + w_kl L_kl + w_loc L_loc + w_bal L_bal +
w_feat L_feat + w_emb L_emb + w_logits L_logits + w_soft L_soft` (every image). The deploy graph is the student backbone,
phi_s, the TAFA with its prototypes folded into 1x1 convs (`augmentation.fold_tafa`), pool and the head.

What it is worth, measured (CIFAR-10, 100 labels a class, resnet18 at 32 px, test split, three seeds; README,
Benchmarks): with 10,000 unlabelled images 60.0% against 57.2% for pseudo-labelling and 46.9% for the student
alone; labelled-only 49.2% against 49.1% and 46.9%. `logits` (the teacher's ImageNet distribution) joined the
defaults on the validation split's word (+0.6 labelled-only, +1.0 with the pool); on test it added 0.6 with the
pool and nothing labelled-only (49.4% before). Most of the gain over the student alone comes from the soft
labels; the prototype path adds about 2 points with the pool and little without it. On the validation split (one
seed) the plain student with the same shared terms is behind by 2.5 with the pool (`emb`, `soft`, `logits`: level
with pseudo-labelling) and by 1.4 labelled-only (`emb`, `soft`), where `L_feat` and `L_kl` off each cost 1.0. Its
prototype terms cannot simply be switched off (-8.5 with the pool): the deployed path runs through TAFA's attention
over the prototypes, and untrained assignments make it worse.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from procedge.methods.base import DistillMethod, FeatureDims, MethodConfig, PooledClassifier, StudentFeatures, method_registry, resize_to
from procedge.methods.knowledge import soft_kl
from procedge.methods.proc_kd.augmentation import TaskAdaptiveAugmentation, fold_tafa
from procedge.models.teacher import FrozenTeacher, TeacherOutput

INIT_POSITIONS = 20_000  # teacher positions the PCA and k-means initialisation read


class ProcKDConfig(MethodConfig):
    dim: int = Field(128, gt=0, description="shared width D")
    num_prototypes: int = Field(72, gt=0, description="K")
    assign_temperature: float = Field(0.1, gt=0, description="tau of the prototype assignment softmax")
    kd_temperature: float = Field(4.0, gt=0, description="T of the teacher-path to augmented-path KL term")
    sinkhorn_iterations: int = Field(3, ge=1, description="Sinkhorn-Knopp iterations that balance the teacher's assignments")
    init_from_teacher: bool = Field(True, description="phi_t from the PCA and prototypes from k-means of the teacher's local features")
    w_s: float = Field(1.0, ge=0, description="CE of the plain student path (labelled images)")
    w_a: float = Field(1.0, ge=0, description="CE of the augmented student path (labelled images)")
    w_t: float = Field(1.0, ge=0, description="teacher path follows the probe's soft labels (label-free)")
    w_kl: float = Field(1.0, ge=0, description="augmented student path follows the teacher path (label-free)")
    w_loc: float = Field(1.0, ge=0, description="student's prototype assignment follows the teacher's balanced codes (label-free)")
    w_bal: float = Field(1.0, ge=0, description="teacher's prototype assignment follows its balanced codes (label-free)")
    w_feat: float = Field(1.0, ge=0, description="per-position cosine alignment of phi_s(F_s) to the teacher's PLM features")
    w_emb: float = Field(1.0, ge=0, description="label-free: regress the teacher's pooled embedding through a learned projector")
    w_soft: float = Field(1.0, ge=0, description="label-free: KL of the deployed path to the teacher probe's soft labels")
    w_logits: float = Field(1.0, ge=0, description="label-free: KL to the teacher's own label-space distribution (chosen on "
                                                   "the validation split: +0.6 labelled-only, +1.0 with the pool)")


class TeacherAdapter(nn.Module):
    """phi_t: the tapped teacher stages resized to the finest grid, concatenated, one 1x1 conv to D."""

    def __init__(self, channels: list[int], dim: int):
        super().__init__()
        self.proj = nn.Conv2d(sum(channels), dim, 1)

    @staticmethod
    def gather(stages: list[torch.Tensor]) -> torch.Tensor:
        size = max((s.shape[-2:] for s in stages), key=lambda hw: hw[0] * hw[1])
        return torch.cat([s.float() if s.shape[-2:] == size else F.interpolate(s.float(), size=size, mode="bilinear", align_corners=False)
                          for s in stages], 1)

    def forward(self, stages: list[torch.Tensor]) -> torch.Tensor:
        return self.proj(self.gather(stages))

    @torch.no_grad()
    def init_pca(self, positions: torch.Tensor) -> None:
        """Whitened PCA of per-channel standardised positions (N, C): each output channel starts at unit variance."""
        mean, std = positions.mean(0), positions.std(0).clamp_min(1e-4)
        z = (positions - mean) / std
        _, s, vh = torch.linalg.svd(z, full_matrices=False)
        dim = self.proj.out_channels
        components = vh[:dim] / (s[:dim, None] / (len(z) - 1) ** 0.5).clamp_min(1e-6)  # (D, C), whitening
        if components.shape[0] < dim:  # fewer teacher channels than D: the rest keep their random start
            components = torch.cat([components, self.proj.weight.flatten(1)[components.shape[0]:]])
        weight = components / std
        self.proj.weight.copy_(weight[:, :, None, None])
        self.proj.bias.copy_(-(weight @ mean))


class PrototypeLearning(nn.Module):
    """PLM: NetVLAD-style aggregation of teacher positions around the prototypes, fed back to each position (residual)."""

    def __init__(self, dim: int, num_prototypes: int):
        super().__init__()
        self.assign = nn.Conv2d(dim, num_prototypes, 1)
        self.aggregate = nn.Linear(num_prototypes * dim, dim)
        self.mlp = nn.Sequential(nn.Conv2d(2 * dim, dim, 1), nn.ReLU(), nn.Conv2d(dim, dim, 1))
        nn.init.zeros_(self.mlp[2].weight), nn.init.zeros_(self.mlp[2].bias)  # starts as the identity on H0

    def forward(self, h0: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        hn = F.normalize(h0, dim=1)
        assign = self.assign(hn).softmax(1).flatten(2)  # (B, K, N)
        positions = hn.flatten(2)  # (B, D, N)
        residuals = torch.einsum("bkn,bdn->bkd", assign, positions) - assign.sum(2).unsqueeze(-1) * prototypes
        vlad = F.normalize(F.normalize(residuals, dim=2).flatten(1), dim=1)
        g = self.aggregate(vlad)[:, :, None, None].expand_as(h0)
        return h0 + self.mlp(torch.cat([h0, g], 1))


@torch.no_grad()
def sinkhorn_codes(logits: torch.Tensor, iterations: int) -> torch.Tensor:
    """Balanced soft codes (B, K, H, W) for assignment logits over all of a batch's positions (Sinkhorn-Knopp, log domain)."""
    b, k, h, w = logits.shape
    log_q = logits.float().permute(0, 2, 3, 1).reshape(-1, k)  # (positions, K)
    for _ in range(iterations):
        log_q = log_q - log_q.logsumexp(0, keepdim=True)  # every prototype takes the same share of the positions
        log_q = log_q - log_q.logsumexp(1, keepdim=True)  # every position's codes sum to one
    return log_q.exp().reshape(b, h, w, k).permute(0, 3, 1, 2)


def code_cross_entropy(codes: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per-position cross-entropy of assignment logits to target codes, averaged over positions."""
    return -(codes * logits.log_softmax(1)).sum(1).mean()


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
    labelled_terms = frozenset({"s", "a"})
    student_variants = ("student", "student_noaug")  # the folded augmentation, and the same student without it
    twins = {"student_noaug": "student"}

    def head_width(self, dims: FeatureDims) -> int:
        return self.config.dim  # the head classifies the prototype-augmented D-dimensional features

    def __init__(self, config: ProcKDConfig, dims: FeatureDims):
        super().__init__(config, dims)
        d = config.dim
        self.phi_t = TeacherAdapter(dims.teacher_stages, d)
        self.phi_s = nn.Conv2d(dims.student_final, d, 1)
        self.prototypes = nn.Parameter(torch.randn(config.num_prototypes, d) / d**0.5)
        self.plm = PrototypeLearning(d, config.num_prototypes)
        self.tafa = TaskAdaptiveAugmentation(d, config.assign_temperature)

    @torch.no_grad()
    def prepare(self, teacher: FrozenTeacher, sample: TeacherOutput, labels: torch.Tensor) -> None:
        """Start phi_t, the encoder and the prototypes from the teacher's local features (PCA, spherical k-means)."""
        if not self.config.init_from_teacher:
            return
        from sklearn.cluster import KMeans

        device = self.prototypes.device
        maps = TeacherAdapter.gather([s.cpu() for s in sample.stages])  # (N, C, H, W)
        positions = maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])
        generator = torch.Generator().manual_seed(0)
        positions = positions[torch.randperm(len(positions), generator=generator)[:INIT_POSITIONS]]
        self.phi_t.cpu().init_pca(positions)
        self.phi_t.to(device)
        projected = self.phi_t.proj(positions[:, :, None, None].to(device)).flatten(1).cpu()
        k = min(self.config.num_prototypes, len(projected))
        centres = KMeans(k, n_init=3, random_state=0).fit(F.normalize(projected, dim=1).numpy()).cluster_centers_
        centres = F.normalize(torch.from_numpy(centres).float(), dim=1)
        spread = (projected @ centres.T).std(1).mean().clamp_min(1e-6)  # assignment logits start with a spread of ~2
        self.tafa.encoder.weight.copy_(torch.eye(self.config.dim, device=device)[:, :, None, None])
        self.tafa.encoder.bias.zero_()
        self.prototypes[:k].copy_((centres * 2 * self.config.assign_temperature / spread).to(device))

    def losses(self, student: StudentFeatures, teacher: TeacherOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        if teacher.task_logits is None:
            raise ValueError("proc-kd's teacher path needs the teacher probe's logits (TeacherOutput.task_logits)")
        c = self.config
        x_s = self.phi_s(student.final)
        h_t = self.plm(self.phi_t(teacher.stages), self.prototypes)
        with frozen_running_stats(self.tafa):  # the deployed BN statistics come from the student path only
            z_t, assign_t = self.tafa(h_t, self.prototypes)
        z_a, assign_s = self.tafa(x_s, self.prototypes)
        logits_t, logits_a = self.classify(z_t), self.classify(z_a)
        codes = sinkhorn_codes(assign_t.detach(), c.sinkhorn_iterations)
        terms = {
            "s": self.cross_entropy(self.classify(x_s), labels),
            "a": self.cross_entropy(logits_a, labels),
            "t": soft_kl(logits_t, teacher.task_logits, 1.0),
            "kl": soft_kl(logits_a, logits_t.detach(), c.kd_temperature),
            "loc": code_cross_entropy(resize_to(codes, assign_s.shape[-2:]), assign_s),
            "bal": code_cross_entropy(codes, assign_t),
            "feat": (1 - F.cosine_similarity(x_s, resize_to(h_t.detach(), x_s.shape[-2:]), dim=1)).mean(),
        }
        return terms | self.teacher_terms(student, logits_a, teacher)

    def augmented_head(self) -> nn.Module:
        """Student path with the unfolded augmentation (training-time graph, for checks)."""
        return PooledClassifier(self.phi_s, ApplyTAFA(self.tafa, self.prototypes), head=self.head)

    def deploy_head(self) -> nn.Module:
        folded = fold_tafa(self.tafa, self.prototypes.detach())
        return PooledClassifier(self.phi_s, folded, head=self.head)

    def variant_head(self, variant: str) -> nn.Module:
        """"student_noaug": the student's projected features, pooled and classified without the prototype augmentation."""
        return PooledClassifier(self.phi_s, head=self.head) if variant == "student_noaug" else super().variant_head(variant)
