"""ONNX Runtime: an offline-optimised model for the CPU execution provider (the ARM path)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from procedge.export.base import VARIANTS, ExportBackend, Runner, backend_registry
from procedge.export.onnx import ort_cpu_runner
from procedge.run import RunDir


@backend_registry.register("ort")
class OrtBackend(ExportBackend):
    name = "ort"
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    runtime_module = "onnxruntime"
    install_hint = "pip install onnxruntime"
    suffix = ".onnx"

    def build(self, run: RunDir, precision: str, out_dir: Path) -> dict:
        import onnxruntime as ort

        # Extended (not "all") optimisations: the saved graph stays portable across CPUs; layout
        # transforms specific to this machine's ISA are applied again at load time on the device.
        for variant in VARIANTS:
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            options.optimized_model_filepath = str(out_dir / f"{variant}.onnx")
            ort.InferenceSession(str(run.format_dir("onnx", "fp32") / f"{variant}.onnx"), options, providers=["CPUExecutionProvider"])
        return {"onnxruntime": ort.__version__, "optimization": "extended (offline) + all (at load)"}

    def load(self, path: Path, threads: int | None = None) -> tuple[Runner, dict]:
        return ort_cpu_runner(path, threads)
