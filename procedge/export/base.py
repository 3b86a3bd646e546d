"""The export-backend interface, its registry, and the export driver (atomic, with a manifest)."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np

from procedge.errors import ProcedgeError
from procedge.io import atomic_dir
from procedge.progress import info
from procedge.registry import Registry
from procedge.run import RunDir

# What each export holds: the deployed student (folded augmentation), the same student without the
# augmentation (the reference for its overhead), and the teacher with its task probe.
VARIANTS = ("student", "student_noaug", "teacher")

Runner = Callable[[np.ndarray], np.ndarray]  # (1, 3, S, S) float32 in [0, 1] -> (1, classes) logits


class ExportBackend:
    """Builds one format from the run's ONNX files and loads the result for inference."""

    name: ClassVar[str]
    precisions: ClassVar[tuple[str, ...]]
    runtime_module: ClassVar[str]  # what `load` imports
    install_hint: ClassVar[str]
    suffix: ClassVar[str]

    def check_available(self) -> None:
        try:
            importlib.import_module(self.runtime_module)
        except ImportError as exc:
            raise ProcedgeError(f"{self.name} needs the {self.runtime_module} package: {self.install_hint}") from exc

    def build(self, run: RunDir, precision: str, out_dir: Path, calib_size: int | None = None) -> dict:
        """Write `<variant><suffix>` for every variant into out_dir; return extra manifest fields.

        INT8 builds draw their calibration images with `procedge.calibration.calibration_set`."""
        raise NotImplementedError

    def load(self, path: Path, precision: str = "fp32", threads: int | None = None) -> tuple[Runner, dict]:
        """A batch-1 runner for a model exported at `precision`, and the runtime settings it uses."""
        raise NotImplementedError


backend_registry: Registry[type[ExportBackend]] = Registry("export format")


def artifact(out_dir: Path, variant: str, backend: ExportBackend) -> Path:
    return out_dir / f"{variant}{backend.suffix}"


def export_run(run_dir: Path, fmt: str, precision: str | None = None, calib_size: int | None = None) -> Path:
    """Export a trained run to `fmt`; the format directory appears only when complete. Returns it."""
    run = RunDir(run_dir).require_trained()
    if fmt == "trt":
        raise ProcedgeError(
            "--format trt is not available yet (TensorRT engines and INT8 come with the TensorRT backend); "
            "use --format onnx and build the engine on the device with trtexec --onnx=student.onnx --fp16"
        )
    if calib_size is not None and precision != "int8":
        raise ProcedgeError("--calib-size applies to --precision int8 only; drop it or add --precision int8")
    backend = backend_registry.get(fmt)()
    precision = precision or "fp32"
    if precision not in backend.precisions:
        raise ProcedgeError(f"{fmt} export supports --precision {', '.join(backend.precisions)} (asked: {precision}); pick one of those")
    backend.check_available()
    if fmt != "onnx" and not (run.format_dir("onnx", "fp32") / "manifest.json").exists():
        export_run(run.path, "onnx", "fp32")
    target = run.format_dir(fmt, precision)
    with atomic_dir(target) as tmp:
        extra = backend.build(run, precision, tmp, calib_size)
        files = {v: {"file": artifact(tmp, v, backend).name, "bytes": _size(artifact(tmp, v, backend))} for v in VARIANTS}
        manifest = {"format": fmt, "precision": precision, "files": files, **extra}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    info(f"exported {fmt} {precision} to {target}")
    return target


def _size(path: Path) -> int:
    """Bytes of a model file plus its weights side-file (OpenVINO .bin), if any."""
    weights = path.with_suffix(".bin")
    return path.stat().st_size + (weights.stat().st_size if path.suffix == ".xml" and weights.exists() else 0)


def read_manifest(directory: Path) -> dict:
    return json.loads((directory / "manifest.json").read_text())
