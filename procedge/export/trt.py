"""TensorRT (Jetson, NVIDIA GPUs): engines built through the TensorRT Python API from the run's ONNX.

fp32; fp16; int8 by explicit quantization: the ONNX carries symmetric Q/DQ nodes calibrated on the run's
calibration set (TensorRT's implicit-calibrator API is deprecated), and TensorRT runs those layers in int8.
An engine only loads on the TensorRT version and GPU that built it, so each file is named and stamped
with both, and bench refuses one built elsewhere. A timing cache per TensorRT version and GPU makes
rebuilds fast. Where TensorRT or a GPU is missing (a CPU build machine), `export` writes a device kit
instead: the ONNX files it would build from, a trtexec build script, and the one command to run on the device.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import ClassVar


from procedge.errors import ProcedgeError
from procedge.export.base import ExportBackend, ExportOptions, backend_registry
from procedge.io import atomic_dir, cache_dir, write_json
from procedge.metadata import stamp_exports
from procedge.progress import info
from procedge.run import RunDir
from procedge.runtime import DEVICE_KIT, Manifest, accuracy, network_of, read_manifest
from procedge.runtime.onnxruntime import ort_runner
from procedge.runtime.tensorrt import _logger, build_stamp, engine_file_name

WORKSPACE_BYTES = 1 << 30
BUILD_SCRIPT = "build_engines.sh"
SOURCE_FIELDS = ("onnx_source", "quantization", "calibration_images", "qdq_accuracy_onnxruntime")
TRTEXEC_FLAGS = {"fp32": "", "fp16": " --fp16", "int8": " --int8 --fp16"}  # int8: Q/DQ layers in int8, the rest fp16


def timing_cache_path(stamp: dict) -> Path:
    return cache_dir("tensorrt") / engine_file_name("timing", stamp).replace(".engine", ".cache")


def build_engine(onnx_path: Path, precision: str, cache_path: Path) -> bytes:
    """Parse `onnx_path` and build a serialized engine at `precision`, reading and updating the timing cache."""
    import tensorrt as trt

    logger = _logger()
    builder = trt.Builder(logger)
    explicit_batch = 0 if int(trt.__version__.split(".")[0]) >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(explicit_batch)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise ProcedgeError(f"TensorRT {trt.__version__} cannot parse {onnx_path.name}: {_parser_error(parser)}; "
                            "replace that op in the model or add a TensorRT plugin for it")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # scales come from the Q/DQ nodes in the ONNX
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ProcedgeError(f"TensorRT could not build an engine from {onnx_path.name} at {precision}; "
                            "the builder's log above names the layer")
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_path.with_name(f".{cache_path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
    os.replace(tmp, cache_path)
    return bytes(memoryview(serialized))


def _parser_error(parser) -> str:
    """The first ONNX-parser error, naming the node and its op where the parser says."""
    error = parser.get_error(0)
    where = []
    for label, getter in (("node", "node_name"), ("op", "node_operator")):  # TensorRT 10; older ones give only node()
        value = getattr(error, getter, lambda: "")()
        if value:
            where.append(f"{label} {value}")
    if not where:
        where.append(f"node #{error.node()}")
    return f"{' '.join(where)}: {error.desc()}"


@backend_registry.register("trt")
class TensorRtBackend(ExportBackend):
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "fp16", "int8")
    runtime = "tensorrt"
    suffix = ".engine"
    offers_device_kit = True

    def artifact_name(self, variant: str) -> str:
        return engine_file_name(variant, build_stamp())

    def prepared_onnx(self, run: RunDir, precision: str) -> Path | None:
        """The ONNX a device kit (or an earlier engine build) holds for this precision, if complete."""
        directory = run.format_dir(self.name, precision)
        return directory if all((directory / f"{v}.onnx").exists() for v in run.variants()) else None

    def build(self, run: RunDir, precision: str, out_dir: Path, options: ExportOptions) -> dict:
        import tensorrt as trt

        sources = self._write_onnx(run, precision, out_dir, options.calib_size)
        stamp = build_stamp()
        cache = timing_cache_path(stamp)
        for variant in run.variants():
            engine = build_engine(out_dir / f"{variant}.onnx", precision, cache)
            (out_dir / engine_file_name(variant, stamp)).write_bytes(engine)
        _write_build_script(out_dir, precision, run.variants())
        return {**stamp, **sources, "timing_cache": str(cache), "builder": {
            "workspace_bytes": WORKSPACE_BYTES, "flags": [f for f, on in (("FP16", precision != "fp32"), ("INT8", precision == "int8")) if on],
            "explicit_batch": int(trt.__version__.split(".")[0]) < 10}}

    def write_device_kit(self, run: RunDir, precision: str, options: ExportOptions, reason: str) -> Path:
        """No TensorRT or GPU here: write what the device needs to build the engines, and say what to run there."""
        target = run.format_dir(self.name, precision)
        with atomic_dir(target) as tmp:
            sources = self._write_onnx(run, precision, tmp, options.calib_size, reuse_prepared=False)
            script = _write_build_script(tmp, precision, run.variants())
            metadata = stamp_exports(run, tmp, {v: f"{v}.onnx" for v in run.variants()})
            command = f"procedge export --run {run.path} --format trt --precision {precision}"
            kit = Manifest(format=self.name, runtime=self.runtime, precision=precision, status="device kit", reason=reason,
                           options=options.model_dump(mode="json"),
                           on_device=command, or_with_trtexec=f"bash {target / script}", **sources,
                           files={v: {"file": f"{v}.onnx", "metadata": metadata[v]} for v in run.variants()})
            write_json(tmp / DEVICE_KIT, kit.model_dump(mode="json"))
        info(f"no TensorRT engine built here ({reason.split(':')[0]}): wrote the ONNX and {script} to {target}; "
             f"on the device run `{command}` (or `bash {target / script}`)")
        return target

    def _write_onnx(self, run: RunDir, precision: str, out_dir: Path, calib_size: int | None, reuse_prepared: bool = True) -> dict:
        """Put each variant's ONNX (with Q/DQ for int8) in out_dir: from a device kit if there is one (and
        `reuse_prepared`), else made here from the fp32 export."""
        prepared = self.prepared_onnx(run, precision) if reuse_prepared else None
        if prepared is not None:  # a device kit, or the engines built from one: no PyTorch or calibration needed here
            for variant in run.variants():
                shutil.copy(prepared / f"{variant}.onnx", out_dir / f"{variant}.onnx")
            recorded = read_manifest(prepared).model_dump()
            return {key: recorded[key] for key in SOURCE_FIELDS if key in recorded}
        fp32 = run.format_dir("onnx", "fp32")
        if precision != "int8":
            for variant in run.variants():
                shutil.copy(fp32 / f"{variant}.onnx", out_dir / f"{variant}.onnx")
            return {"onnx_source": "export/onnx/fp32"}
        return _quantize_for_tensorrt(run, fp32, out_dir, calib_size)


def _quantize_for_tensorrt(run: RunDir, fp32: Path, out_dir: Path, calib_size: int | None) -> dict:
    """Symmetric int8 Q/DQ (zero points 0, per-channel weights): the explicit-quantization form TensorRT takes.

    Each quantized graph is checked on the held-out split in ONNX Runtime (CPU), which runs the same Q/DQ
    arithmetic; the TensorRT engine's own accuracy is measured by `procedge bench` on the device."""
    from procedge.calibration import calibration_set, float_batches
    from procedge.export.qdq import quantize_qdq

    calibration = calibration_set(run, calib_size)
    heldout = run.load_heldout()
    checked = {}
    for variant in run.variants():
        images = network_of(variant)
        quantize_qdq(fp32 / f"{variant}.onnx", out_dir / f"{variant}.onnx", float_batches(calibration[images]), symmetric=True)
        if variant not in run.twins():  # a twin's accuracy is its deployed variant's, less the augmentation
            runner, _ = ort_runner(out_dir / f"{variant}.onnx")
            checked[variant] = accuracy(runner, heldout[images], heldout["labels"])
    return {"onnx_source": "export/onnx/fp32 + Q/DQ", "calibration_images": int(len(calibration["labels"])),
            "quantization": "static Q/DQ for TensorRT explicit quantization: symmetric int8 activations and per-channel int8 weights, "
                            "min-max calibration; first convolution and classifier in float",
            "qdq_accuracy_onnxruntime": checked}


def _write_build_script(out_dir: Path, precision: str, variants: tuple[str, ...]) -> str:
    """A trtexec script that builds the same engines on a device without procedge."""
    lines = ["#!/usr/bin/env bash",
             f"# Builds this export's TensorRT engines ({precision}) on the device, with TensorRT's trtexec.",
             "# With procedge installed there, `procedge export --format trt` does the same and stamps the engines for bench.",
             "set -euo pipefail", 'cd "$(dirname "$0")"',
             'TRTEXEC="${TRTEXEC:-$(command -v trtexec || echo /usr/src/tensorrt/bin/trtexec)}"',
             f"for variant in {' '.join(variants)}; do",
             f'  "$TRTEXEC" --onnx="$variant.onnx" --saveEngine="$variant.engine"{TRTEXEC_FLAGS[precision]} '
             "--timingCacheFile=timing.cache --skipInference",
             "done", ""]
    path = out_dir / BUILD_SCRIPT
    path.write_text("\n".join(lines))
    path.chmod(0o755)
    return BUILD_SCRIPT
