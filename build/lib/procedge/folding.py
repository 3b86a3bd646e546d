"""Fold ProC-KD's task-adaptive augmentation (encoder, prototypes, MLP with BN) into static 1x1 convs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from procedge.methods.proc_kd import TaskAdaptiveAugmentation


class FoldedTAFA(nn.Module):
    """Z = ReLU(W2 ReLU(Wx X + Wa softmax(Wl X + bl) + b) + b2 + X): Conv, Softmax, Add, Relu only."""

    def __init__(self, dim: int, num_prototypes: int):
        super().__init__()
        self.assign_logits = nn.Conv2d(dim, num_prototypes, 1)
        self.mix_features = nn.Conv2d(dim, dim, 1)
        self.mix_assignment = nn.Conv2d(num_prototypes, dim, 1, bias=False)
        self.out = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assign = self.assign_logits(x).softmax(1)
        hidden = F.relu(self.mix_features(x) + self.mix_assignment(assign))
        return F.relu(self.out(hidden) + x)


def _conv_weight(matrix: torch.Tensor) -> torch.Tensor:
    return matrix[:, :, None, None].contiguous()


@torch.no_grad()
def fold_tafa(tafa: "TaskAdaptiveAugmentation", prototypes: torch.Tensor) -> FoldedTAFA:
    """Exact algebraic folding in float64, in eval-mode semantics (BN running statistics).

    C' = W_E C + b_E; logits = (C' W_E / tau) X + C' b_E / tau; R = C'^T A;
    first MLP layer [W1a | W1b] on [X'; R] = (W1a W_E) X + W1a b_E + (W1b C'^T) A; BN folded into both.
    """
    w_e = tafa.encoder.weight.flatten(1).double()
    b_e = tafa.encoder.bias.double()
    protos = prototypes.double() @ w_e.T + b_e  # C' (K, D)
    conv1, bn, _, conv2 = tafa.mlp
    dim = w_e.shape[0]
    w1 = conv1.weight.flatten(1).double()
    w1a, w1b = w1[:, :dim], w1[:, dim:]
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    shift = bn.bias.double() - bn.running_mean.double() * scale

    folded = FoldedTAFA(dim, protos.shape[0]).to(prototypes.device)
    folded.assign_logits.weight.copy_(_conv_weight(protos @ w_e / tafa.temperature))
    folded.assign_logits.bias.copy_(protos @ b_e / tafa.temperature)
    folded.mix_features.weight.copy_(_conv_weight(scale[:, None] * (w1a @ w_e)))
    folded.mix_features.bias.copy_(scale * (w1a @ b_e) + shift)
    folded.mix_assignment.weight.copy_(_conv_weight(scale[:, None] * (w1b @ protos.T)))
    folded.out.load_state_dict(conv2.state_dict())
    return folded.eval()
