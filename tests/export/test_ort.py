"""ONNX Runtime backend: the target's execution providers (XNNPACK on ARM) and one-line load errors."""

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from procedge.errors import ProcedgeError
from procedge.runtime.onnxruntime import ort_runner
from procedge.targets import Runtime, resolve_target


def _relu_graph(path):
    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["logits"], name="relu_0")], "relu",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])])
    path.write_bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString())
    return path


def test_arm_profile_asks_for_xnnpack_and_runs_on_what_this_build_has(tmp_path):
    runtime = resolve_target("arm64").runtime
    assert runtime.execution_providers == ["XnnpackExecutionProvider", "CPUExecutionProvider"] and runtime.threads == 4
    run, settings = ort_runner(_relu_graph(tmp_path / "relu.onnx"), runtime)
    assert np.array_equal(run(np.array([[-1, 2, -3, 4]], np.float32)), [[0, 2, 0, 4]])
    if "XnnpackExecutionProvider" in ort.get_available_providers():
        assert settings["providers"][0] == "XnnpackExecutionProvider"
    else:  # the x86 PyPI build: the CPU provider, and the report says XNNPACK was asked for but absent
        assert settings["providers"] == ["CPUExecutionProvider"]
        assert settings["providers_not_in_this_build"] == ["XnnpackExecutionProvider"]


def test_threads_setting_reaches_the_session(tmp_path):
    _, settings = ort_runner(_relu_graph(tmp_path / "relu.onnx"), Runtime(threads=1))
    assert settings["intra_op_threads"] == 1 and settings["providers"] == ["CPUExecutionProvider"]


def test_an_op_onnx_runtime_lacks_is_named(custom_op_onnx):
    with pytest.raises(ProcedgeError, match=r"ONNX Runtime cannot load custom.onnx: node fancy_pool_1 \(op com.example.FancyPool\): .*com.example:FancyPool\(-1\) is not a registered") as info:
        ort_runner(custom_op_onnx)
    assert "\n" not in str(info.value)
