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
def probe_task_logits(rows, fitted: torch.Tensor, fitted_pooled: torch.Tensor, fitted_labels: torch.Tensor,
                      labelled_rows: torch.Tensor, probe: nn.Linear, folds: int = 5, seed: int = 0) -> torch.Tensor:
    """The teacher probe's logits for every row of a teacher cache, never from a probe that saw the row's own label.

    `rows` (a `CacheRows`) gives each row's pooled features (`pooled_chunks`) and the image it is of (`image_index`);
    labelled image k is image `labelled_rows[k]` of the cached set, every other image is of the unlabelled pool. `probe`
    was fitted on the labelled images `fitted` (features `fitted_pooled`, labels `fitted_labels`). A row of one of those images gets the logits of
    the stratified fold probe that left it out (`folds` folds, fewer when a class has fewer images); every other row
    gets `probe`. With a class of a single image there are no folds, and every row gets `probe`.
    """
    from sklearn.model_selection import StratifiedKFold

    splits = min(folds, int(torch.bincount(fitted_labels).min()))
    fold_of = torch.full((int(rows.image_index.max()) + 1,), -1, dtype=torch.long)  # by image of the cached set
    fold_probes = []
    if splits >= 2:
        for fold, (fit_idx, held_idx) in enumerate(StratifiedKFold(splits, shuffle=True, random_state=seed)
                                                   .split(np.zeros(len(fitted_labels)), fitted_labels.numpy())):
            fold_of[labelled_rows[fitted[held_idx]]] = fold
            fold_probes.append(fit_linear_probe(fitted_pooled[fit_idx], fitted_labels[fit_idx], seed))
    parts, start = [], 0
    for chunk in rows.pooled_chunks():
        chunk = chunk.float()
        logits = probe(chunk)
        image = rows.image_index[start:start + len(chunk)]
        row_fold = fold_of[image]
        for fold, fold_probe in enumerate(fold_probes):
            picked = (row_fold == fold).nonzero().flatten()
            logits[picked] = fold_probe(chunk[picked])
        parts.append(logits)
        start += len(chunk)
    return torch.cat(parts)
