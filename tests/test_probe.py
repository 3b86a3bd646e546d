import torch

from procedge.probe import fit_linear_probe


def test_probe_is_one_linear_layer_with_bounded_weights():
    """A nearly constant feature must not fold into a huge weight (it would wreck INT8 ranges)."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(300) % 3
    centres = torch.randn(3, 16, generator=gen) * 3
    features = centres[labels] + torch.randn(300, 16, generator=gen)
    features[:, 0] = 5.0 + 1e-6 * torch.randn(300, generator=gen)  # a dead channel
    probe = fit_linear_probe(features, labels)
    assert (probe(features).argmax(1) == labels).float().mean() > 0.95
    weights = probe.weight.abs()
    assert weights.max() < 50 * weights.median()
