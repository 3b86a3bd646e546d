"""Optimal transport between a teacher's label space and the task's: class costs, the relatedness score, the entropic OT loss.

The solvers are POT's (`ot`). The loss uses POT's batched log-domain Sinkhorn (`ot.solve_batch`, POT >= 0.9.6):
one call solves the whole batch, where one `ot.sinkhorn2` call per sample costs about 10 ms each.
"""

from __future__ import annotations

import ot
import torch
import torch.nn.functional as F

PROB_FLOOR = 1e-8  # log-domain Sinkhorn takes log(a), log(b): a zero mass would give -inf and NaN gradients


def class_means(pooled: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C_s, F) mean feature per task class; a class with no sample gets a zero row (cost 1 to every teacher class)."""
    pooled = pooled.float()
    sums = torch.zeros(num_classes, pooled.shape[1], dtype=pooled.dtype, device=pooled.device).index_add_(0, labels, pooled)
    counts = torch.bincount(labels, minlength=num_classes).clamp_min(1).to(pooled.dtype)
    return sums / counts[:, None]


def class_cost_matrix(classifier_weight: torch.Tensor, class_means: torch.Tensor) -> torch.Tensor:
    """(C_t, C_s) cost `M[i, j] = 1 - cos(w_i, mu_j)`, in [0, 2]."""
    w = F.normalize(classifier_weight.float(), dim=1)
    mu = F.normalize(class_means.float(), dim=1)
    return (1.0 - w @ mu.T).clamp_(0.0, 2.0)


def relatedness_score(teacher_probs: torch.Tensor, labels: torch.Tensor, cost: torch.Tensor) -> float:
    """`mean_x sum_i p(x)_i M[i, y(x)]`: exact OT from p(x) to the one-hot of y(x), averaged; lower is more related."""
    per_sample = (teacher_probs.float() * cost.float()[:, labels].T).sum(1)
    return float(per_sample.mean())


def _as_distribution(probs: torch.Tensor) -> torch.Tensor:
    probs = torch.nan_to_num(probs.float(), nan=0.0).clamp_min(PROB_FLOOR)
    return probs / probs.sum(1, keepdim=True)


def entropic_ot_loss(teacher_probs: torch.Tensor, student_probs: torch.Tensor, cost: torch.Tensor, eps: float = 0.05,
                     iterations: int = 50, top_k: int | None = 64) -> torch.Tensor:
    """Batch mean of the entropic OT cost `<T_eps, M>` from p_t(x) (B, C_t) to q_s(x) (B, C_s); differentiable in q_s.

    `T_eps` is the log-domain Sinkhorn plan after `iterations` iterations (a fixed count), as `ot.sinkhorn2` would
    return its cost. With `top_k`, each teacher distribution keeps its k most probable classes, renormalised: the
    solve and the iterations kept for backward are O(B k C_s) instead of O(B C_t C_s). Measured on 2 CPU cores,
    batch 64, C_t = 1000, C_s = 10, forward + backward, best of 15: about 20 ms with k = 64, 170 ms with all 1,000
    classes, 640 ms with one `ot.sinkhorn2` call per sample. The truncated mass is what the teacher spreads over its
    other classes; `top_k=None` keeps them all. Probabilities are floored at 1e-8 and renormalised (finite loss).
    """
    if teacher_probs.shape[0] != student_probs.shape[0]:
        raise ValueError(f"batch sizes differ: teacher {teacher_probs.shape[0]}, student {student_probs.shape[0]}")
    if cost.shape != (teacher_probs.shape[1], student_probs.shape[1]):
        raise ValueError(f"cost is {tuple(cost.shape)}, expected ({teacher_probs.shape[1]}, {student_probs.shape[1]})")
    a = _as_distribution(teacher_probs.detach())
    b = _as_distribution(student_probs)
    cost = cost.detach().float()
    if top_k is not None and top_k < a.shape[1]:
        a, index = a.topk(top_k, dim=1)
        a = a / a.sum(1, keepdim=True)
        batch_cost = cost[index]  # (B, k, C_s)
    else:
        batch_cost = cost.expand(a.shape[0], -1, -1)
    result = ot.solve_batch(batch_cost, reg=eps, a=a, b=b, max_iter=iterations, tol=0.0, method="log_sinkhorn", grad="autodiff")
    return result.value_linear.mean()
