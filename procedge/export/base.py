"""The export-backend interface, its registry, and the export driver (atomic, with a manifest).

A backend builds one format; the runtime it names (`procedge.runtime`) loads what it built, for its own checks and
for bench and predict, which never import this package.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, ValidationError

from procedge.errors import ProcedgeError
from procedge.io import atomic_dir, write_json
from procedge.metadata import stamp_exports
from procedge.progress import info
from procedge.registry import Registry
from procedge.run import RunDir
from procedge.runtime import MANIFEST, Manifest, ModelRuntime, Runner, runtime_registry
from procedge.schema import StrictModel, first_error
from procedge.targets import Runtime, TargetProfile


class ExportOptions(StrictModel):
    """A backend's options (`procedge export` flags, all for INT8 builds); a backend with more subclasses it."""

    calib_size: int | None = Field(None, ge=1, description="INT8 calibration images from the training split (default: "
                                                           "calibration/default.yaml); drawn with `procedge.calibration.calibration_set`")


class ExportBackend:
    """One export pass: builds one format from another (`starts_from`, exported first at fp32 when missing; None: from the
    trained run itself); `runtime` names the runtime that loads what it built."""

    name: ClassVar[str]  # set by `backend_registry.register`
    runtime: ClassVar[str]  # a `procedge.runtime` name
    starts_from: ClassVar[str | None] = "onnx"
    Options: ClassVar[type[ExportOptions]] = ExportOptions
    precisions: ClassVar[tuple[str, ...]]
    suffix: ClassVar[str]
    offers_device_kit: ClassVar[bool] = False

    def model_runtime(self) -> ModelRuntime:
        return runtime_registry.get(self.runtime)()

    def check_available(self) -> None:
        """One line if this machine cannot build the format (the runtime it builds with is missing)."""
        self.model_runtime().check_available()

    def build(self, run: RunDir, precision: str, out_dir: Path, options: ExportOptions) -> dict:
        """Write `artifact_name(variant)` for every variant into out_dir; return extra manifest fields."""
        raise NotImplementedError

    def artifact_name(self, variant: str) -> str:
        """The file `build` writes for `variant`."""
        return f"{variant}{self.suffix}"

    def artifact_files(self, name: str) -> tuple[str, ...]:
        """Every file the artifact `name` is made of (a format with a weights side-file lists it too)."""
        return (name,)

    def prepared_onnx(self, run: RunDir, precision: str) -> Path | None:
        """A directory already holding the ONNX this backend builds from (so no ONNX export is needed), if any."""
        return None

    def write_device_kit(self, run: RunDir, precision: str, options: ExportOptions, reason: str) -> Path:
        """For a runtime that lives only on the device (`offers_device_kit`): with it missing here (`reason`),
        write what the device needs to finish the export, and return that directory."""
        raise NotImplementedError

    def check_compatible(self, manifest: dict, path: Path) -> None:
        self.model_runtime().check_compatible(manifest, path)

    def load(self, path: Path, precision: str = "fp32", runtime: Runtime | None = None) -> tuple[Runner, dict]:
        """A batch-1 runner for a file this backend built, through its runtime (see `ModelRuntime.load`)."""
        return self.model_runtime().load(path, precision, runtime)


backend_registry: Registry[type[ExportBackend]] = Registry("export format")


def check_target(profile: TargetProfile) -> TargetProfile:
    """`profile`, if its backend is a registered export format; one line naming the formats otherwise."""
    if profile.backend not in backend_registry.names():
        raise ProcedgeError(f"target {profile.name}: backend {profile.backend!r} is not an export format; one of "
                            f"{', '.join(backend_registry.names())}: fix the profile")
    return profile


def export_run(run_dir: Path, fmt: str | None = None, precision: str | None = None, **options) -> Path:
    """Export a trained run to `fmt` (default: its target's backend, at the target's precision) with the backend's
    `options` (None: not given); the format directory appears only when complete. Returns it."""
    run = RunDir(run_dir).require_trained()
    if fmt is None:
        from procedge.config import RunConfig

        target = RunConfig.load(run.config).target
        fmt, precision = target.backend, precision or target.precision
    options = {name: value for name, value in options.items() if value is not None}
    backend = backend_registry.get(fmt)()
    for name in options:  # every export option is an INT8 build's
        if precision != "int8" or name not in backend.Options.model_fields:
            formats = [f for f in backend_registry.names() if name in backend_registry.get(f).Options.model_fields
                       and "int8" in backend_registry.get(f).precisions]
            raise ProcedgeError(f"--{name.replace('_', '-')} applies to --precision int8 with --format {'/'.join(formats)}; "
                                "drop it or use one of those")
    precision = precision or "fp32"
    if precision not in backend.precisions:
        raise ProcedgeError(f"{fmt} export supports --precision {', '.join(backend.precisions)} (asked: {precision}); pick one of those")
    try:
        parsed = backend.Options.model_validate(options)
    except ValidationError as exc:
        raise ProcedgeError(f"{fmt} export option {first_error(exc)}; fix the option") from exc
    try:
        backend.check_available()
    except ProcedgeError as missing:
        if not backend.offers_device_kit:
            raise
        _ensure_source(run, backend, precision, reuse_prepared=False)
        return backend.write_device_kit(run, precision, parsed, str(missing))
    _ensure_source(run, backend, precision)
    target = run.format_dir(fmt, precision)
    with atomic_dir(target) as tmp:
        extra = backend.build(run, precision, tmp, parsed)
        names = {v: backend.artifact_name(v) for v in run.variants()}
        metadata = stamp_exports(run, tmp, names)
        files = {v: {"file": name, "bytes": sum((tmp / f).stat().st_size for f in backend.artifact_files(name)), "metadata": metadata[v]}
                 for v, name in names.items()}
        manifest = Manifest(format=fmt, runtime=backend.runtime, precision=precision, files=files,
                            options=parsed.model_dump(mode="json"), **extra)
        write_json(tmp / MANIFEST, manifest.model_dump(mode="json"))
    info(f"exported {fmt} {precision} to {target}")
    return target


def _ensure_source(run: RunDir, backend: ExportBackend, precision: str, reuse_prepared: bool = True) -> None:
    """Export the format a backend builds from (fp32) first where it is missing and, with `reuse_prepared`, the backend
    has no prepared input of its own."""
    prepared = reuse_prepared and backend.prepared_onnx(run, precision) is not None
    source = backend.starts_from
    if source is not None and not prepared and not (run.format_dir(source, "fp32") / MANIFEST).exists():
        export_run(run.path, source, "fp32")
