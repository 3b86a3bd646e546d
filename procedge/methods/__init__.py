"""Distillation methods, one module each, registered by name (`procedge distill --method NAME`)."""

from procedge.methods.base import DistillMethod, FeatureDims, MethodConfig, StudentFeatures, create_method, method_registry

# Importing a method's module registers it.
from procedge.methods import fitnets, inverted_projection, none, ot, pat, proc_kd, pseudo_label  # noqa: E402,F401

__all__ = ["DistillMethod", "FeatureDims", "MethodConfig", "StudentFeatures", "create_method", "method_registry"]
