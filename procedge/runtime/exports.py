"""Exports on disk, as bench and predict read them: the manifest of each format directory, and a runner per model file
through the runtime the manifest names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from procedge.errors import ProcedgeError
from procedge.run import RunDir, damaged
from procedge.runtime.base import Runner, runtime_registry

MANIFEST = "manifest.json"  # an export built here
DEVICE_KIT = "device_kit.json"  # an export to finish on the device (TensorRT engines built there)


class ExportedFile(BaseModel):
    file: str
    bytes: int | None = None  # absent in a device kit: the engine is not built yet
    metadata: dict[str, str] = {}


class Manifest(BaseModel):
    """What a format directory holds: each deployed variant's file, the runtime that loads them, and the backend's own
    record (versions, calibration, parity checks) as extra fields."""

    model_config = ConfigDict(extra="allow")

    format: str
    runtime: str
    precision: str
    status: Literal["built", "device kit"] = "built"
    files: dict[str, ExportedFile]


def read_manifest(directory: Path) -> Manifest:
    """The directory's manifest (or its device kit's); one line naming the file and the re-export where it is unusable."""
    path = directory / MANIFEST if (directory / MANIFEST).exists() or not (directory / DEVICE_KIT).exists() else directory / DEVICE_KIT
    try:
        return Manifest.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError, ValidationError) as exc:
        fmt, precision = directory.parent.name, directory.name
        raise damaged(path, exc, f"re-export with `procedge export --run {directory.parents[2]} --format {fmt} --precision {precision}`") from exc


def discover_exports(run: RunDir, formats: list[str] | None) -> list[tuple[str, str, Path]]:
    """Every finished export (manifest.json) and device kit (engines still to be built on the device)."""
    found = []
    for directory in sorted(run.exports.glob("*/*")):
        fmt, precision = directory.parent.name, directory.name
        finished = (directory / MANIFEST).exists() or (directory / DEVICE_KIT).exists()
        if finished and (formats is None or fmt in formats):
            found.append((fmt, precision, directory))
    return found


class NotBuiltHere(ProcedgeError):
    """A device kit: the export is finished on the device (TensorRT engines), so this machine has nothing to time."""


def load_export(directory: Path, variant: str, runtime) -> tuple[Runner, dict, float]:
    """Runner, runtime settings and size (MB) of one exported model; a device kit explains what to run instead."""
    manifest = read_manifest(directory)
    if manifest.status == "device kit":
        raise NotBuiltHere(f"run `{manifest.on_device}` on the device")
    model_runtime = runtime_registry.get(manifest.runtime)()
    model_runtime.check_available()
    path = directory / manifest.files[variant].file
    if not path.exists():
        raise ProcedgeError(f"{path} is missing beside its manifest; re-export with `procedge export --run {directory.parents[2]} "
                            f"--format {manifest.format} --precision {manifest.precision}`")
    model_runtime.check_compatible(manifest.model_dump(), path)
    runner, settings = model_runtime.load(path, manifest.precision, runtime)
    return runner, settings, (manifest.files[variant].bytes or 0) / 1e6
