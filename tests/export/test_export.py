"""Real exports of a real trained run: ONNX (onnxsim, parity), OpenVINO fp32/fp16, ONNX Runtime."""

import json

import numpy as np
import onnx
import pytest

from procedge.export import backend_registry, export_run
from procedge.run import RunDir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(trained_run):
    for fmt, precision in (("onnx", "fp32"), ("openvino", "fp32"), ("openvino", "fp16"), ("ort", "fp32")):
        export_run(trained_run, fmt, precision)
    return RunDir(trained_run)


def test_distilled_run_folded_exactly(exported):
    metrics = exported.read_metrics()
    assert metrics["fold_max_abs_diff"] < 1e-5
    assert metrics["student_accuracy"] > 0.8  # one epoch on MNIST (chance is 10%)
    assert 0.8 < metrics["teacher_probe_accuracy"] <= 1.0
    assert set(metrics["history"][0]) >= {"loss_s", "loss_t", "loss_a", "loss_kl", "loss_loc"}


def test_onnx_is_static_simplified_and_matches_pytorch(exported):
    directory = exported.format_dir("onnx", "fp32")
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["opset"] >= 17
    for variant, parity in manifest["parity"].items():
        assert parity["images"] == 200
        assert parity["top1_agreement"] >= 0.995, (variant, parity)
        assert parity["max_abs_diff"] < 1e-2, (variant, parity)
    graph = onnx.load(str(directory / "student.onnx")).graph
    inputs = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    assert len(inputs) == 1
    assert [d.dim_value for d in inputs[0].type.tensor_type.shape.dim] == [1, 3, 64, 64]
    ops = {n.op_type for n in graph.node}
    assert "Softmax" in ops and not ops & {"Loop", "Scan", "If", "Einsum", "Gather"}


@pytest.mark.parametrize("fmt, precision", [("openvino", "fp32"), ("openvino", "fp16"), ("ort", "fp32")])
def test_compiled_formats_agree_with_onnx(exported, fmt, precision):
    heldout = exported.load_heldout()
    x = heldout["student"][:20].astype(np.float32) / 255
    reference, _ = backend_registry.get("onnx")().load(exported.format_dir("onnx", "fp32") / "student.onnx")
    runner, settings = backend_registry.get(fmt)().load(exported.format_dir(fmt, precision) / ("student.xml" if fmt == "openvino" else "student.onnx"), precision)
    ref = np.concatenate([reference(x[i:i + 1]) for i in range(len(x))])
    out = np.concatenate([runner(x[i:i + 1]) for i in range(len(x))])
    assert (ref.argmax(1) == out.argmax(1)).mean() >= 0.95
    assert np.abs(ref - out).max() < (1e-3 if precision == "fp32" else 0.5)
    assert "runtime" in settings


def test_openvino_fp16_weights_are_smaller(exported):
    fp32 = json.loads((exported.format_dir("openvino", "fp32") / "manifest.json").read_text())
    fp16 = json.loads((exported.format_dir("openvino", "fp16") / "manifest.json").read_text())
    assert fp16["files"]["student"]["bytes"] < 0.6 * fp32["files"]["student"]["bytes"]


@pytest.fixture(scope="module")
def exported_int8(exported):
    for fmt in ("openvino", "ort"):
        export_run(exported.path, fmt, "int8", calib_size=200)
    return exported


@pytest.mark.parametrize("fmt, suffix", [("openvino", ".xml"), ("ort", ".onnx")])
def test_int8_keeps_accuracy_and_shrinks_the_model(exported_int8, fmt, suffix):
    heldout = exported_int8.load_heldout()
    fp32 = json.loads((exported_int8.format_dir(fmt, "fp32") / "manifest.json").read_text())
    int8 = json.loads((exported_int8.format_dir(fmt, "int8") / "manifest.json").read_text())
    assert int8["calibration_images"] == 200
    backend = backend_registry.get(fmt)()
    for variant, images in (("student", heldout["student"]), ("teacher", heldout["teacher"])):
        assert int8["files"][variant]["bytes"] < 0.45 * fp32["files"][variant]["bytes"]
        accuracies = {}
        for precision in ("fp32", "int8"):
            run, _ = backend.load(exported_int8.format_dir(fmt, precision) / f"{variant}{suffix}", precision)
            x = images[:300].astype(np.float32) / 255
            accuracies[precision] = np.mean([run(x[i:i + 1]).argmax() == heldout["labels"][i] for i in range(len(x))])
        assert accuracies["int8"] >= accuracies["fp32"] - 0.03, (variant, accuracies)


def test_calibration_set_is_from_train_stored_and_reused(exported_int8):
    directory = exported_int8.path / "calibration"
    manifests = sorted(directory.glob("*.json"))
    assert len(manifests) == 1  # both backends used one set
    manifest = json.loads(manifests[0].read_text())
    assert manifest["count"] == 200 and manifest["recipe"]["split"] == "train"
    assert max(manifest["per_class"]) - min(manifest["per_class"]) <= 1
    stamp = manifests[0].with_suffix(".npz").stat().st_mtime_ns
    from procedge.calibration import calibration_set

    calibration_set(exported_int8, 200)
    assert manifests[0].with_suffix(".npz").stat().st_mtime_ns == stamp


def test_calibration_larger_than_the_training_split(exported):
    from procedge.errors import ProcedgeError

    with pytest.raises(ProcedgeError, match="larger than the 4000 training images"):
        export_run(exported.path, "ort", "int8", calib_size=5000)
    assert not exported.format_dir("ort", "int8").exists() or (exported.format_dir("ort", "int8") / "manifest.json").exists()
