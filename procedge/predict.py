"""`procedge predict`: the top-k classes of images from an exported student, through its runtime alone (no PyTorch).

The model comes from a run's exports (`--run`, with a format and precision) or a bare exported file
(`--model`); either way its class names, input size and preprocessing come from the metadata stored
with it (`procedge.metadata`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from procedge.errors import ProcedgeError
from procedge.metadata import read_metadata
from procedge.run import RunDir
from procedge.runtime import MANIFEST, NotBuiltHere, Runner, discover_exports, load_export, read_manifest, runtime_registry

SUFFIX_RUNTIMES = {".onnx": "onnxruntime", ".xml": "openvino", ".engine": "tensorrt"}


def load_image(path: Path, size: int) -> np.ndarray:
    """(1, 3, size, size) float32 in [0, 1]: RGB, shorter side resized to `size`, centre crop (as training read it)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = size / min(w, h)
            im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
            left, top = (im.size[0] - size) // 2, (im.size[1] - size) // 2
            array = np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ProcedgeError(f"cannot read {path} as an image ({type(exc).__name__}); pass JPEG/PNG/BMP files") from exc
    return np.ascontiguousarray(array.transpose(2, 0, 1)[None])


def _from_run(run_dir: Path, fmt: str | None, precision: str | None) -> tuple[Runner, dict, str]:
    run = RunDir(run_dir).require_trained()
    exports = [e for e in discover_exports(run, [fmt] if fmt else None) if precision is None or e[1] == precision]
    if not exports:
        asked = " ".join(f for f in (fmt, precision) if f) or "any format"
        raise ProcedgeError(f"{run_dir} has no {asked} export; run `procedge export --run {run_dir}"
                            + (f" --format {fmt}" if fmt else "") + (f" --precision {precision}" if precision else "") + "` first")
    if fmt is None and precision is None:  # prefer the target's own backend and precision
        from procedge.config import RunConfig

        target = RunConfig.load(run.config).target
        exports.sort(key=lambda e: (e[0] != target.backend, e[1] != target.precision))
    chosen_fmt, chosen_precision, directory = exports[0]
    try:
        runner, _, _ = load_export(directory, "student", None)
    except NotBuiltHere as exc:
        raise ProcedgeError(f"the {chosen_fmt} {chosen_precision} export of {run_dir} is a device kit: {exc}") from exc
    metadata = read_manifest(directory).files["student"].metadata
    if not metadata:
        raise ProcedgeError(f"the {chosen_fmt} {chosen_precision} export of {run_dir} was made before exports carried their class names "
                            f"and input size; re-export with `procedge export --run {run_dir} --format {chosen_fmt} --precision {chosen_precision}`")
    return runner, metadata, f"{chosen_fmt} {chosen_precision}"


def _from_file(model: Path) -> tuple[Runner, dict, str]:
    if not model.is_file():
        raise ProcedgeError(f"model file {model} does not exist; pass an exported .onnx, .xml or .engine file")
    name = SUFFIX_RUNTIMES.get(model.suffix)
    if name is None:
        raise ProcedgeError(f"{model.name}: unknown model type; pass an exported .onnx (ONNX Runtime), .xml (OpenVINO) or .engine (TensorRT)")
    metadata = read_metadata(model)
    if "classes" not in metadata:
        raise ProcedgeError(f"{model.name} carries no procedge metadata (class names, input size); export it with "
                            "`procedge export` or pass --run with its run directory")
    runtime = runtime_registry.get(name)()
    runtime.check_available()
    precision = read_manifest(model.parent).precision if (model.parent / MANIFEST).exists() else "fp32"
    runner, _ = runtime.load(model, precision)
    return runner, metadata, name


def predict(images: list[Path], run_dir: Path | None = None, model: Path | None = None, fmt: str | None = None,
            precision: str | None = None, top_k: int = 5) -> dict:
    """Top-k classes and softmax scores for each image, with the model they came from."""
    if (run_dir is None) == (model is None):
        raise ProcedgeError("pass exactly one of --run DIR (a run's export) and --model FILE (an exported model file)")
    if not images:
        raise ProcedgeError("no images given; pass one or more image files after the options")
    runner, metadata, used = _from_run(run_dir, fmt, precision) if run_dir is not None else _from_file(model)
    classes, size = json.loads(metadata["classes"]), int(metadata["input_size"])
    results = []
    for path in images:
        logits = runner(load_image(path, size))[0].astype(np.float64)
        scores = np.exp(logits - logits.max())
        scores /= scores.sum()
        best = np.argsort(-scores)[:top_k]
        results.append({"image": str(path), "top": [{"class": classes[i], "index": int(i), "score": float(scores[i])} for i in best]})
    return {"model": used, "student": metadata.get("model"), "method": metadata.get("method"), "predictions": results}
