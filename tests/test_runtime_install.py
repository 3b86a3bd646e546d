"""The on-device install: `procedge[runtime-ort]` benches an exported run without PyTorch."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from procedge.export import export_run

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_runs_in_a_runtime_only_install(trained_run, tmp_path):
    export_run(trained_run, "ort", "fp32")
    venv = tmp_path / "device-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    source = tmp_path / "src"  # build from a copy: an in-tree build would write build/ into the checkout
    shutil.copytree(REPO / "procedge", source / "procedge", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run(pip + [f"{source}[runtime-ort]"], check=True, capture_output=True)
    probe = subprocess.run([str(venv / "bin" / "python"), "-c", "import importlib.util as u; print(u.find_spec('torch') is None)"],
                           check=True, capture_output=True, text=True)
    assert probe.stdout.strip() == "True"  # no PyTorch on the "device"
    result = subprocess.run([str(venv / "bin" / "procedge"), "bench", "--run", str(trained_run), "--format", "ort", "--quick", "--json"],
                            capture_output=True, text=True, env={"PATH": str(venv / "bin"), "PROCEDGE_QUIET": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout[result.stdout.index("{"):])
    rows = [r for r in report["rows"] if r["format"] == "ort"]
    assert rows and all(r["status"] == "ok" and r["accuracy"] > 0.5 for r in rows if r["precision"] == "fp32")
    assert "torch" not in report["device"]["versions"]
