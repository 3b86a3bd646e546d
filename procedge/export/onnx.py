"""ONNX: torch.onnx export (opset 17, static batch-1 shapes), onnxsim, and a parity check on real images."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np

from procedge.errors import ProcedgeError
from procedge.export.base import ExportBackend, Runner, backend_registry, network_of
from procedge.progress import progress_bar
from procedge.run import RunDir
from procedge.targets import Runtime

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


def ort_runner(path: Path, runtime: Runtime | None = None) -> tuple[Runner, dict]:
    """An ONNX Runtime session with every graph optimisation, on the target's execution providers
    (those this onnxruntime build has; the CPU provider always last)."""
    import onnxruntime as ort

    runtime = runtime or Runtime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if runtime.threads:
        options.intra_op_num_threads = runtime.threads
    available = ort.get_available_providers()
    requested = list(dict.fromkeys([*runtime.execution_providers, "CPUExecutionProvider"]))
    chosen = [p for p in requested if p in available]
    provider_options = []
    for provider in chosen:
        if provider == "XnnpackExecutionProvider":
            # XNNPACK brings its own thread pool; ORT's pool then runs one thread, without spinning, so they don't compete.
            provider_options.append({"intra_op_num_threads": str(runtime.threads or os.cpu_count() or 1)})
            options.intra_op_num_threads = 1
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        else:
            provider_options.append({})
    try:
        session = ort.InferenceSession(str(path), options, providers=chosen, provider_options=provider_options)
    except Exception as exc:  # onnxruntime raises its own exception types; the first line names the node
        raise ProcedgeError(f"ONNX Runtime cannot load {path.name}: {located_error(exc, Path(path))}; "
                            "that op needs a newer onnxruntime or a change to the model") from exc
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {name: x})[0]

    settings = {"runtime": f"onnxruntime {ort.__version__}", "providers": session.get_providers(),
                "intra_op_threads": runtime.threads or "default"}
    missing = [p for p in requested if p not in available]
    if missing:
        settings["providers_not_in_this_build"] = missing
    return run, settings


def first_line(exc: BaseException) -> str:
    """A runtime error's first line, without ONNX Runtime's "... Load model from PATH failed:" preamble."""
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return text.split(" failed:", 1)[-1].strip()[:300]


COMMON_OPS = {"Conv", "Add", "Mul", "Relu"}  # ops too common to be the one a runtime's error is about


def located_error(exc: BaseException, onnx_path: Path) -> str:
    """The error's first line, led by the graph node whose op it names (runtimes often name only the op)."""
    import onnx

    message = " ".join(str(exc).split())
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    node = next((n for n in graph.node if n.op_type not in COMMON_OPS and re.search(rf"\b{re.escape(n.op_type)}\b", message)), None)
    where = f"node {node.name or '(unnamed)'} (op {node.domain + '.' if node.domain else ''}{node.op_type}): " if node else ""
    return where + first_line(exc)


@backend_registry.register("onnx")
class OnnxBackend(ExportBackend):
    precisions: ClassVar[tuple[str, ...]] = ("fp32",)
    runtime_module = "onnxruntime"
    install_hint = "pip install onnxruntime"
    suffix = ".onnx"

    def check_available(self) -> None:
        super().check_available()
        try:
            import onnxsim  # noqa: F401
            import torch  # noqa: F401
        except ImportError as exc:
            raise ProcedgeError("ONNX export needs PyTorch and onnxsim: pip install procedge (the full install)") from exc

    def build(self, run: RunDir, precision: str, out_dir: Path, calib_size: int | None = None,
              max_accuracy_drop: float | None = None) -> dict:
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

    def load(self, path: Path, precision: str = "fp32", runtime: Runtime | None = None) -> tuple[Runner, dict]:
        return ort_runner(path, runtime)


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
