"""The interface every distillation method implements, and its registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from pydantic import ValidationError
from torch import nn

from procedge.errors import ProcedgeError
from procedge.methods.knowledge import KnowledgeOptions, TeacherKnowledge, labelled_cross_entropy
from procedge.models.teacher import FrozenTeacher, TeacherOutput
from procedge.registry import Registry
from procedge.schema import first_error


class MethodConfig(KnowledgeOptions):
    """A method's hyper-parameters; loss weights are fields named `w_<term>`.

    Every method inherits the shared label-free teacher terms (`w_emb`, `w_logits`, `w_soft`: see
    `procedge.methods.knowledge`), off unless the method or the user sets them.
    """


@dataclass(frozen=True)
class FeatureDims:
    """Shapes a method sizes its trainable parts by."""

    teacher_stages: list[int]  # channels of each tapped teacher stage
    teacher_pooled: int  # width of the teacher's pre-logits features
    teacher_classes: int  # size of the teacher's own label space
    student_final: int  # channels of the student's last map (what the deploy head reads)
    num_classes: int  # the student task's classes
    student_stages: list[int] = field(default_factory=list)  # channels of each tapped student stage


@dataclass
class StudentFeatures:
    final: torch.Tensor  # (B, C, H, W): the map the deploy head reads
    stages: list[torch.Tensor]  # the tapped intermediate stages, in `student_stage_count` order


class PooledClassifier(nn.Sequential):
    """Optional map -> map modules, then global average pool and a linear head."""

    def __init__(self, *maps: nn.Module, head: nn.Linear):
        super().__init__(*maps, nn.AdaptiveAvgPool2d(1), nn.Flatten(1), head)


class DistillMethod(nn.Module):
    """Trainable parts a method adds beside the student backbone, its named losses and its deploy head.

    `losses` gets the student's features, the frozen teacher's output and the labels (-1 for an image of
    the unlabelled pool); it returns the unweighted loss terms by name (weighted by `term_weights`). The
    terms named in `labelled_terms` average over the batch's labelled images only; every other term is
    label-free and runs on every image. A method adds the shared teacher terms with `teacher_terms`. `deploy_head` maps the student's last
    map to logits with static ops only. `student_variants` are the student graphs the method deploys, each exported,
    checked and benched: "student" (the deploy head) and any others of the method's own (`variant_head`). `twins` maps
    a variant to the one it is the same student of without the method's augmentation: the reference bench measures
    the augmentation's latency overhead against. Both are recorded in the run, so nothing else names them.
    """

    Config: ClassVar[type[MethodConfig]] = MethodConfig
    student_stage_count: ClassVar[int] = 0  # how many of the student's last feature_info stages to tap
    needs_live_teacher: ClassVar[bool] = False  # True: run the teacher every step, gradients through it (no cache)
    labelled_terms: ClassVar[frozenset[str]] = frozenset({"ce"})  # the terms that need labels
    student_variants: ClassVar[tuple[str, ...]] = ("student",)
    twins: ClassVar[dict[str, str]] = {}

    def __init__(self, config: MethodConfig, dims: FeatureDims):
        super().__init__()
        self.config = config
        self.knowledge = TeacherKnowledge(config, dims.student_final, dims.teacher_pooled, dims.teacher_classes)
        self.head = nn.Linear(self.head_width(dims), dims.num_classes)

    def head_width(self, dims: FeatureDims) -> int:
        """Width of the features the linear head classifies: the student's last map, unless the method maps it elsewhere."""
        return dims.student_final

    def loss_weights(self) -> dict[str, float]:
        """The method's own terms' weights: its config's `w_<term>` fields (the shared teacher terms' are `knowledge`'s)."""
        shared = set(KnowledgeOptions.model_fields)
        return {name[2:]: value for name, value in self.config if name.startswith("w_") and name not in shared}

    def term_weights(self) -> dict[str, float]:
        """Every term's weight: the method's own, then the shared teacher terms that are on."""
        return self.loss_weights() | self.knowledge.weights()

    def teacher_terms(self, student: StudentFeatures, task_logits: torch.Tensor, teacher: TeacherOutput) -> dict[str, torch.Tensor]:
        """The shared label-free terms (`emb`, `logits`, `soft`) that are on; `task_logits` are the deployed path's."""
        return self.knowledge.losses(student.final.mean((2, 3)), task_logits, teacher)

    @staticmethod
    def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the labelled images of the batch."""
        return labelled_cross_entropy(logits, labels)

    def losses(self, student: StudentFeatures, teacher: TeacherOutput, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def prepare(self, teacher: FrozenTeacher, sample: TeacherOutput, labels: torch.Tensor) -> None:
        """Called once before training with the teacher and its cached outputs on the labelled training images."""

    def teacher_forward(self, teacher: FrozenTeacher, images: torch.Tensor) -> TeacherOutput:
        """Methods with `needs_live_teacher`: the teacher's output for this step's images, gradients allowed."""
        return teacher(images)

    head: nn.Linear  # every method's classifier: pooled last map -> task logits

    def classify(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Logits of a (B, C, H, W) map: global average pool, then the method's linear head."""
        return self.head(feature_map.mean((2, 3)))

    def deploy_head(self) -> nn.Module:
        """Pool and the linear head; methods with a deployed augmentation override it."""
        return PooledClassifier(head=self.head)

    def augmented_head(self) -> nn.Module:
        """The training-time head before folding; methods with nothing to fold deploy it as it is."""
        return self.deploy_head()

    def variant_head(self, variant: str) -> nn.Module:
        """The head of one of `student_variants`: the deploy head for "student"; a method with more overrides it."""
        if variant != "student":
            raise ValueError(f"{type(self).__name__} deploys no student variant {variant!r}")
        return self.deploy_head()


method_registry: Registry[type[DistillMethod]] = Registry("distillation method")


def create_method(name: str, options: dict, dims: FeatureDims) -> DistillMethod:
    cls = method_registry.get(name)
    return cls(parse_method_config(name, options), dims)


def reads_unlabelled(name: str, options: dict) -> bool:
    """Whether a method with these options has a label-free term (one that an unlabelled image can feed)."""
    cls = method_registry.get(name)
    config = parse_method_config(name, options)
    weights = {k.removeprefix("w_"): v for k, v in config.model_dump().items() if k.startswith("w_") and v > 0}
    return any(term not in cls.labelled_terms for term in weights)


def parse_method_config(name: str, options: dict) -> MethodConfig:
    cls = method_registry.get(name)
    try:
        return cls.Config.model_validate(options)
    except ValidationError as exc:
        raise ProcedgeError(f"method {name!r} option {first_error(exc)}; fix --method-option or the run's config") from exc


def full_method_options(name: str, options: dict) -> dict:
    """Every option of the method, defaults filled in, typed as validated: what a saved config pins."""
    return parse_method_config(name, options).model_dump(mode="json")


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bring a (B, C, H, W) map to another grid: area-average when shrinking, bilinear when growing."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return torch.nn.functional.adaptive_avg_pool2d(x, size)
    return torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)


def standardise(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-channel zero mean, unit variance over (batch, H, W): teacher stages differ in scale by channel and by stage."""
    mean, var = x.mean((0, 2, 3), keepdim=True), x.var((0, 2, 3), keepdim=True, unbiased=False)
    return (x - mean) / (var + eps).sqrt()
