"""A damaged run directory gets one line naming the file and what to do, exit 2, never a traceback."""

import shutil

import numpy as np
import pytest

from procedge.calibration import calibration_set
from procedge.export import export_run
from procedge.run import RunDir
from test_cli import assert_one_line_error, run_cli


@pytest.fixture
def run(trained_run, tmp_path) -> RunDir:
    return RunDir(shutil.copytree(trained_run, tmp_path / "run", ignore=shutil.ignore_patterns("export", "calibration")))


@pytest.mark.parametrize("name, damage, fragment", [
    ("student.pt", lambda p: p.write_bytes(p.read_bytes()[:1000]), "student.pt is damaged"),
    ("student.pt", lambda p: p.write_bytes(b"garbage" * 50), "student.pt is damaged"),
    ("teacher_probe.pt", lambda p: p.unlink(), "teacher_probe.pt is missing"),
    ("config.yaml", lambda p: p.write_text(":: not yaml [[["), "config.yaml is unreadable or invalid"),
    ("config.yaml", lambda p: p.write_text(p.read_text().replace("method: proc-kd\n", "")), "config.yaml is unreadable or invalid: method: Field required"),
])
def test_export_of_a_damaged_run(run, name, damage, fragment):
    damage(run.path / name)
    line = assert_one_line_error(run_cli("export", "--run", run.path, "--format", "onnx"), fragment)
    assert "procedge distill" in line
    assert not run.format_dir("onnx", "fp32").exists()


@pytest.mark.parametrize("damage, fragment", [
    (lambda p: p.unlink(), "heldout.npz is missing"),
    (lambda p: p.write_bytes(p.read_bytes()[:500]), "heldout.npz is damaged"),
])
def test_bench_of_a_run_whose_heldout_arrays_are_damaged(run, damage, fragment):
    damage(run.heldout)
    assert_one_line_error(run_cli("bench", "--run", run.path, "--format", "pytorch", "--quick"), fragment)


def test_a_damaged_manifest_or_a_missing_model_file(run):
    export_run(run.path, "onnx", "fp32")
    model = run.format_dir("onnx", "fp32") / "student.onnx"
    model.unlink()
    line = assert_one_line_error(run_cli("predict", "--run", run.path, "--format", "onnx", run.path / "config.yaml"), "student.onnx is missing")
    assert "procedge export --run" in line
    (run.format_dir("onnx", "fp32") / "manifest.json").write_text("{garbage")
    line = assert_one_line_error(run_cli("bench", "--run", run.path, "--quick"), "manifest.json is damaged")
    assert "--format onnx --precision fp32" in line


def test_a_corrupt_calibration_set_is_rebuilt(run):
    first = calibration_set(run, 20)
    stored = next((run.path / "calibration").glob("*.npz"))
    stored.write_bytes(b"not an npz")
    again = calibration_set(run, 20)
    assert all(np.array_equal(first[k], again[k]) for k in first)
    with np.load(stored) as data:
        assert set(data.files) == set(first)
