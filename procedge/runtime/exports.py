"""Exports on disk, as bench and predict read them: the manifest of each format directory, and a runner per model file
through the runtime the manifest names."""

from __future__ import annotations

import json
from pathlib import Path

from procedge.errors import ProcedgeError
from procedge.io import read_json
from procedge.run import RunDir, damaged
from procedge.runtime.base import Runner, runtime_registry


def read_manifest(directory: Path) -> dict:
    path = directory / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
        if not isinstance(manifest, dict) or "files" not in manifest or "format" not in manifest:
            raise ValueError("no files/format")
        return manifest
    except (OSError, ValueError) as exc:
        fmt, precision = directory.parent.name, directory.name
        raise damaged(path, exc, f"re-export with `procedge export --run {directory.parents[2]} --format {fmt} --precision {precision}`") from exc


def discover_exports(run: RunDir, formats: list[str] | None) -> list[tuple[str, str, Path]]:
    """Every finished export (manifest.json) and device kit (engines still to be built on the device)."""
    found = []
    for directory in sorted(run.exports.glob("*/*")):
        fmt, precision = directory.parent.name, directory.name
        finished = (directory / "manifest.json").exists() or (directory / "device_kit.json").exists()
        if finished and (formats is None or fmt in formats):
            found.append((fmt, precision, directory))
    return found


class NotBuiltHere(ProcedgeError):
    """A device kit: the export is finished on the device (TensorRT engines), so this machine has nothing to time."""


def load_export(directory: Path, variant: str, runtime) -> tuple[Runner, dict, float]:
    """Runner, runtime settings and size (MB) of one exported model; a device kit explains what to run instead."""
    kit = directory / "device_kit.json"
    if not (directory / "manifest.json").exists() and kit.exists():
        raise NotBuiltHere(f"run `{read_json(kit)['on_device']}` on the device")
    manifest = read_manifest(directory)
    if "runtime" not in manifest:
        raise ProcedgeError(f"{directory} was exported before manifests named their runtime; re-export with `procedge export --run "
                            f"{directory.parents[2]} --format {manifest['format']} --precision {manifest['precision']}`")
    runtime_ = runtime_registry.get(manifest["runtime"])()
    runtime_.check_available()
    path = directory / manifest["files"][variant]["file"]
    if not path.exists():
        raise ProcedgeError(f"{path} is missing beside its manifest; re-export with `procedge export --run {directory.parents[2]} "
                            f"--format {manifest['format']} --precision {manifest['precision']}`")
    runtime_.check_compatible(manifest, path)
    runner, settings = runtime_.load(path, manifest["precision"], runtime)
    return runner, settings, manifest["files"][variant]["bytes"] / 1e6
