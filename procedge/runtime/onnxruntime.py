"""ONNX Runtime: sessions with every graph optimisation on the target's execution providers; and the error line,
naming the graph node, that every runtime reading ONNX gives."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from procedge.errors import ProcedgeError
from procedge.runtime.base import ModelRuntime, Runner, runtime_registry
from procedge.targets import Runtime


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


@runtime_registry.register("onnxruntime")
class OnnxRuntime(ModelRuntime):
    module = "onnxruntime"
    install_hint = "pip install onnxruntime"

    def load(self, path: Path, precision: str = "fp32", settings: Runtime | None = None) -> tuple[Runner, dict]:
        return ort_runner(path, settings)
