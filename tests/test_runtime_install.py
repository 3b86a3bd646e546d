"""The on-device install: the built wheel plus `runtime-ort`, without PyTorch, lists the targets and benches an exported run."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from procedge.export import export_run
from procedge.run import RunDir

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_runs_in_a_runtime_only_install(trained_run, tmp_path):
    export_run(trained_run, "ort", "fp32")
    venv = tmp_path / "device-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    source = tmp_path / "src"  # build from a copy: an in-tree build would write build/ into the checkout
    for name in ("procedge", "targets", "calibration"):  # the package links to the top-level data folders
        shutil.copytree(REPO / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    wheel = next((tmp_path / "dist").glob("procedge-*.whl"))
    subprocess.run([python, "-m", "pip", "install", "-q", f"{wheel}[runtime-ort]"], check=True, capture_output=True)
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"],
                           check=True, capture_output=True, text=True)
    assert probe.stdout.strip() == "True"  # no PyTorch on the "device"
    env = {"PATH": str(venv / "bin"), "PROCEDGE_QUIET": "1"}
    targets = subprocess.run([str(venv / "bin" / "procedge"), "targets"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert targets.returncode == 0 and "intel-cpu" in targets.stdout and "jetson-orin-nano" in targets.stdout  # shipped in the wheel
    result = subprocess.run([str(venv / "bin" / "procedge"), "bench", "--run", str(trained_run), "--format", "ort", "--quick", "--json"],
                            capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout[result.stdout.index("{"):])
    rows = [r for r in report["rows"] if r["format"] == "ort"]
    assert rows and all(r["status"] == "ok" and r["accuracy"] > 0.5 for r in rows if r["precision"] == "fp32")
    assert "torch" not in report["device"]["versions"]
    from PIL import Image

    heldout = RunDir(trained_run).load_heldout()
    image = tmp_path / "digit.png"
    Image.fromarray(heldout["student"][0].transpose(1, 2, 0)).save(image)
    predicted = subprocess.run([str(venv / "bin" / "procedge"), "predict", "--run", str(trained_run), "--format", "ort", "--json", str(image)],
                               capture_output=True, text=True, env=env, cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    top = json.loads(predicted.stdout)["predictions"][0]["top"]
    assert len(top) == 5 and top[0]["class"] in [str(i) for i in range(10)]
