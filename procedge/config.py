"""Typed, validated run configuration; the resolved config is saved beside every run as config.yaml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from procedge.errors import ProcedgeError
from procedge.schema import StrictModel, first_error
from procedge.targets import TargetProfile


class TeacherConfig(StrictModel):
    name: str
    weights: Path | None = None
    input_size: int = Field(ge=16, le=1024)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    stages: list[str] = Field(min_length=1)


class StudentConfig(StrictModel):
    name: str
    weights: Path | None = Field(None, description="checkpoint the backbone starts from (its classifier head is replaced)")
    pretrained: bool = Field(False, description="start from timm's pretrained weights (local Hugging Face cache, else the hub)")
    input_size: int = Field(ge=16, le=1024)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class DataConfig(StrictModel):
    root: Path | None = None  # None: the embedded MNIST subset
    val_fraction: float = Field(0.2, gt=0, lt=1)
    augment: bool = False
    crop_area: float = Field(0.35, gt=0, le=1, description="smallest area share of a training crop (random-resized crop); "
                                                             "photos 0.35, images under 112 px 0.8")
    teacher_views: int = Field(0, ge=0, le=64, description="augmented views per training image whose teacher outputs are "
                                                            "cached; the student trains on exactly those views (needs augment)")
    unlabeled: Path | None = Field(None, description="a folder of unlabelled images (any depth): the label-free terms run on them")
    labels_per_class: int | None = Field(None, ge=1, description="keep this many labels per class; the rest of the training "
                                                                 "split joins the unlabelled pool")
    max_unlabeled: int | None = Field(None, ge=0, description="cap on the unlabelled pool, --unlabeled and the training split's "
                                                              "unlabelled rest alike (a seeded sample; 0: no pool)")
    cutmix: float = Field(0.0, ge=0, le=1, description="share of the unlabelled pool's training views that get a box of another "
                                                        "pool image pasted in (CutMix); the teacher's targets are for the mixed view")
    labelled_share: float = Field(0.0, ge=0, lt=1, description="least share of every epoch's images that are labelled: where an "
                                                             "unlabelled pool outnumbers them, each labelled image enters an "
                                                             "epoch as many times as that takes (0: every image once)")
    live_teacher: bool = Field(False, description="run the frozen teacher on every training view instead of caching fixed views: "
                                                  "a target for a fresh random crop each epoch, at one teacher pass per student "
                                                  "image (needs augment; for a GPU)")

    @model_validator(mode="after")
    def _views_need_augment(self) -> "DataConfig":
        if self.teacher_views and not self.augment:
            raise ValueError("teacher_views needs augment: true")
        if self.live_teacher and (self.teacher_views or not self.augment):
            raise ValueError("live_teacher needs augment: true and teacher_views: 0 (it replaces the cached views)")
        if self.cutmix and not (self.teacher_views or self.live_teacher):
            raise ValueError("cutmix needs teacher_views > 0 or live_teacher (the teacher's targets must be for the mixed views)")
        if self.cutmix and self.unlabeled is None and self.labels_per_class is None:
            raise ValueError("cutmix mixes unlabelled pool images: it needs unlabeled or labels_per_class")
        return self


class TrainConfig(StrictModel):
    epochs: int = Field(ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    seed: int = 0
    workers: int | None = Field(None, ge=0, description="DataLoader worker processes (None: half the cores, 1 to 8)")
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="auto: the GPU where there is one, else the CPU")


class RunConfig(StrictModel):
    target: TargetProfile
    teacher: TeacherConfig
    student: StudentConfig
    data: DataConfig
    train: TrainConfig
    method: str
    method_options: dict[str, Any] = {}

    def save(self, path: Path) -> None:
        from procedge.io import write_yaml

        write_yaml(path, self.model_dump(mode="json"))

    @classmethod
    def load(cls, path: Path, fix: str = "re-run `procedge distill`") -> "RunConfig":
        """The config saved at `path`; one line naming the first invalid field and `fix` where it cannot be used."""
        try:
            return cls.model_validate(yaml.safe_load(Path(path).read_text()))
        except ValidationError as exc:
            raise ProcedgeError(f"run config {path} is unreadable or invalid: {first_error(exc)}; {fix}") from exc
        except (OSError, yaml.YAMLError) as exc:
            raise ProcedgeError(f"run config {path} is unreadable or invalid ({type(exc).__name__}); {fix}") from exc
