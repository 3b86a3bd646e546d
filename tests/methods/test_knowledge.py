"""The shared label-free teacher terms: every method has them, they train on real images, labelled terms skip the pool."""

import pytest
import torch

from procedge.data import load_embedded_mnist, to_model_input
from procedge.errors import ProcedgeError
from procedge.methods import FeatureDims, StudentFeatures, create_method, method_registry
from procedge.methods.knowledge import labelled_cross_entropy
from procedge.models.student import create_backbone
from procedge.models.teacher import EMBEDDED_TEACHER, FrozenTeacher, create_teacher_model

pytestmark = pytest.mark.usefixtures("one_thread")
DIMS = FeatureDims([112, 320], 1280, 1000, 512, 10)
SHARED = {"w_emb": 1.0, "w_logits": 1.0, "w_soft": 1.0}


@pytest.fixture(scope="module")
def batch():
    data = load_embedded_mnist(0.2, 0)
    images, labels = data.train.images[:32], data.train.labels[:32].clone()
    teacher = FrozenTeacher(create_teacher_model(EMBEDDED_TEACHER, None), ["blocks.4", "blocks.6"])
    with torch.no_grad():
        out = teacher(to_model_input(images, 64, (0.5,) * 3, (0.5,) * 3))
    out.task_logits = torch.nn.functional.one_hot(labels, 10).float() * 4  # a confident probe
    labels[8:] = -1  # three quarters of the batch are unlabelled
    return images, labels, out


@pytest.mark.parametrize("name", sorted(set(method_registry.names()) - {"pat"}))
def test_every_method_takes_the_shared_terms(name):
    method = create_method(name, SHARED, DIMS)
    assert {"emb", "logits", "soft"} <= set(method.term_weights())
    assert not method.labelled_terms & {"emb", "logits", "soft"}  # label-free


def test_shared_terms_train_on_real_images_and_unlabelled_images_skip_the_ce(batch):
    images, labels, out = batch
    torch.manual_seed(0)
    backbone, method = create_backbone("resnet10t"), create_method("none", SHARED, DIMS)
    method.knowledge.fit_statistics(out.pooled)
    opt = torch.optim.AdamW(list(backbone.parameters()) + list(method.parameters()), 1e-3)
    history = []
    for _ in range(6):
        terms = method.losses(StudentFeatures(backbone.forward_features(to_model_input(images, 64)), []), out, labels)
        loss = sum(method.term_weights()[k] * v for k, v in terms.items())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({k: v.item() for k, v in terms.items()})
    assert set(history[0]) == {"ce", "emb", "logits", "soft"}
    for term in ("emb", "logits", "soft"):
        assert history[-1][term] < 0.9 * history[0][term], (term, history)
    assert all(p.grad is not None for p in method.parameters())


def test_labelled_cross_entropy_ignores_the_pool():
    logits = torch.randn(6, 3, requires_grad=True)
    labels = torch.tensor([0, 2, -1, -1, 1, -1])
    mine = labelled_cross_entropy(logits, labels)
    assert torch.allclose(mine, torch.nn.functional.cross_entropy(logits[[0, 1, 4]], labels[[0, 1, 4]]))
    empty = labelled_cross_entropy(logits, torch.full((6,), -1))
    empty.backward()
    assert empty.item() == 0.0 and logits.grad is not None


def test_pseudo_label_is_none_plus_the_probes_soft_labels():
    method = create_method("pseudo-label", {}, DIMS)
    assert set(method.term_weights()) == {"ce", "soft"}


def test_bad_shared_option_is_one_line():
    with pytest.raises(ProcedgeError, match="emb_loss"):
        create_method("fitnets", {"emb_loss": "l1"}, DIMS)


def test_embedding_target_floors_near_dead_dimensions(batch):
    """A dimension the training images almost never excite must not blow up the standardised target of a view that does."""
    _, _, out = batch
    method = create_method("none", {"w_emb": 1.0}, DIMS)
    pooled = out.pooled.clone()
    pooled[:, 0] = 1e-4 * torch.arange(len(pooled))  # nearly constant
    method.knowledge.fit_statistics(pooled)
    std = method.knowledge.emb_std
    assert std[0] >= 0.1 * std.median() - 1e-6
    fired = out.pooled[:1].clone()
    fired[0, 0] = pooled[:, 1].max()  # one view fires it like an ordinary dimension
    z = (fired - method.knowledge.emb_mean) / std
    assert z.abs().max() < 30
