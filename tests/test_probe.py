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
    logits = probe_task_logits(cache, torch.arange(60), labelled, labels, 60, probe)
    with torch.no_grad():
        assert torch.allclose(logits[120:], probe(pool))  # pool rows: the probe fitted on every labelled image
        in_sample = (probe(labelled).argmax(1) == labels).float().mean()
    out_of_fold = (logits[:60].argmax(1) == labels).float().mean()
    assert torch.equal(logits[:60], logits[60:120])  # both views of an image take the same fold's probe
    assert out_of_fold < in_sample  # a probe that saw the label would just repeat it


def test_self_trained_labeller_adds_the_most_confident_pool_images_of_each_class(monkeypatch):
    import procedge.probe as probe_module

    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 32, generator=gen)
    labels = torch.arange(30) % 3  # 10 labelled images a class
    labelled = centres[labels] + 2.0 * torch.randn(30, 32, generator=gen)
    pool_classes = torch.arange(600) % 3
    pool = centres[pool_classes] + 2.0 * torch.randn(600, 32, generator=gen)
    held_classes = torch.arange(600) % 3
    held = centres[held_classes] + 2.0 * torch.randn(600, 32, generator=gen)
    probe = fit_linear_probe(labelled, labels)
    rows = torch.cat([labelled, pool, labelled, pool])  # two views of every image, view-major

    class Rows:  # a `CacheRows` read in chunks, as from disk
        image_index = torch.arange(630).repeat(2)

        def __len__(self):
            return len(rows)

        def pooled_chunks(self):
            return iter(rows.split(100))

    cache = Rows()
    fits = []
    monkeypatch.setattr(probe_module, "fit_linear_probe", lambda x, y, seed=0: fits.append((x, y)) or fit_linear_probe(x, y, seed))

    labeller = probe_module.self_trained_labeller(cache, 30, probe, labelled, labels, share=0.5, max_rows=10_000)
    features, targets = fits[-1]
    assert torch.equal(features[:30], labelled) and torch.equal(targets[:30], labels)  # the labelled images, with their labels
    with torch.no_grad():
        predicted = ((probe(pool).softmax(1) + probe(pool).softmax(1)) / 2).argmax(1)
        per_class = torch.bincount(predicted, minlength=3)
        assert torch.equal(torch.bincount(targets[30:], minlength=3), 2 * (per_class // 2))  # half of each class, both views
        accuracy = {name: (net(held).argmax(1) == held_classes).float().mean() for name, net in (("probe", probe), ("labeller", labeller))}
    assert accuracy["labeller"] > accuracy["probe"]  # the pool's confident labels teach the probe more than 10 images a class

    probe_module.self_trained_labeller(cache, 30, probe, labelled, labels, share=0.5, max_rows=300)
    assert len(fits[-1][1]) - 30 <= 300  # capped: fewer images a class when their views would pass max_rows
