"""OpenVINO: IR (xml + bin) converted from the ONNX export and checked to compile for the CPU plugin.

fp32; fp16 (compressed weights); int8 by NNCF post-training quantization on the run's calibration set,
optionally accuracy-controlled (`--max-accuracy-drop`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
from pydantic import Field

from procedge.errors import ProcedgeError
from procedge.export.base import ExportBackend, ExportOptions, backend_registry
from procedge.run import RunDir
from procedge.runtime import network_of
from procedge.runtime.onnxruntime import located_error

ACCURACY_CONTROL_IMAGES = 300  # training images (disjoint from calibration) that --max-accuracy-drop is checked on


def convert(onnx_path: Path, out_xml: Path, precision: str, quantizer: Callable | None = None) -> None:
    """ONNX -> IR at `precision` (int8: `quantizer(model)` returns the NNCF-quantized model), then a CPU compile check."""
    import openvino as ov
    from openvino.frontend import OpConversionFailure

    try:
        model = ov.convert_model(str(onnx_path))
        if quantizer is not None:
            model = quantizer(model)
        ov.save_model(model, str(out_xml), compress_to_fp16=precision == "fp16")
        ov.Core().compile_model(str(out_xml), "CPU")  # fail here, not on the device
    except (RuntimeError, OpConversionFailure) as exc:
        raise ProcedgeError(f"OpenVINO cannot convert or compile {onnx_path.name} for CPU: {located_error(exc, onnx_path)}; "
                            "replace that op or check it against OpenVINO's supported ONNX ops") from exc


def nncf_quantizer(calibration: list[np.ndarray], validation: tuple[list[np.ndarray], np.ndarray] | None,
                   max_drop: float | None, record: dict) -> Callable:
    """NNCF post-training INT8 (performance preset, bias correction); with `max_drop`, accuracy-controlled:
    layers whose quantization costs the most accuracy on `validation` go back to float until the drop is
    within bounds. `record` receives the validation top-1 before and after and the layers kept in float."""
    import nncf

    def quantize(model):
        calibration_data = nncf.Dataset(calibration)
        if max_drop is None:
            return nncf.quantize(model, calibration_data, subset_size=len(calibration), preset=nncf.QuantizationPreset.PERFORMANCE)
        import openvino as ov
        from nncf.common.logging import nncf_logger

        items = list(zip(*validation))
        messages = _Messages()
        nncf_logger.addHandler(messages)
        try:
            quantized = nncf.quantize_with_accuracy_control(
                model, calibration_data, nncf.Dataset(items, lambda item: item[0]), _top1,
                max_drop=max_drop, drop_type=nncf.DropType.ABSOLUTE, subset_size=len(calibration),
                preset=nncf.QuantizationPreset.PERFORMANCE)
        finally:
            nncf_logger.removeHandler(messages)
        core, f32 = ov.Core(), {"INFERENCE_PRECISION_HINT": "f32"}  # as bench runs them (else bf16 on capable CPUs)
        record.update({"validation_top1_fp32": _top1(core.compile_model(model, "CPU", f32), items)[0],
                       "validation_top1_int8": _top1(core.compile_model(quantized, "CPU", f32), items)[0],
                       "kept_in_float": messages.reverted()})
        return quantized

    return quantize


class _Messages(logging.Handler):
    """Collects NNCF's log lines, to read which layers accuracy control put back in float."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def reverted(self) -> list[str]:
        final = [line for line in self.lines if "were reverted back to the floating-point precision" in line]
        return [name.strip() for name in final[-1].splitlines()[1:] if name.strip()] if final else []


def _top1(compiled, items) -> tuple[float, list[float]]:
    """Top-1 on (image, label) items, with each item's 0/1 result (NNCF ranks layers by these)."""
    output = compiled.output(0)
    hits = [float(np.argmax(compiled(x)[output]) == label) for x, label in items]
    return float(np.mean(hits)), hits


class OpenVinoOptions(ExportOptions):
    max_accuracy_drop: float | None = Field(None, ge=0, le=1, description="accuracy-controlled INT8: keep layers in float until "
                                            "top-1 (0-1, on training images outside the calibration set) drops by at most this much")


@backend_registry.register("openvino")
class OpenVinoBackend(ExportBackend):
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "int8")
    runtime = "openvino"
    suffix = ".xml"
    Options = OpenVinoOptions

    def artifact_files(self, name: str) -> tuple[str, ...]:
        return name, str(Path(name).with_suffix(".bin"))  # the IR's topology and its weights

    def build(self, run: RunDir, precision: str, out_dir: Path, options: OpenVinoOptions) -> dict:
        import openvino as ov

        calib_size, max_accuracy_drop = options.calib_size, options.max_accuracy_drop
        extra, quantizers = {}, {v: None for v in run.variants()}
        if precision == "int8":
            try:
                import nncf
            except ImportError as exc:
                raise ProcedgeError("OpenVINO INT8 needs NNCF: pip install nncf") from exc
            from procedge.calibration import calibration_set, float_batches

            validation_size = ACCURACY_CONTROL_IMAGES if max_accuracy_drop is not None else 0
            calibration = calibration_set(run, calib_size, validation=validation_size)
            extra = {"calibration_images": int(len(calibration["labels"])), "nncf": nncf.__version__,
                     "quantization": "NNCF post-training, performance preset (symmetric), bias correction"}
            if max_accuracy_drop is not None:
                extra["accuracy_control"] = {"max_drop": max_accuracy_drop, "validation_images": int(len(calibration["val_labels"])),
                                             "validation_split": "train, disjoint from the calibration images"}
            for variant in run.variants():
                images = network_of(variant)
                validation = (float_batches(calibration[f"val_{images}"]), calibration["val_labels"]) if max_accuracy_drop is not None else None
                record = extra["accuracy_control"].setdefault(variant, {}) if max_accuracy_drop is not None else {}
                quantizers[variant] = nncf_quantizer(float_batches(calibration[images]), validation, max_accuracy_drop, record)
        for variant in run.variants():
            convert(run.format_dir("onnx", "fp32") / f"{variant}.onnx", out_dir / f"{variant}.xml", precision, quantizers[variant])
        core = ov.Core()
        return {"openvino": ov.get_version(), "compiled_for": core.get_property("CPU", "FULL_DEVICE_NAME"), **extra}
