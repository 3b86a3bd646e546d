"""`ot`: the class cost fitted from the real teacher, the OT term trains, and the cost travels with the checkpoint."""

import pytest
import torch

from procedge.data import load_embedded_mnist, to_model_input
from procedge.errors import ProcedgeError
from procedge.methods import FeatureDims, StudentFeatures, create_method, method_registry
from procedge.models.student import create_backbone
from procedge.models.teacher import EMBEDDED_TEACHER, FrozenTeacher, create_teacher_model

pytestmark = pytest.mark.usefixtures("one_thread")

DIMS = FeatureDims([112, 320], 1280, 1000, 512, 10)


@pytest.fixture(scope="module")
def setup():
    data = load_embedded_mnist(0.2, 0)
    images, labels = data.train.images[:64], data.train.labels[:64]
    teacher = FrozenTeacher(create_teacher_model(EMBEDDED_TEACHER, None), ["blocks.4", "blocks.6"])
    with torch.no_grad():
        out = teacher(to_model_input(images, 64, (0.5,) * 3, (0.5,) * 3))
    return teacher, out, images, labels


def test_cost_is_fitted_from_the_teacher_classifier_and_saved(setup):
    teacher, out, _, labels = setup
    method = create_method("ot", {}, DIMS)
    assert "ot" in method_registry.names() and torch.count_nonzero(method.cost) == 0
    method.prepare(teacher, out, labels)
    assert method.cost.shape == (1000, 10)
    assert 0 <= method.cost.min() and method.cost.max() <= 2  # 1 - cosine
    assert method.cost.std() > 0
    restored = create_method("ot", {}, DIMS)
    restored.load_state_dict(method.state_dict())  # export rebuilds the method without running prepare
    assert torch.equal(restored.cost, method.cost)


def test_ot_and_ce_terms_train_on_real_images(setup):
    teacher, out, images, labels = setup
    torch.manual_seed(0)
    backbone, method = create_backbone("resnet10t"), create_method("ot", {"w_ot": 1.0}, DIMS)
    method.prepare(teacher, out, labels)
    opt = torch.optim.AdamW(list(backbone.parameters()) + list(method.parameters()), 1e-3)
    history = []
    for _ in range(5):
        terms = method.losses(StudentFeatures(backbone.forward_features(to_model_input(images, 64)), []), out, labels)
        loss = sum(method.loss_weights()[k] * v for k, v in terms.items())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({k: v.item() for k, v in terms.items()})
    assert set(history[0]) == {"ce", "ot"}
    assert history[-1]["ce"] < history[0]["ce"] and history[-1]["ot"] < history[0]["ot"], history
    assert all(p.grad is not None for p in method.parameters())


def test_teacher_without_a_linear_classifier_is_one_line(setup):
    _, out, _, labels = setup
    teacher = FrozenTeacher(create_teacher_model(EMBEDDED_TEACHER, None), ["blocks.6"])
    teacher.model.reset_classifier(0)  # classifier becomes Identity
    with pytest.raises(ProcedgeError, match="one Linear layer"):
        create_method("ot", {}, DIMS).prepare(teacher, out, labels)
