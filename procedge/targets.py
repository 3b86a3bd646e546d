"""Hardware profiles: one YAML file per target in `targets/`, validated on load."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError

from procedge.errors import ProcedgeError
from procedge.resources import Traversable, resource
from procedge.schema import StrictModel, first_error


Precision = Literal["fp32", "fp16", "int8"]


class _Strict(StrictModel):
    model_config = ConfigDict(frozen=True)


class Hardware(_Strict):
    """The figures the latency predictor needs; each YAML cites its public source."""

    name: str
    cores: int = Field(gt=0)
    peak_gflops: dict[Precision, float] = Field(description="peak dense GFLOP/s (GOP/s for int8)")
    memory_bandwidth_gbs: float = Field(gt=0)
    efficiency: float = Field(gt=0, le=1, description="fraction of peak a batch-1 convnet layer reaches")
    layer_overhead_us: float = Field(ge=0, description="fixed cost per layer (kernel launch, op dispatch)")


class Runtime(_Strict):
    threads: int | None = Field(default=None, gt=0)
    execution_providers: list[str] = ["CPUExecutionProvider"]


class TargetProfile(_Strict):
    name: str
    description: str
    backend: str  # an export format (`procedge export --format`): checked against the export registry by `procedge.export.check_target`
    precision: Precision
    latency_budget_ms: float = Field(gt=0)
    input_size: int = Field(ge=16, le=1024)
    aliases: list[str] = []
    hardware: Hardware
    runtime: Runtime = Runtime()


def load_profile(path: Path | Traversable) -> TargetProfile:
    """Load and validate one profile file; a bad one raises a one-line ProcedgeError naming the field."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ProcedgeError(f"cannot read target profile {path}: {exc}; fix the YAML syntax") from exc
    if not isinstance(raw, dict):
        raise ProcedgeError(f"target profile {path} is not a YAML mapping; see targets/intel-cpu.yaml for the format")
    try:
        return TargetProfile.model_validate(raw)
    except ValidationError as exc:
        raise ProcedgeError(f"target profile {path}: {first_error(exc)}; fix it and retry") from exc


def builtin_files() -> dict[str, Traversable]:
    """The profile files shipped in the package (`targets/*.yaml` of the source tree), by profile name."""
    files = sorted((f for f in resource("targets").iterdir() if f.name.endswith(".yaml")), key=lambda f: f.name)
    return {load_profile(f).name: f for f in files}


def builtin_profiles() -> dict[str, TargetProfile]:
    """The profiles shipped in the package, by name."""
    return {name: load_profile(f) for name, f in builtin_files().items()}


def profile_file(name_or_file: str) -> Path | Traversable:
    """The file a target comes from: a built-in profile by name or alias (e.g. `jetson-orin`), or a profile YAML file."""
    if name_or_file.endswith((".yaml", ".yml")):
        if not Path(name_or_file).is_file():
            raise ProcedgeError(f"target profile file {name_or_file} does not exist; pass a built-in target name or an existing YAML file")
        return Path(name_or_file)
    files = builtin_files()
    for name, f in files.items():
        if name_or_file == name or name_or_file in load_profile(f).aliases:
            return f
    raise ProcedgeError(f"unknown target {name_or_file!r}; choose one of: {', '.join(files)} (or pass a profile .yaml file)")


def resolve_target(name_or_file: str) -> TargetProfile:
    """A built-in target by name or alias, or a profile YAML file, loaded and validated."""
    return load_profile(profile_file(name_or_file))
