"""OpenVINO backend: bad input gets one line naming the op, the node or the version, and the fix."""

import json
import shutil
import sys

import numpy as np
import pytest

from procedge.errors import ProcedgeError
from procedge.export import backend_registry, export_run
from procedge.export.openvino import convert
from procedge.run import RunDir


def test_an_op_openvino_cannot_convert_is_named_with_its_node(custom_op_onnx, tmp_path):
    with pytest.raises(ProcedgeError) as info:
        convert(custom_op_onnx, tmp_path / "custom.xml", "fp32")
    message = str(info.value)
    assert "node fancy_pool_1 (op com.example.FancyPool)" in message and "\n" not in message
    assert not (tmp_path / "custom.xml").exists()


def test_an_ir_from_a_newer_openvino_is_refused():
    backend = backend_registry.get("openvino")()
    with pytest.raises(ProcedgeError, match=r"converted by OpenVINO 2099\.1\.0, newer than the installed .*pip install 'openvino>=2099\.1\.0'"):
        backend.check_compatible({"openvino": "2099.1.0-1-abcdef"}, RunDir("r").path / "student.xml")
    backend.check_compatible({"openvino": "2023.0.0-10926-b4452d56304-releases/2023/0"}, RunDir("r").path / "student.xml")


def test_missing_runtime_says_what_to_install(tmp_path, monkeypatch):
    from test_cli import assert_one_line_error, run_cli

    run = tmp_path / "r"
    run.mkdir()
    (run / "student.pt").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    assert_one_line_error(run_cli("export", "--run", run, "--format", "openvino"), "needs the openvino package: pip install openvino")
    assert sorted(p.name for p in run.iterdir()) == ["student.pt"]


@pytest.mark.slow
def test_accuracy_controlled_int8_stays_within_the_drop(trained_run, tmp_path):
    run = RunDir(shutil.copytree(trained_run, tmp_path / "run", ignore=shutil.ignore_patterns("export", "calibration")))
    target = export_run(run.path, "openvino", "int8", calib_size=100, max_accuracy_drop=0.01)
    manifest = json.loads((target / "manifest.json").read_text())
    control = manifest["accuracy_control"]
    assert control["max_drop"] == 0.01 and control["validation_images"] == 300
    assert manifest["options"] == {"calib_size": 100, "max_accuracy_drop": 0.01}  # the typed options it was built with
    for variant in ("student", "teacher"):
        record = control[variant]
        assert record["validation_top1_int8"] >= record["validation_top1_fp32"] - 0.01 - 1e-9, (variant, record)
        assert isinstance(record["kept_in_float"], list)
    # The validation images are training images outside the calibration set, never the held-out split.
    calibration = np.load(next((run.path / "calibration").glob("*.npz")))
    assert len(calibration["labels"]) == 100 and len(calibration["val_labels"]) == 300
    assert not {x.tobytes() for x in calibration["student"]} & {x.tobytes() for x in calibration["val_student"]}
    heldout = run.load_heldout()
    runner, _ = backend_registry.get("openvino")().load(target / "student.xml", "int8")
    x = heldout["student"][:300].astype(np.float32) / 255
    assert np.mean([runner(x[i:i + 1]).argmax() == heldout["labels"][i] for i in range(len(x))]) > 0.8


@pytest.mark.slow
def test_int8_of_a_run_whose_training_data_is_gone(trained_run, tmp_path):
    import yaml

    run = RunDir(shutil.copytree(trained_run, tmp_path / "run", ignore=shutil.ignore_patterns("calibration", "openvino")))
    config = yaml.safe_load(run.config.read_text())
    config["data"]["root"] = str(tmp_path / "moved-away")
    run.config.write_text(yaml.safe_dump(config))
    with pytest.raises(ProcedgeError, match=r"INT8 needs calibration images from the run's training data, .*moved-away, which is not there"):
        export_run(run.path, "openvino", "int8")
    assert not run.format_dir("openvino", "int8").exists()
