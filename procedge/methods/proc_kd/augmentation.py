"""ProC-KD's task-adaptive feature augmentation (TAFA) and its exact folding into static 1x1 convs for deployment."""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights


class TaskAdaptiveAugmentation(nn.Module):
    """TAFA: Z = ReLU(MLP([E(X); C'^T A]) + X) with A = softmax_K(C' E(X) / tau), C' = E(C)."""

    MLP_LAYERS = ("mix", "norm", "act", "out")  # checkpoints before the layers had names index them 0-3

    def __init__(self, dim: int, temperature: float):
        super().__init__()
        self.encoder = nn.Conv2d(dim, dim, 1)
        self.mlp = nn.Sequential(OrderedDict(zip(self.MLP_LAYERS, (
            nn.Conv2d(2 * dim, dim, 1, bias=False), nn.BatchNorm2d(dim), nn.ReLU(), nn.Conv2d(dim, dim, 1)))))
        self.temperature = temperature

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for index, name in enumerate(self.MLP_LAYERS):  # an older checkpoint's positional keys
            old = f"{prefix}mlp.{index}."
            for key in [k for k in state_dict if k.startswith(old)]:
                state_dict[f"{prefix}mlp.{name}.{key[len(old):]}"] = state_dict.pop(key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def encode_prototypes(self, prototypes: torch.Tensor) -> torch.Tensor:
        return F.linear(prototypes, self.encoder.weight.flatten(1), self.encoder.bias)  # (K, D)

    def assignment_logits(self, encoded: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        return torch.einsum("kd,bdhw->bkhw", self.encode_prototypes(prototypes), encoded) / self.temperature

    def forward(self, x: torch.Tensor, prototypes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The augmented map and the assignment logits (B, K, H, W)."""
        encoded = self.encoder(x)
        logits = self.assignment_logits(encoded, prototypes)
        recon = torch.einsum("kd,bkhw->bdhw", self.encode_prototypes(prototypes), logits.softmax(1))
        return F.relu(self.mlp(torch.cat([encoded, recon], 1)) + x), logits


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
def fold_tafa(tafa: TaskAdaptiveAugmentation, prototypes: torch.Tensor) -> FoldedTAFA:
    """Exact algebraic folding in float64, in eval-mode semantics (BN running statistics).

    C' = W_E C + b_E; logits = (C' W_E / tau) X + C' b_E / tau; R = C'^T A;
    first MLP layer [W1a | W1b] on [X'; R] = (W1a W_E) X + W1a b_E + (W1b C'^T) A; BN folded into both.
    """
    w_e = tafa.encoder.weight.flatten(1).double()
    b_e = tafa.encoder.bias.double()
    protos = prototypes.double() @ w_e.T + b_e  # C' (K, D)
    mix, norm, out = tafa.mlp.mix, tafa.mlp.norm, tafa.mlp.out
    dim = w_e.shape[0]
    w1, b1 = fuse_conv_bn_weights(mix.weight.double(), None, norm.running_mean.double(), norm.running_var.double(), norm.eps,
                                  norm.weight.double(), norm.bias.double())
    w1 = w1.flatten(1)
    w1a, w1b = w1[:, :dim], w1[:, dim:]

    folded = FoldedTAFA(dim, protos.shape[0]).to(prototypes.device)
    folded.assign_logits.weight.copy_(_conv_weight(protos @ w_e / tafa.temperature))
    folded.assign_logits.bias.copy_(protos @ b_e / tafa.temperature)
    folded.mix_features.weight.copy_(_conv_weight(w1a @ w_e))
    folded.mix_features.bias.copy_(w1a @ b_e + b1)
    folded.mix_assignment.weight.copy_(_conv_weight(w1b @ protos.T))
    folded.out.load_state_dict(out.state_dict())
    return folded.eval()
