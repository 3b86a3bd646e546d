import pytest
import torch

from procedge.data import load_embedded_mnist, to_model_input
from procedge.errors import ProcedgeError
from procedge.methods import FeatureDims, StudentFeatures, create_method, method_registry
from procedge.models.student import create_backbone
from procedge.models.teacher import EMBEDDED_TEACHER, FrozenTeacher, create_teacher_model


@pytest.fixture(scope="module")
def mnist_batch():
    data = load_embedded_mnist(0.2, 0)
    return data.train.images[:32], data.train.labels[:32]


@pytest.fixture(scope="module")
def teacher():
    return FrozenTeacher(create_teacher_model(EMBEDDED_TEACHER, None), ["blocks.4", "blocks.6"])


def test_proc_kd_is_registered():
    assert "proc-kd" in method_registry.names()


def with_probe_logits(out, num_classes: int = 10):
    """The teacher's outputs with task logits, as the run attaches them (a fixed linear map of the pooled features)."""
    gen = torch.Generator().manual_seed(0)
    out.task_logits = out.pooled @ torch.randn(out.pooled.shape[1], num_classes, generator=gen) * 0.05
    return out


def test_named_loss_terms_train_on_real_images_and_none_collapses(mnist_batch, teacher):
    torch.manual_seed(0)
    images, labels = mnist_batch
    labels = labels.clone()
    labels[16:] = -1  # half the batch is unlabelled pool
    backbone = create_backbone("resnet10t")
    method = create_method("proc-kd", {"dim": 64, "num_prototypes": 16}, FeatureDims([112, 320], 1280, 1000, 512, 10))
    with torch.no_grad():
        t_out = with_probe_logits(teacher(to_model_input(images, 64, (0.5,) * 3, (0.5,) * 3)))
    method.prepare(teacher, t_out, labels)
    method.knowledge.fit_statistics(t_out.pooled)
    opt = torch.optim.AdamW(list(backbone.parameters()) + list(method.parameters()), 1e-3)
    history = []
    for _ in range(8):
        terms = method.losses(StudentFeatures(backbone.forward_features(to_model_input(images, 64)), []), t_out, labels)
        loss = sum(method.term_weights()[k] * v for k, v in terms.items())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({k: v.item() for k, v in terms.items()})
    assert set(terms) == {"s", "a", "t", "kl", "loc", "bal", "feat", "emb", "logits", "soft"} == set(method.term_weights())
    assert method.labelled_terms == {"s", "a"}
    assert all(torch.isfinite(v) for v in terms.values())
    for path in ("s", "a", "t", "emb"):  # student paths, the teacher path and the embedding term all learn
        assert history[-1][path] < 0.9 * history[0][path], (path, history)
    assert history[-1]["feat"] < history[0]["feat"], history
    # the assignment terms are cross-entropies to balanced soft codes: they cannot reach zero
    assert min(h["loc"] for h in history) > 0.1 and min(h["bal"] for h in history) > 0.1, history
    assert method.prototypes.grad is not None  # the prototypes learn


def test_prototypes_start_from_the_teachers_local_features(mnist_batch, teacher):
    images, labels = mnist_batch
    method = create_method("proc-kd", {"dim": 32, "num_prototypes": 8}, FeatureDims([112, 320], 1280, 1000, 32, 10))
    with torch.no_grad():
        t_out = teacher(to_model_input(images, 64, (0.5,) * 3, (0.5,) * 3))
    method.prepare(teacher, t_out, labels)
    with torch.no_grad():
        h0 = method.phi_t(t_out.stages)  # whitened PCA: about unit variance per channel
        channel_std = h0.permute(1, 0, 2, 3).flatten(1).std(1)
        assert 0.7 < channel_std.mean() < 1.3, channel_std
        logits = method.tafa.assignment_logits(method.tafa.encoder(h0), method.prototypes)
    used = torch.bincount(logits.argmax(1).flatten(), minlength=8)
    assert (used > 0).sum() >= 6, used  # k-means centres: most prototypes own some of the teacher's positions
    assert torch.equal(method.plm(h0, method.prototypes), h0)  # the PLM starts as the identity (residual, zero last layer)


def test_sinkhorn_codes_balance_a_collapsed_assignment():
    from procedge.methods.proc_kd import sinkhorn_codes

    logits = torch.zeros(4, 6, 3, 3)
    logits[:, 0] = 5.0  # every position prefers prototype 0
    logits += 0.1 * torch.randn_like(logits)
    codes = sinkhorn_codes(logits, 3)
    assert torch.allclose(codes.sum(1), torch.ones(4, 3, 3), atol=1e-5)  # each position's codes sum to one
    mass = codes.sum((0, 2, 3)) / codes.sum()
    assert mass.max() < 0.25, mass  # no prototype takes the batch (balanced would be 1/6 each)


def test_teacher_path_leaves_deploy_bn_statistics_alone(mnist_batch, teacher):
    images, labels = mnist_batch
    method = create_method("proc-kd", {"dim": 32, "num_prototypes": 8}, FeatureDims([112, 320], 1280, 1000, 32, 10))
    bn = method.tafa.mlp.norm
    before = bn.running_mean.clone()
    t_out = teacher(to_model_input(images, 64, (0.5,) * 3, (0.5,) * 3))
    method.plm.train()
    with torch.no_grad():
        h = method.plm(method.phi_t(t_out.stages), method.prototypes)
        from procedge.methods.proc_kd import frozen_running_stats

        with frozen_running_stats(method.tafa):
            method.tafa(h, method.prototypes)
    assert torch.equal(bn.running_mean, before)


def test_bad_method_option_is_one_line():
    with pytest.raises(ProcedgeError, match="num_prototypes"):
        create_method("proc-kd", {"num_prototypes": 0}, FeatureDims([8], 8, 8, 8, 2))
    with pytest.raises(ProcedgeError, match="unknown distillation method"):
        create_method("magic", {}, FeatureDims([8], 8, 8, 8, 2))
