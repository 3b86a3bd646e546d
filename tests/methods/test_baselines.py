"""The baselines every comparison includes (no KD, FitNets, the inverted projection), on real MNIST images and the real teacher."""

import pytest
import torch

from procedge.data import load_embedded_mnist, to_model_input
from procedge.methods import FeatureDims, StudentFeatures, create_method, method_registry
from procedge.models.student import create_backbone
from procedge.models.teacher import EMBEDDED_TEACHER, FrozenTeacher, TeacherOutput, create_teacher_model

pytestmark = pytest.mark.usefixtures("one_thread")

# Lite0 blocks.4 / blocks.6 channels, pooled width and ImageNet classes; resnet10t's last map; MNIST's classes.
DIMS = FeatureDims([112, 320], 1280, 1000, 512, 10)
VARIANTS = {
    "none": ("none", {}),
    "fitnets": ("fitnets", {}),
    "inverted-projection": ("inverted-projection", {}),
    "inverted-projection-teacher-free": ("inverted-projection", {"teacher_free": True, "rank": 4}),
}


@pytest.fixture(scope="module")
def mnist():
    data = load_embedded_mnist(0.2, 0)
    return data.train.images[:32], data.train.labels[:32], data.train.images[32:64]


@pytest.fixture(scope="module")
def teacher_outputs(mnist):
    """The real teacher's outputs on the 32 training images, and on 32 other images."""
    teacher = FrozenTeacher(create_teacher_model(EMBEDDED_TEACHER, None), ["blocks.4", "blocks.6"])
    with torch.no_grad():
        return [teacher(to_model_input(x, 64, (0.5,) * 3, (0.5,) * 3)) for x in (mnist[0], mnist[2])]


def build(variant: str):
    torch.manual_seed(0)
    name, options = VARIANTS[variant]
    return create_backbone("resnet10t"), create_method(name, options, DIMS)


def student_features(backbone, images) -> StudentFeatures:
    return StudentFeatures(backbone.forward_features(to_model_input(images, 64)), [])


def test_baselines_are_registered():
    assert {"none", "fitnets", "inverted-projection"} <= set(method_registry.names())


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_loss_term_decreases_on_real_images(variant, mnist, teacher_outputs):
    images, labels, _ = mnist
    backbone, method = build(variant)
    opt = torch.optim.AdamW(list(backbone.parameters()) + list(method.parameters()), 1e-3)
    weights = method.loss_weights()
    history = []
    for _ in range(4):
        terms = method.losses(student_features(backbone, images), teacher_outputs[0], labels)
        assert set(terms) == set(weights)  # the names the training loop weights and reports
        loss = sum(weights[k] * v for k, v in terms.items())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({k: v.item() for k, v in terms.items()})
    assert all(torch.isfinite(torch.tensor(list(h.values()))).all() for h in history)
    for name in weights:
        values = [h[name] for h in history]
        assert all(b < a for a, b in zip(values, values[1:])) and values[-1] < 0.85 * values[0], (variant, name, history)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_method_parameter_gets_a_gradient(variant, mnist, teacher_outputs):
    """DDP without find_unused_parameters needs every trainable parameter in every step's graph."""
    images, labels, _ = mnist
    backbone, method = build(variant)
    t = teacher_outputs[0]
    terms = method.losses(student_features(backbone, images[:8]), TeacherOutput([s[:8] for s in t.stages], t.pooled[:8], t.logits[:8]), labels[:8])
    sum(method.loss_weights()[k] * v for k, v in terms.items()).backward()
    missing = [n for n, p in method.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing
    assert all(p.grad is not None for p in backbone.parameters())


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_deploy_head_maps_the_student_map_to_logits(variant, mnist):
    backbone, method = build(variant)
    backbone.eval(), method.eval()
    with torch.no_grad():
        feats = backbone.forward_features(to_model_input(mnist[0], 64))
        logits = method.deploy_head()(feats)
        assert feats.shape == (32, 512, 2, 2)
        assert logits.shape == (32, 10)
        # With nothing to fold, the deployed head is the training-time classifier.
        pooled_logits = method.head(feats.mean((2, 3)))
        torch.testing.assert_close(logits, pooled_logits)
        torch.testing.assert_close(method.variant_head("student")(feats), logits)
        assert method.student_variants == ("student",) and method.twins == {}  # one deployed graph, no twin


@pytest.mark.parametrize("variant", ["none", "inverted-projection-teacher-free"])
def test_teacher_free_losses_ignore_the_teacher(variant, mnist, teacher_outputs):
    images, labels, _ = mnist
    backbone, method = build(variant)
    with torch.no_grad():
        feats = student_features(backbone, images)
        a = method.losses(feats, teacher_outputs[0], labels)
        b = method.losses(feats, teacher_outputs[1], labels)
    assert not torch.equal(teacher_outputs[0].stages[-1], teacher_outputs[1].stages[-1])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_teacher_based_losses_depend_on_the_teacher(mnist, teacher_outputs):
    images, labels, _ = mnist
    for variant, term in (("fitnets", "hint"), ("inverted-projection", "proj")):
        backbone, method = build(variant)
        with torch.no_grad():
            feats = student_features(backbone, images)
            assert method.losses(feats, teacher_outputs[0], labels)[term] != method.losses(feats, teacher_outputs[1], labels)[term]


def test_inverted_projector_maps_teacher_channels_to_student_channels(mnist, teacher_outputs):
    """Learning to project: P(F_t) is compared with F_s, so P goes teacher -> student (FitNets goes the other way)."""
    backbone, inverted = build("inverted-projection")
    _, fitnets = build("fitnets")
    teacher_map = teacher_outputs[0].stages[-1]
    assert teacher_map.shape == (32, 320, 2, 2)
    assert (inverted.projector.in_channels, inverted.projector.out_channels) == (320, 512)
    assert inverted.projector.bias is None
    with torch.no_grad():
        assert inverted.projector(teacher_map).shape == (32, 512, 2, 2)
        feats = student_features(backbone, mnist[0])
        assert fitnets.regressor(feats.final).shape == (32, 320, 2, 2)
    # The loss is exactly ||P(F_t) - F_s||^2 on the student's grid.
    with torch.no_grad():
        expected = torch.nn.functional.mse_loss(inverted.projector(teacher_map), feats.final)
        torch.testing.assert_close(inverted.losses(feats, teacher_outputs[0], mnist[1])["proj"], expected)
