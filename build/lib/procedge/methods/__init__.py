"""Distillation methods, one module each, registered by name (`procedge distill --method NAME`)."""

from procedge.methods.base import DistillMethod, MethodConfig, create_method, method_registry

# Importing a method's module registers it.
from procedge.methods import proc_kd as _proc_kd  # noqa: E402,F401

__all__ = ["DistillMethod", "MethodConfig", "create_method", "method_registry"]
