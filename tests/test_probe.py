from types import SimpleNamespace

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


def test_task_logits_are_out_of_fold_on_labelled_images_and_from_the_full_probe_on_the_pool():
    from procedge.probe import probe_task_logits

    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    centres = torch.randn(3, 32, generator=gen)
    labelled = centres[labels] + 2.0 * torch.randn(60, 32, generator=gen)  # overlapping classes: a probe can memorise
    pool = centres[torch.arange(30) % 3] + 2.0 * torch.randn(30, 32, generator=gen)
    probe = fit_linear_probe(labelled, labels)
    rows = torch.cat([labelled, labelled, pool])  # two views of the labelled images, then the pool
    image_index = torch.cat([torch.arange(60), torch.arange(60), torch.arange(60, 90)])
    cache = SimpleNamespace(pooled_chunks=lambda: iter(rows.split(50)), image_index=image_index)  # read in chunks, as from disk
    logits = probe_task_logits(cache, torch.arange(60), labelled, labels, torch.arange(60), probe)
    with torch.no_grad():
        assert torch.allclose(logits[120:], probe(pool))  # pool rows: the probe fitted on every labelled image
        in_sample = (probe(labelled).argmax(1) == labels).float().mean()
    out_of_fold = (logits[:60].argmax(1) == labels).float().mean()
    # both views of an image take the same fold's probe (equal up to float rounding: the rows are scored in other chunks)
    assert torch.allclose(logits[:60], logits[60:120], rtol=1e-5, atol=1e-6)
    assert out_of_fold < in_sample  # a probe that saw the label would just repeat it
    order = torch.randperm(90, generator=gen)  # the same images in another order: the labelled ones among the pool
    moved = SimpleNamespace(pooled_chunks=lambda: iter(rows.split(50)), image_index=order[image_index])
    assert torch.allclose(probe_task_logits(moved, torch.arange(60), labelled, labels, order[:60], probe), logits, rtol=1e-5, atol=1e-6)
