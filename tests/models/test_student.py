import pytest
import timm

from procedge.models.cost import measure_cost
from procedge.models.student import size_student
from procedge.targets import resolve_target


def test_cost_counts_resnet18_flops():
    cost = measure_cost(timm.create_model("resnet18", pretrained=False), 224)
    assert cost.flops / 1e9 == pytest.approx(3.64, rel=0.02)  # 1.82 GMACs


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
