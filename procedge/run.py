"""The run directory: what `distill` writes and `export` / `bench` read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from procedge.errors import ProcedgeError
from procedge.io import read_json


class RunDir:
    """Paths of one run's artifacts; a run is trained once `student.pt` exists."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.config = self.path / "config.yaml"
        self.student = self.path / "student.pt"
        self.last_checkpoint = self.path / "last.pt"
        self.teacher_probe = self.path / "teacher_probe.pt"
        self.heldout = self.path / "heldout.npz"
        self.metrics = self.path / "metrics.json"
        self.sizing = self.path / "sizing.json"
        self.exports = self.path / "export"
        self.bench_json = self.path / "bench.json"
        self.report = self.path / "report.md"
        self.training_plot = self.path / "training.png"
        self.bench_plot = self.path / "accuracy_latency.png"

    def is_run(self) -> bool:
        return self.config.exists()

    def require_trained(self) -> "RunDir":
        if not self.path.is_dir():
            raise ProcedgeError(f"run directory {self.path} does not exist; run `procedge distill --out {self.path}` first")
        if not self.student.exists():
            raise ProcedgeError(f"run directory {self.path} has no trained student (student.pt); run `procedge distill --out {self.path}` first")
        return self

    def format_dir(self, fmt: str, precision: str) -> Path:
        return self.exports / fmt / precision

    def load_heldout(self) -> dict[str, np.ndarray]:
        with np.load(self.heldout) as data:
            return {k: data[k] for k in data.files}

    def read_metrics(self) -> dict:
        return read_json(self.metrics)
