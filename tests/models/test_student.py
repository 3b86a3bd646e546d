import pytest
import timm
import torch

from procedge.models.cost import LayerCost, measure_cost
from procedge.models.student import size_student
from procedge.targets import resolve_target


def test_cost_counts_resnet18_flops():
    cost = measure_cost(timm.create_model("resnet18", pretrained=False), 224)
    assert cost.flops / 1e9 == pytest.approx(3.64, rel=0.02)  # 1.82 GMACs
    per_layer = {layer.name: layer.flops for layer in cost.layers}
    assert per_layer["conv1"] == 2 * 64 * 112 * 112 * 3 * 7 * 7 and per_layer["fc"] == 2 * 512 * 1000  # by module name


def test_cost_counts_matmuls_outside_leaf_modules():
    """Products written in a module's forward (as in attention: q @ k^T) belong to no leaf layer: counted all the same."""

    class Gram(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Conv2d(3, 8, 1)

        def forward(self, x):
            tokens = self.embed(x).flatten(2)  # (1, 8, HW)
            return tokens.transpose(1, 2) @ tokens  # (1, HW, HW): 2 * HW * HW * 8 FLOPs

    cost = measure_cost(Gram(), 16)
    assert cost.layers[-1] == LayerCost("(ops outside leaf modules)", 2 * 256 * 256 * 8, 0.0)
    assert cost.flops == 2 * 256 * 3 * 8 + 2 * 256 * 256 * 8


def test_cost_counts_fused_attention_of_a_vit():
    """timm's ViTs call scaled_dot_product_attention; its products count as if written out (q @ k^T, attn @ v)."""
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False)
    fused = measure_cost(model, 224).flops
    for block in model.blocks:
        block.attn.fused_attn = False  # timm's explicit q @ k^T, softmax, attn @ v
    assert fused == measure_cost(model, 224).flops == pytest.approx(2.507e9, rel=0.01)


def test_prediction_scales_with_hardware():
    cost = measure_cost(timm.create_model("mobilenetv3_small_100", pretrained=False), 224)
    nano, agx = resolve_target("jetson-orin-nano"), resolve_target("jetson-agx-orin")
    assert cost.predict_ms(agx.hardware, "fp16") < cost.predict_ms(nano.hardware, "fp16")
    cpu = resolve_target("intel-cpu").hardware
    assert cost.predict_ms(cpu, "int8") < cost.predict_ms(cpu, "fp32")


def test_sizing_picks_most_compute_that_fits():
    target = resolve_target("intel-cpu")
    candidates = ("mobilenetv3_small_050", "mobilenetv3_large_100", "resnet50")
    decision = size_student(target, 224, candidates=candidates)
    fitting = [c for c in decision.candidates if c.fits]
    assert decision.chosen == max(fitting, key=lambda c: c.gflops).name
    assert all(c.predicted_ms < target.latency_budget_ms for c in fitting)
    assert not next(c for c in decision.candidates if c.name == "resnet50").fits


def test_sizing_keeps_the_student_faster_than_the_teacher():
    target = resolve_target("intel-cpu")
    decision = size_student(target, 64, teacher_ms=0.3, candidates=("mobilenetv3_small_050", "resnet18"))
    assert decision.chosen == "mobilenetv3_small_050"


def test_sizing_prefers_a_pretrained_student_at_a_size_that_fits():
    target = resolve_target("intel-cpu")  # 3 ms: Lite0 at 224 px is predicted over it, at 192 px under it
    decision = size_student(target, 224, candidates=("mobilenetv3_small_050", "mobilenetv3_large_100"),
                            pretrained=("tf_efficientnet_lite0",))
    assert (decision.chosen, decision.pretrained, decision.input_size) == ("tf_efficientnet_lite0", True, 192)
    assert [c.input_size for c in decision.candidates if c.pretrained] == [224, 192, 160, 128]
    assert not next(c for c in decision.candidates if c.pretrained and c.input_size == 224).fits


def test_sizing_falls_back_to_random_weights_when_no_pretrained_student_fits():
    target = resolve_target("intel-cpu")
    decision = size_student(target, 224, candidates=("mobilenetv3_small_050",), pretrained=("resnet50",))
    assert (decision.chosen, decision.pretrained, decision.input_size) == ("mobilenetv3_small_050", False, 224)
