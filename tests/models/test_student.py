import pytest
import timm
import torch

from procedge.errors import ProcedgeError
from procedge.models.cost import LayerCost, measure_cost
from procedge.sizing import size_student
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


@pytest.fixture(scope="module")
def lite0():
    return timm.create_model("tf_efficientnet_lite0", pretrained=False)


def test_sizing_picks_most_compute_that_fits(lite0):
    """Within the budget and at least the asked speedup over the teacher (Lite0 at 224 px here), predicted."""
    target = resolve_target("intel-cpu")
    candidates = ("mobilenetv3_small_050", "mobilenetv3_large_100", "resnet50")
    decision = size_student(target, 224, lite0, 224, speedup=1.0, candidates=candidates, timed=False)
    fitting = [c for c in decision.candidates if c.fits]
    assert decision.chosen == max(fitting, key=lambda c: c.gflops).name
    assert all(c.predicted_ms < target.latency_budget_ms and c.predicted_speedup >= 1 for c in fitting)
    assert not next(c for c in decision.candidates if c.name == "resnet50").fits
    assert decision.timed_speedup is None and all(c.timed_ms is None for c in decision.candidates)


def test_sizing_reaches_the_asked_speedup(lite0):
    target = resolve_target("intel-cpu")
    candidates = ("mobilenetv3_small_050", "mobilenetv3_small_100", "mobilenetv3_large_100")
    loose = size_student(target, 224, lite0, 224, speedup=1.0, candidates=candidates, timed=False)
    strict = size_student(target, 224, lite0, 224, speedup=4.0, candidates=candidates, timed=False)
    assert loose.chosen == "mobilenetv3_large_100" and strict.chosen != loose.chosen
    assert strict.predicted_speedup >= 4 and strict.asked_speedup == 4


def test_an_unreachable_speedup_is_an_error_if_asked_and_a_warning_by_default(lite0, capsys):
    target = resolve_target("intel-cpu")
    candidates = ("mobilenetv3_small_050", "resnet18")
    with pytest.raises(ProcedgeError, match=r"no student candidate reaches --speedup 500 \(predicted\); the fastest, "
                                            r"mobilenetv3_small_050 at 224 px, is [0-9.]+x"):
        size_student(target, 224, lite0, 224, speedup=500, speedup_given=True, candidates=candidates, timed=False)
    decision = size_student(target, 224, lite0, 224, speedup=500, candidates=candidates, timed=False)
    assert decision.chosen == "mobilenetv3_small_050" and "the fastest one" in decision.reason
    assert "warning: no student candidate is 500x faster" in capsys.readouterr().err


def test_sizing_times_the_candidates_on_the_targets_runtime_where_it_runs_here(lite0):
    """arm64 runs on ONNX Runtime, installed here: the speedup sizing goes by is measured, not predicted."""
    target = resolve_target("arm64")
    decision = size_student(target, 64, lite0, 128, speedup=2.0, candidates=("mobilenetv3_small_050", "resnet10t"))
    assert all(c.timed_ms > 0 and c.timed_speedup > 0 for c in decision.candidates)
    small = next(c for c in decision.candidates if c.name == "mobilenetv3_small_050")
    assert small.timed_speedup > 2 and decision.teacher_timed_ms > small.timed_ms
    assert decision.timed_speedup == next(c.timed_speedup for c in decision.candidates if c.name == decision.chosen)


def test_sizing_prefers_a_pretrained_student_at_a_size_that_fits(lite0):
    target = resolve_target("intel-cpu")  # 3 ms: Lite0 at 208 px is predicted over it, at 192 px under it
    decision = size_student(target, 224, lite0, 224, speedup=1.0, candidates=("mobilenetv3_small_050", "mobilenetv3_large_100"),
                            pretrained=("tf_efficientnet_lite0",), timed=False)
    assert (decision.chosen, decision.pretrained, decision.input_size) == ("tf_efficientnet_lite0", True, 192)
    assert [c.input_size for c in decision.candidates if c.pretrained] == [224, 208, 192, 176, 160, 144, 128, 112, 96, 80, 64]
    assert not next(c for c in decision.candidates if c.pretrained and c.input_size == 224).fits


def test_sizing_falls_back_to_random_weights_when_no_pretrained_student_fits(lite0):
    target = resolve_target("intel-cpu")
    decision = size_student(target, 224, lite0, 224, speedup=1.0, candidates=("mobilenetv3_small_050",), pretrained=("resnet50",),
                            pretrained_at=(224,), timed=False)
    assert (decision.chosen, decision.pretrained, decision.input_size) == ("mobilenetv3_small_050", False, 224)


def test_a_named_student_is_not_sized_but_its_speedup_is_recorded(lite0, capsys):
    from procedge.sizing import given_student_speed

    decision = given_student_speed(resolve_target("intel-cpu"), "resnet18", 224, False, lite0, 224, 4.0, False, timed=False)
    assert decision.chosen == "resnet18" and decision.predicted_speedup < 1 and "not sized" in decision.reason
    assert capsys.readouterr().err == ""  # the default speedup: bench flags it, measured
    given_student_speed(resolve_target("intel-cpu"), "resnet18", 224, False, lite0, 224, 4.0, True, timed=False)
    assert "below the asked 4x" in capsys.readouterr().err
