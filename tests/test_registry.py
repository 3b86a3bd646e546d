"""Adding a method or a backend is one class and one decorator: toys defined in this file alone go distill -> export -> bench."""

import json
import shutil

import pytest
import torch
from pydantic import Field

from procedge.export import ExportBackend, backend_registry
from procedge.methods import DistillMethod, MethodConfig, method_registry
from procedge.registry import Registry
from procedge.run import RunDir
from test_cli import run_cli


class ShrinkConfig(MethodConfig):
    w_ce: float = Field(1.0, ge=0)
    w_shrink: float = Field(0.01, ge=0, description="mean square of the pooled feature (label-free)")


@method_registry.register("toy-shrink")
class ToyShrink(DistillMethod):
    """Cross-entropy plus a label-free pull of the pooled feature towards 0: the head and the weights come from the base."""

    Config = ShrinkConfig

    def losses(self, student, teacher, labels):
        logits = self.classify(student.final)
        return {"ce": self.cross_entropy(logits, labels), "shrink": student.final.mean((2, 3)).pow(2).mean()}


@backend_registry.register("toy-copy")
class ToyCopy(ExportBackend):
    """The fp32 ONNX copied as it is and run by ONNX Runtime."""

    runtime = "onnxruntime"
    precisions = ("fp32",)
    suffix = ".onnx"

    def build(self, run, precision, out_dir, options):
        for variant in run.variants():
            shutil.copy(run.format_dir("onnx", "fp32") / f"{variant}.onnx", out_dir / f"{variant}.onnx")
        return {"copied_from": "export/onnx/fp32"}


def test_a_registered_class_learns_its_name():
    registry: Registry[type] = Registry("thing")

    @registry.register("widget")
    class Widget:
        pass

    assert registry.get("widget") is Widget and Widget.name == "widget" and ToyCopy.name == "toy-copy"
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("widget")(Widget)


@pytest.mark.slow
def test_a_toy_method_and_a_toy_backend_go_through_distill_export_bench(tmp_path):
    out = tmp_path / "toy"
    result = run_cli("distill", "--target", "intel-cpu", "--student", "resnet10t", "--teacher-size", "32", "--student-size", "32",
                     "--teacher-views", "0", "--epochs", "1", "--labels-per-class", "20", "--method", "toy-shrink", "--out", out)
    assert result.exit_code == 0, result.output
    run = RunDir(out)
    history = run.read_metrics()["history"]
    assert {"loss_ce", "loss_shrink"} <= set(history[0]) and torch.isfinite(torch.tensor(history[0]["loss_shrink"]))
    assert run_cli("export", "--run", out, "--format", "toy-copy").exit_code == 0
    assert json.loads((run.format_dir("toy-copy", "fp32") / "manifest.json").read_text())["copied_from"] == "export/onnx/fp32"
    result = run_cli("bench", "--run", out, "--format", "toy-copy", "--quick")
    assert result.exit_code == 0, result.output
    rows = json.loads(run.bench_json.read_text())["rows"]
    assert {(r["model"], r["format"], r["status"]) for r in rows} == {("student", "toy-copy", "ok"), ("teacher", "toy-copy", "ok")}
