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


def test_five_named_loss_terms_train_on_real_images(mnist_batch, teacher):
    torch.manual_seed(0)
    images, labels = mnist_batch
    backbone = create_backbone("resnet10t")
    method = create_method("proc-kd", {"dim": 64, "num_prototypes": 16}, FeatureDims([112, 320], 1280, 1000, 512, 10))
    t_out = teacher(to_model_input(images, 64, (0.5,) * 3, (0.5,) * 3))
    opt = torch.optim.AdamW(list(backbone.parameters()) + list(method.parameters()), 1e-3)
    history = []
    for _ in range(6):
        terms = method.losses(StudentFeatures(backbone.forward_features(to_model_input(images, 64)), []), t_out, labels)
        loss = sum(method.loss_weights()[k] * v for k, v in terms.items())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({k: v.item() for k, v in terms.items()})
    assert set(terms) == {"s", "t", "a", "kl", "loc"}
    assert all(torch.isfinite(v) for v in terms.values())
    for path in ("s", "t", "a"):  # student, teacher and augmented-student classifiers all learn
        assert history[-1][path] < 0.8 * history[0][path], (path, history)
    assert method.prototypes.grad is not None  # the prototypes learn


def test_teacher_path_leaves_deploy_bn_statistics_alone(mnist_batch, teacher):
    images, labels = mnist_batch
    method = create_method("proc-kd", {"dim": 32, "num_prototypes": 8}, FeatureDims([112, 320], 1280, 1000, 32, 10))
    bn = method.tafa.mlp[1]
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
