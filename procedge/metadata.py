"""What a device application needs to call an exported model, stored in the model file itself.

ONNX files carry it as `metadata_props`, OpenVINO IR as `rt_info` under `procedge`, and every export's
manifest.json repeats it (a TensorRT engine has no place of its own for it). Every value is a string;
lists and numbers are JSON. Torch-free: bench and predict read it on the device.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from procedge.errors import ProcedgeError
from procedge.run import RunDir

PREPROCESSING = ("RGB; resize the shorter side to input_size (bilinear) and centre-crop to input_size x input_size; "
                 "float32 in [0, 1]; the network normalises with mean/std inside the graph")


def procedge_version() -> str:
    try:
        return version("procedge")
    except PackageNotFoundError:  # a bare checkout on sys.path
        return "unknown"


def run_metadata(run: RunDir, variant: str) -> dict[str, str]:
    """The metadata of one exported network of a trained run (`teacher` or a student variant)."""
    from procedge.config import RunConfig

    config = RunConfig.load(run.config)
    metrics = run.read_metrics()
    net = config.teacher if variant == "teacher" else config.student
    return {
        "procedge_version": procedge_version(),
        "variant": variant,
        "model": net.name,
        "classes": json.dumps(metrics["classes"]),
        "input_size": str(net.input_size),
        "layout": "NCHW",
        "input_name": "input",
        "input_range": "[0, 1]",
        "mean": json.dumps(list(net.mean)),
        "std": json.dumps(list(net.std)),
        "preprocessing": PREPROCESSING,
        "teacher": config.teacher.name,
        "method": "linear probe on the frozen teacher" if variant == "teacher" else config.method,
        "target": config.target.name,
    }


def write_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Store `metadata` in an exported model file (ONNX or OpenVINO IR), in place; other files are left alone."""
    if path.suffix == ".onnx":
        import onnx

        model = onnx.load(str(path))
        kept = [p for p in model.metadata_props if p.key not in metadata]
        del model.metadata_props[:]
        model.metadata_props.extend(kept)
        for key, value in metadata.items():
            model.metadata_props.add(key=key, value=value)
        onnx.save(model, str(path))
    elif path.suffix == ".xml":
        import openvino as ov

        model = ov.Core().read_model(str(path))
        for key, value in metadata.items():
            model.set_rt_info(value, ["procedge", key])
        tmp = path.with_name(f"{path.stem}.meta.xml")
        ov.save_model(model, str(tmp), compress_to_fp16=False)  # weights already at their precision
        tmp.replace(path)
        tmp.with_suffix(".bin").replace(path.with_suffix(".bin"))


def stamp_exports(run: RunDir, directory: Path, files: dict[str, str]) -> dict[str, dict[str, str]]:
    """Write each variant's metadata into its file (`files`: variant -> file name in `directory`); returns them."""
    stamped = {variant: run_metadata(run, variant) for variant in files}
    for variant, name in files.items():
        write_metadata(directory / name, stamped[variant])
    return stamped


def read_metadata(path: Path) -> dict[str, str]:
    """The metadata stored in a model file, or in the manifest.json beside it (TensorRT engines)."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if path.suffix == ".xml":
        import openvino as ov

        model = ov.Core().read_model(str(path))
        if not model.has_rt_info(["procedge"]):
            return {}
        return {key: value.astype(str) for key, value in model.get_rt_info(["procedge"]).astype(dict).items()}
    manifest = path.parent / "manifest.json"
    if manifest.exists():
        files = json.loads(manifest.read_text()).get("files", {}).values()
        return next((f.get("metadata", {}) for f in files if f.get("file") == path.name), {})
    raise ProcedgeError(f"{path.name} carries no metadata and has no manifest.json beside it; pass --run with its run directory")
