"""`pseudo-label`: the reference that uses the teacher without any feature matching.

Cross-entropy on the labelled images plus the teacher's linear probe as a soft labeller: the student's
logits follow the probe's soft labels (KL, `w_soft`) on every image, out-of-fold on the labelled ones and
from the probe fitted on all labelled images on the unlabelled pool. Whatever a feature-matching method
gains beyond this reference comes from more than the probe's labels.
"""

from __future__ import annotations

from pydantic import Field

from procedge.methods.base import method_registry
from procedge.methods.none import NoDistillation, NoDistillationConfig


class PseudoLabelConfig(NoDistillationConfig):
    w_soft: float = Field(1.0, ge=0, description="weight of the KL to the teacher probe's soft labels")


@method_registry.register("pseudo-label")
class PseudoLabel(NoDistillation):
    """`none` plus the probe's soft labels on every image."""

    Config = PseudoLabelConfig
