"""OpenVINO: IR (xml + bin) converted from the ONNX export and checked to compile for the CPU plugin.

fp32; fp16 (compressed weights); int8 by NNCF post-training quantization on the run's calibration set.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from procedge.errors import ProcedgeError
from procedge.export.base import VARIANTS, ExportBackend, Runner, backend_registry
from procedge.run import RunDir


def convert(onnx_path: Path, out_xml: Path, precision: str, calibration: list[np.ndarray] | None = None) -> None:
    """ONNX -> IR at `precision` (int8: NNCF post-training quantization on `calibration`), then a CPU compile check."""
    import openvino as ov

    try:
        model = ov.convert_model(str(onnx_path))
        if precision == "int8":
            import nncf

            model = nncf.quantize(model, nncf.Dataset(calibration), subset_size=len(calibration),
                                  preset=nncf.QuantizationPreset.PERFORMANCE)
        ov.save_model(model, str(out_xml), compress_to_fp16=precision == "fp16")
        ov.Core().compile_model(str(out_xml), "CPU")  # fail here, not on the device
    except RuntimeError as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise ProcedgeError(f"OpenVINO cannot convert or compile {onnx_path.name} for CPU: {first[:300]}; "
                            "check the op against OpenVINO's supported ONNX ops") from exc


@backend_registry.register("openvino")
class OpenVinoBackend(ExportBackend):
    name = "openvino"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "int8")
    runtime_module = "openvino"
    install_hint = "pip install openvino"
    suffix = ".xml"

    def build(self, run: RunDir, precision: str, out_dir: Path, calib_size: int | None = None) -> dict:
        import openvino as ov

        extra = {}
        if precision == "int8":
            try:
                import nncf
            except ImportError as exc:
                raise ProcedgeError("OpenVINO INT8 needs NNCF: pip install nncf") from exc
            from procedge.calibration import calibration_set, float_batches

            calibration = calibration_set(run, calib_size)
            extra = {"calibration_images": int(len(calibration["labels"])), "nncf": nncf.__version__,
                     "quantization": "NNCF post-training, performance preset (symmetric), bias correction"}
        for variant in VARIANTS:
            batches = None
            if precision == "int8":
                batches = float_batches(calibration["teacher" if variant == "teacher" else "student"])
            convert(run.format_dir("onnx", "fp32") / f"{variant}.onnx", out_dir / f"{variant}.xml", precision, batches)
        core = ov.Core()
        return {"openvino": ov.get_version(), "compiled_for": core.get_property("CPU", "FULL_DEVICE_NAME"), **extra}

    def load(self, path: Path, precision: str = "fp32", threads: int | None = None) -> tuple[Runner, dict]:
        import openvino as ov

        core = ov.Core()
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        if precision in ("fp32", "int8"):  # float parts in f32; otherwise the plugin may pick bf16 on capable CPUs
            config["INFERENCE_PRECISION_HINT"] = "f32"
        compiled = core.compile_model(str(path), "CPU", config)
        request = compiled.create_infer_request()

        def run(x: np.ndarray) -> np.ndarray:
            request.infer({0: x})
            return request.get_output_tensor(0).data.copy()

        settings = {
            "runtime": f"openvino {ov.get_version()}",
            "device": core.get_property("CPU", "FULL_DEVICE_NAME"),
            "inference_precision": compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
            "threads": compiled.get_property("INFERENCE_NUM_THREADS"),
        }
        return run, settings
