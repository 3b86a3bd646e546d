"""OpenVINO on the CPU plugin: compiled for latency, run through the infer request's own buffers."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from procedge.errors import ProcedgeError
from procedge.runtime.base import ModelRuntime, Runner, runtime_registry
from procedge.targets import Runtime


@runtime_registry.register("openvino")
class OpenVino(ModelRuntime):
    module = "openvino"
    install_hint = "pip install openvino"

    def check_compatible(self, manifest: dict, path: Path) -> None:
        import openvino as ov

        built, here = manifest.get("openvino", ""), ov.get_version()
        if _release(built) > _release(here):
            raise ProcedgeError(f"{path.name} was converted by OpenVINO {built.split('-')[0]}, newer than the installed {here.split('-')[0]}; "
                                f"pip install 'openvino>={built.split('-')[0]}' or export again with this one")

    def load(self, path: Path, precision: str = "fp32", settings: Runtime | None = None) -> tuple[Runner, dict]:
        import openvino as ov

        runtime = settings or Runtime()
        core = ov.Core()
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if runtime.threads:
            config["INFERENCE_NUM_THREADS"] = runtime.threads
        if precision in ("fp32", "int8"):  # float parts in f32; otherwise the plugin may pick bf16 on capable CPUs
            config["INFERENCE_PRECISION_HINT"] = "f32"
        compiled = core.compile_model(str(path), "CPU", config)
        request = compiled.create_infer_request()
        # Views of the request's own (static-shape) buffers: no tensor objects made per call, which
        # at sub-millisecond latencies would add a tenth to the time measured.
        image, logits = request.get_input_tensor(0).data, request.get_output_tensor(0).data

        def run(x: np.ndarray) -> np.ndarray:
            np.copyto(image, x)
            request.infer()
            return logits.copy()

        settings = {
            "runtime": f"openvino {ov.get_version()}",
            "device": core.get_property("CPU", "FULL_DEVICE_NAME"),
            "inference_precision": compiled.get_property("INFERENCE_PRECISION_HINT").to_string(),
            "threads": compiled.get_property("INFERENCE_NUM_THREADS"),
        }
        return run, settings


def _release(version: str) -> tuple[int, ...]:
    """`2026.4.1-20500-abc` -> (2026, 4, 1); unreadable -> ()."""
    match = re.match(r"(\d+(?:\.\d+)*)", version)
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()
