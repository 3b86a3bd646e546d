"""The docs site builds with `mkdocs build --strict`: a broken link, a page missing from the nav or a command
reference that no longer matches the Click commands fails the suite."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None and shutil.which("mkdocs") is None,
                    reason="mkdocs is not installed (pip install 'procedge[docs]', which `make test` does)")
def test_docs_build_strict(tmp_path):
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    result = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=REPO,
                            capture_output=True, text=True, timeout=300, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    reference = (tmp_path / "site" / "reference" / "index.html").read_text()
    assert "--speedup" in reference and "--max-accuracy-drop" in reference  # generated from the Click commands


def test_readme_is_short():
    assert len((REPO / "README.md").read_text().splitlines()) <= 300
