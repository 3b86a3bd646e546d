"""Export backends, one module each, registered by format name (`procedge export --format NAME`)."""

from procedge.export.base import ExportBackend, ExportOptions, Runner, backend_registry, check_target, export_run

# Importing a backend's module registers it.
from procedge.export import onnx as _onnx  # noqa: E402,F401
from procedge.export import openvino as _openvino  # noqa: E402,F401
from procedge.export import ort as _ort  # noqa: E402,F401
from procedge.export import trt as _trt  # noqa: E402,F401

__all__ = ["ExportBackend", "ExportOptions", "Runner", "backend_registry", "check_target", "export_run"]
