"""ONNX Runtime (the ARM path): an offline-optimised fp32 model, or static INT8 in QDQ form with
per-channel weights, calibrated on the run's calibration set."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from procedge.export.base import ExportBackend, ExportOptions, backend_registry
from procedge.export.qdq import quantize_qdq
from procedge.run import RunDir
from procedge.runtime import network_of


@backend_registry.register("ort")
class OrtBackend(ExportBackend):
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "int8")
    runtime = "onnxruntime"
    suffix = ".onnx"

    def build(self, run: RunDir, precision: str, out_dir: Path, options: ExportOptions) -> dict:
        import onnxruntime as ort

        if precision == "int8":
            return self._quantize(run, out_dir, options.calib_size)

        # Extended (not "all") optimisations: the saved graph stays portable across CPUs; layout
        # transforms specific to this machine's ISA are applied again at load time on the device.
        for variant in run.variants():
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            options.optimized_model_filepath = str(out_dir / f"{variant}.onnx")
            ort.InferenceSession(str(run.format_dir("onnx", "fp32") / f"{variant}.onnx"), options, providers=["CPUExecutionProvider"])
        return {"onnxruntime": ort.__version__, "optimization": "extended (offline) + all (at load)"}

    def _quantize(self, run: RunDir, out_dir: Path, calib_size: int | None) -> dict:
        from procedge.calibration import calibration_set, float_batches

        calibration = calibration_set(run, calib_size)
        for variant in run.variants():
            images = calibration[network_of(variant)]
            quantize_qdq(run.format_dir("onnx", "fp32") / f"{variant}.onnx", out_dir / f"{variant}.onnx", float_batches(images))
        return {"calibration_images": int(len(calibration["labels"])),
                "quantization": "static QDQ, per-channel 7-bit int8 weights, uint8 activations, min-max calibration"}
