"""Class costs, the closed-form relatedness score against POT's exact solver, and the entropic OT loss."""

import numpy as np
import ot
import pytest
import torch

from procedge.transport import class_cost_matrix, class_means, entropic_ot_loss, relatedness_score


def random_problem(seed, n=20, c_t=12, c_s=4, features=16):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(c_t, features, generator=gen)
    pooled = torch.randn(n, features, generator=gen)
    labels = torch.arange(n) % c_s
    probs = torch.softmax(2 * torch.randn(n, c_t, generator=gen), 1)
    return weight, pooled, labels, probs


def test_class_means_and_cost_matrix():
    weight, pooled, labels, _ = random_problem(0)
    means = class_means(pooled, labels, 5)  # class 4 has no sample
    assert means.shape == (5, 16)
    torch.testing.assert_close(means[1], pooled[labels == 1].mean(0))
    assert torch.all(means[4] == 0)
    cost = class_cost_matrix(weight, means)
    assert cost.shape == (12, 5)
    torch.testing.assert_close(cost[3, 2], 1 - torch.nn.functional.cosine_similarity(weight[3], means[2], dim=0))
    torch.testing.assert_close(cost[:, 4], torch.ones(12))  # zero mean: cosine 0
    assert cost.min() >= 0 and cost.max() <= 2
    same = class_cost_matrix(means[:4], means[:4])
    torch.testing.assert_close(same.diagonal(), torch.zeros(4), atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_score_is_exact_ot_to_one_hot_targets(seed):
    weight, pooled, labels, probs = random_problem(seed)
    cost = class_cost_matrix(weight, class_means(pooled, labels, 4))
    m = cost.double().numpy()
    exact = [ot.emd2(p.double().numpy() / p.double().sum().item(), np.eye(4)[y], m) for p, y in zip(probs, labels.tolist())]
    assert relatedness_score(probs, labels, cost) == pytest.approx(np.mean(exact), abs=1e-5)


def ot_image(probs, cost):
    """Push each teacher class's mass to its cheapest task class: the q with the least OT cost from p."""
    target = torch.nn.functional.one_hot(cost.argmin(1), cost.shape[1]).float()
    return probs @ target


def test_entropic_loss_prefers_the_ot_image_and_is_differentiable():
    weight, pooled, labels, probs = random_problem(3, c_t=50)
    cost = class_cost_matrix(weight, class_means(pooled, labels, 4))
    matched = ot_image(probs, cost)
    mismatched = matched.roll(1, dims=1)
    logits = matched.clamp_min(1e-6).log().requires_grad_()
    loss = entropic_ot_loss(probs, logits.softmax(1), cost)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert loss.item() < entropic_ot_loss(probs, mismatched, cost).item() - 0.05
    exact = np.mean([ot.emd2(p.double().numpy(), q.double().numpy() / q.double().sum().item(), cost.double().numpy())
                     for p, q in zip(probs, matched)])
    assert loss.item() == pytest.approx(exact, abs=0.05)  # entropic with eps = 0.05 stays near the exact cost


def test_entropic_loss_top_k_and_degenerate_inputs():
    weight, pooled, labels, probs = random_problem(4, c_t=200)
    cost = class_cost_matrix(weight, class_means(pooled, labels, 4))
    student = torch.softmax(torch.randn(20, 4), 1)
    full = entropic_ot_loss(probs, student, cost, top_k=None)
    assert entropic_ot_loss(probs, student, cost, top_k=200).item() == pytest.approx(full.item(), abs=1e-6)
    assert entropic_ot_loss(probs, student, cost, top_k=64).item() == pytest.approx(full.item(), abs=0.05)
    one_hot_teacher = torch.nn.functional.one_hot(torch.arange(20) % 200, 200).float()
    one_hot_student = torch.nn.functional.one_hot(labels, 4).float().requires_grad_()
    loss = entropic_ot_loss(one_hot_teacher, one_hot_student, cost, top_k=8)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(one_hot_student.grad).all()
    with pytest.raises(ValueError, match="cost is"):
        entropic_ot_loss(probs, student, cost[:, :3])
