"""The run directory: what `distill` writes and `export` / `bench` read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from procedge.errors import ProcedgeError
from procedge.io import read_json


def damaged(path: Path, exc: BaseException, fix: str) -> ProcedgeError:
    """One line for a run artifact that is missing or cannot be read, naming the file and what to do."""
    state = "is missing" if isinstance(exc, FileNotFoundError) else f"is damaged ({type(exc).__name__})"
    return ProcedgeError(f"{path} {state}; {fix}")




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
        try:
            with np.load(self.heldout) as data:
                arrays = {k: data[k] for k in data.files}
            if not {"student", "teacher", "labels"} <= set(arrays):
                raise KeyError("student/teacher/labels")
            return arrays
        except Exception as exc:  # numpy and zipfile raise many kinds for a truncated or garbage file
            raise damaged(self.heldout, exc, f"re-run `procedge distill --out {self.path} --overwrite`") from exc

    def read_metrics(self) -> dict:
        try:
            return read_json(self.metrics)
        except Exception as exc:
            raise damaged(self.metrics, exc, f"re-run `procedge distill --out {self.path} --overwrite`") from exc

    def variants(self) -> tuple[str, ...]:
        """The graphs this run deploys: its method's student variants, then the teacher (with its linear probe)."""
        return tuple(self.read_metrics().get("variants", ("student", "teacher")))

    def twins(self) -> dict[str, str]:
        """Variant -> the variant it is the same student of without the method's augmentation (`DistillMethod.twins`)."""
        return dict(self.read_metrics().get("twins", {}))

    def load_torch(self, path: Path) -> dict:
        """A checkpoint of the run (student.pt, teacher_probe.pt), weights only; one line if it is missing or damaged."""
        import torch

        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise damaged(path, exc, f"re-run `procedge distill --out {self.path} --overwrite`") from exc
