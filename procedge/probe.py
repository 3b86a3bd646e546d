"""Linear probe on the frozen teacher's pooled features: the teacher's accuracy on the student's task."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn


def fit_linear_probe(train_features: torch.Tensor, train_labels: torch.Tensor, seed: int = 0) -> nn.Linear:
    """Multinomial logistic regression on standardised features, returned as one nn.Linear.

    Each feature's scale is floored at a tenth of the median scale: a nearly constant feature (a
    channel the task never excites) would otherwise fold into a huge weight, which wrecks the
    layer's range for INT8 and amplifies noise.
    """
    x = train_features.float().numpy()
    scaler = StandardScaler().fit(x)
    scaler.scale_ = np.maximum(scaler.scale_, 0.1 * np.median(scaler.scale_))
    clf = LogisticRegression(max_iter=2000, C=1.0, random_state=seed).fit(scaler.transform(x), train_labels.numpy())
    coef = clf.coef_ / scaler.scale_
    bias = clf.intercept_ - coef @ scaler.mean_
    if coef.shape[0] == 1:  # sklearn's binary form: one row for class 1
        coef, bias = np.concatenate([-coef, coef]) / 2, np.concatenate([-bias, bias]) / 2
    linear = nn.Linear(coef.shape[1], coef.shape[0])
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(coef).float())
        linear.bias.copy_(torch.from_numpy(bias).float())
    return linear


@torch.no_grad()
def probe_task_logits(pooled: torch.Tensor, image_index: torch.Tensor, labelled_pooled: torch.Tensor, labels: torch.Tensor,
                      probe: nn.Linear, folds: int = 5, seed: int = 0) -> torch.Tensor:
    """The teacher probe's logits for rows of teacher features, never from a probe that saw the row's own label.

    Row r holds the teacher's features of (a view of) image `image_index[r]`; images below `len(labels)` are
    the labelled ones, the rest the unlabelled pool. A labelled image's logits come from the probe of the
    stratified fold that left it out (`folds` folds, fewer when a class has fewer images); a pool image's
    from `probe`, fitted on every labelled image. With a class of a single image there are no folds, and
    every row gets `probe`.
    """
    from sklearn.model_selection import StratifiedKFold

    logits = probe(pooled.float())
    splits = min(folds, int(torch.bincount(labels).min()))
    if splits < 2:
        return logits
    fold_of = torch.empty(len(labels), dtype=torch.long)
    fold_probes = []
    for fold, (fit_idx, held_idx) in enumerate(StratifiedKFold(splits, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels.numpy())):
        fold_of[held_idx] = fold
        fold_probes.append(fit_linear_probe(labelled_pooled[fit_idx], labels[fit_idx], seed))
    labelled_rows = (image_index < len(labels)).nonzero().flatten()
    row_fold = fold_of[image_index[labelled_rows]]
    for fold, fold_probe in enumerate(fold_probes):
        rows = labelled_rows[row_fold == fold]
        logits[rows] = fold_probe(pooled[rows].float())
    return logits
