"""ONNX: torch.onnx export (opset 17, static batch-1 shapes), onnxsim, and a parity check on real images."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np

from procedge.errors import ProcedgeError
from procedge.export.base import ExportBackend, ExportOptions, backend_registry
from procedge.progress import progress_bar
from procedge.run import RunDir
from procedge.runtime import network_of
from procedge.runtime.onnxruntime import ort_runner

OPSET = 17
PARITY_IMAGES = 200
# Ops whose presence would mean a dynamic or looping graph (not allowed in a deploy graph).
DYNAMIC_OPS = {"Loop", "Scan", "If", "NonZero", "Unique", "Where", "TopK", "NonMaxSuppression"}


def export_onnx(net, input_shape: tuple[int, ...], path: Path) -> None:
    """Export (static `input_shape`), simplify with onnxsim and validate one network into `path`."""
    import onnx
    import onnxsim
    import torch

    dummy = torch.rand(*input_shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (dummy,), str(path), opset_version=OPSET, dynamo=False,
                          input_names=["input"], output_names=["logits"])
    model = onnx.load(str(path))
    simplified, ok = onnxsim.simplify(model)
    if not ok:
        raise ProcedgeError(f"onnxsim could not validate the simplified {path.name}; report this with the run's config.yaml")
    onnx.checker.check_model(simplified)
    check_static(simplified, path.name)
    onnx.save(simplified, str(path))


def check_static(model, name: str) -> None:
    """One image input with fixed dimensions and no loop or data-dependent op."""
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        raise ProcedgeError(f"{name} has {len(inputs)} graph inputs; a deploy graph takes the image alone")
    dims = inputs[0].type.tensor_type.shape.dim
    if any(not d.HasField("dim_value") for d in dims):
        raise ProcedgeError(f"{name} has a dynamic input dimension; deploy graphs use static shapes")
    dynamic = sorted({n.op_type for n in model.graph.node} & DYNAMIC_OPS)
    if dynamic:
        raise ProcedgeError(f"{name} contains {dynamic[0]} ops; the deploy graph must be static")


@backend_registry.register("onnx")
class OnnxBackend(ExportBackend):
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    runtime = "onnxruntime"
    starts_from = None  # from the trained run
    suffix = ".onnx"

    def check_available(self) -> None:
        super().check_available()
        try:
            import onnxsim  # noqa: F401
            import torch  # noqa: F401
        except ImportError as exc:
            raise ProcedgeError("ONNX export needs PyTorch and onnxsim: pip install procedge (the full install)") from exc

    def build(self, run: RunDir, precision: str, out_dir: Path, options: ExportOptions) -> dict:
        import torch

        from procedge.models.cost import measure_cost
        from procedge.models.load import load_trained

        trained = load_trained(run)
        heldout = run.load_heldout()
        variants = run.variants()
        nets = {v: trained.teacher_net() if v == "teacher" else trained.student_net(v) for v in variants}
        sizes = {v: getattr(trained.config, network_of(v)).input_size for v in variants}
        parity, cost = {}, {}
        with progress_bar("exporting ONNX (+ onnxsim, parity)", len(variants)) as advance:
            for variant in variants:
                path = out_dir / f"{variant}.onnx"
                export_onnx(nets[variant], (1, 3, sizes[variant], sizes[variant]), path)
                images = heldout[network_of(variant)][:PARITY_IMAGES]
                parity[variant] = onnx_parity(nets[variant], path, images)
                layers = measure_cost(nets[variant], sizes[variant]).layers
                cost[variant] = [[layer.flops, layer.elements] for layer in layers]
                advance(1)
        return {"opset": OPSET, "input_sizes": sizes, "parity": parity, "layer_costs": cost,
                "torch": torch.__version__}


def onnx_parity(net, path: Path, images_uint8: np.ndarray) -> dict:
    """Max abs logit difference and top-1 agreement, ONNX Runtime vs PyTorch, on real held-out images."""
    import torch

    run, _ = ort_runner(path)
    x = images_uint8.astype(np.float32) / 255.0
    with torch.no_grad():
        reference = net(torch.from_numpy(x)).numpy()
    exported = np.concatenate([run(x[i:i + 1]) for i in range(len(x))])
    return {"images": len(x), "max_abs_diff": float(np.abs(exported - reference).max()),
            "top1_agreement": float((exported.argmax(1) == reference.argmax(1)).mean())}
