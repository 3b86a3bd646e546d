"""The export-backend interface, its registry, and the export driver (atomic, with a manifest).

A backend builds one format; the runtime it names (`procedge.runtime`) loads what it built, for its own checks and
for bench and predict, which never import this package.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from procedge.errors import ProcedgeError
from procedge.io import atomic_dir, write_json
from procedge.metadata import stamp_exports
from procedge.progress import info
from procedge.registry import Registry
from procedge.run import RunDir
from procedge.runtime import MANIFEST, Manifest, ModelRuntime, Runner, runtime_registry
from procedge.targets import Runtime


class ExportBackend:
    """Builds one format from the run's ONNX files; `runtime` names the runtime that loads it."""

    name: ClassVar[str]  # set by `backend_registry.register`
    runtime: ClassVar[str]  # a `procedge.runtime` name
    precisions: ClassVar[tuple[str, ...]]
    suffix: ClassVar[str]
    offers_device_kit: ClassVar[bool] = False
    accuracy_control: ClassVar[bool] = False

    def model_runtime(self) -> ModelRuntime:
        return runtime_registry.get(self.runtime)()

    def check_available(self) -> None:
        """One line if this machine cannot build the format (the runtime it builds with is missing)."""
        self.model_runtime().check_available()

    def build(self, run: RunDir, precision: str, out_dir: Path, calib_size: int | None = None,
              max_accuracy_drop: float | None = None) -> dict:
        """Write `artifact_name(variant)` for every variant into out_dir; return extra manifest fields.

        INT8 builds draw their calibration images with `procedge.calibration.calibration_set`; backends
        with `accuracy_control` keep the INT8 model within `max_accuracy_drop` of fp32 (top-1, 0-1)."""
        raise NotImplementedError

    def artifact_name(self, variant: str) -> str:
        """The file `build` writes for `variant`."""
        return f"{variant}{self.suffix}"

    def prepared_onnx(self, run: RunDir, precision: str) -> Path | None:
        """A directory already holding the ONNX this backend builds from (so no ONNX export is needed), if any."""
        return None

    def write_device_kit(self, run: RunDir, precision: str, calib_size: int | None, reason: str) -> Path:
        """For a runtime that lives only on the device (`offers_device_kit`): with it missing here (`reason`),
        write what the device needs to finish the export, and return that directory."""
        raise NotImplementedError

    def check_compatible(self, manifest: dict, path: Path) -> None:
        self.model_runtime().check_compatible(manifest, path)

    def load(self, path: Path, precision: str = "fp32", runtime: Runtime | None = None) -> tuple[Runner, dict]:
        """A batch-1 runner for a file this backend built, through its runtime (see `ModelRuntime.load`)."""
        return self.model_runtime().load(path, precision, runtime)


backend_registry: Registry[type[ExportBackend]] = Registry("export format")


def export_run(run_dir: Path, fmt: str | None = None, precision: str | None = None, calib_size: int | None = None,
               max_accuracy_drop: float | None = None) -> Path:
    """Export a trained run to `fmt` (default: its target's backend, at the target's precision); the
    format directory appears only when complete. Returns it."""
    run = RunDir(run_dir).require_trained()
    if fmt is None:
        from procedge.config import RunConfig

        target = RunConfig.load(run.config).target
        fmt, precision = target.backend, precision or target.precision
    if calib_size is not None and precision != "int8":
        raise ProcedgeError("--calib-size applies to --precision int8 only; drop it or add --precision int8")
    backend = backend_registry.get(fmt)()
    precision = precision or "fp32"
    if precision not in backend.precisions:
        raise ProcedgeError(f"{fmt} export supports --precision {', '.join(backend.precisions)} (asked: {precision}); pick one of those")
    if max_accuracy_drop is not None and not (backend.accuracy_control and precision == "int8"):
        with_control = [name for name in backend_registry.names() if backend_registry.get(name).accuracy_control]
        raise ProcedgeError(f"--max-accuracy-drop applies to --precision int8 with --format {'/'.join(with_control)}; "
                            "drop it or use one of those")
    try:
        backend.check_available()
    except ProcedgeError as missing:
        if not backend.offers_device_kit:
            raise
        _ensure_onnx(run, backend, precision, reuse_prepared=False)
        return backend.write_device_kit(run, precision, calib_size, str(missing))
    _ensure_onnx(run, backend, precision)
    target = run.format_dir(fmt, precision)
    with atomic_dir(target) as tmp:
        extra = backend.build(run, precision, tmp, calib_size, max_accuracy_drop)
        names = {v: backend.artifact_name(v) for v in run.variants()}
        metadata = stamp_exports(run, tmp, names)
        files = {v: {"file": name, "bytes": _size(tmp / name), "metadata": metadata[v]} for v, name in names.items()}
        manifest = Manifest(format=fmt, runtime=backend.runtime, precision=precision, files=files, **extra)
        write_json(tmp / MANIFEST, manifest.model_dump(mode="json"))
    info(f"exported {fmt} {precision} to {target}")
    return target


def _ensure_onnx(run: RunDir, backend: ExportBackend, precision: str, reuse_prepared: bool = True) -> None:
    """Export the fp32 ONNX first where a backend builds from it (and, with `reuse_prepared`, has no prepared ONNX of its own)."""
    prepared = reuse_prepared and backend.prepared_onnx(run, precision) is not None
    if backend.name != "onnx" and not prepared and not (run.format_dir("onnx", "fp32") / MANIFEST).exists():
        export_run(run.path, "onnx", "fp32")


def _size(path: Path) -> int:
    """Bytes of a model file plus its weights side-file (OpenVINO .bin), if any."""
    weights = path.with_suffix(".bin")
    return path.stat().st_size + (weights.stat().st_size if path.suffix == ".xml" and weights.exists() else 0)
