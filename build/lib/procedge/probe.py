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
