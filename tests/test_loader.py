"""Images to network inputs per batch: views, preprocessing, sampling, unreadable files mid-epoch."""

import torch

from procedge.data import ImageFiles, decode_rgb, load_image_folder
from procedge.loader import (
    EpochBatches,
    ViewedImages,
    centre_box,
    draw_paste,
    fixed_view_seed,
    make_loader,
    random_view,
    render,
    split_batches,
)


def test_evaluation_resizes_the_shorter_side_and_centre_crops_without_squashing(cifar_small, tmp_path):
    from PIL import Image

    left, right = (decode_rgb(p) for p in sorted((cifar_small / "cat").iterdir())[:2])
    wide = torch.cat([left, right, left], 2)  # a real 32 x 96 photo strip
    path = tmp_path / "wide.png"
    Image.fromarray(wide.permute(1, 2, 0).numpy()).save(path)
    images = ImageFiles([path], torch.zeros(1, dtype=torch.long))
    item = ViewedImages(images, {"student": 32, "teacher": 96})[0]
    assert item["student"].shape == (3, 32, 32) and item["teacher"].shape == (3, 96, 96) and item["ok"]
    assert torch.equal(item["student"], right)  # the middle square, not the whole strip squashed
    assert torch.equal(item["teacher"], render(wide, centre_box(32, 96), 96))


def test_random_views_are_reproducible_and_the_networks_share_them():
    a, b = random_view(120, 160, seed=7), random_view(120, 160, seed=7)
    assert a == b and a != random_view(120, 160, seed=8)
    areas = [random_view(120, 160, s) for s in range(200)]
    assert all(0 <= v.top and v.top + v.height <= 120 and 0 <= v.left and v.left + v.width <= 160 for v in areas)
    assert 0.2 < sum(v.flip for v in areas) / len(areas) < 0.8 and len({(v.height, v.width) for v in areas}) > 50
    share = [v.height * v.width / (120 * 160) for v in areas]
    mild = [v.height * v.width / (120 * 160) for v in (random_view(120, 160, s, crop_area=0.8) for s in range(200))]
    assert min(share) < 0.5 and min(mild) >= 0.75  # 35-100% of the image by default; 80-100% asked (or the centre square)


def test_epoch_batches_share_draws_across_ranks_and_replay_after_a_restore():
    def draws(world, rank, state=None):
        g = torch.Generator().manual_seed(3)
        if state is not None:
            g.set_state(state)
        sampler = EpochBatches(20, 8, g, world, rank, random_views=True)
        return list(sampler), g.get_state()

    single, _ = draws(1, 0)
    rank0, _ = draws(2, 0)
    rank1, _ = draws(2, 1)
    assert [k for b in single for k in b] and sorted(k for b in rank0 + rank1 for k in b) == sorted(k for b in single for k in b)
    _, state = draws(1, 0)  # after one epoch: the next epoch replays from the saved generator
    again, _ = draws(1, 0, state)
    assert again != single and again == draws(1, 0, state)[0]


def test_repeated_samples_enter_every_epoch_once_per_extra_pass():
    from collections import Counter

    labelled = torch.arange(10)  # samples 0-9 labelled, 10-109 an unlabelled pool
    sampler = EpochBatches(110, 16, torch.Generator().manual_seed(0), random_views=True, repeat=labelled.repeat(2))
    seen = Counter(i for batch in sampler for i, _, _ in batch)
    assert len(sampler) == 9 and sum(seen.values()) == 130  # 110 samples and 20 extra passes: ceil(130 / 16) batches
    assert {seen[i] for i in range(10)} == {3} and {seen[i] for i in range(10, 110)} == {1}
    plain = EpochBatches(110, 16, torch.Generator().manual_seed(0), random_views=True)
    order = torch.randperm(110, generator=torch.Generator().manual_seed(0))
    assert [i for i, _, _ in next(iter(plain))] == order[:16].tolist()  # no repeats: the same draws as ever


def test_a_file_that_becomes_unreadable_is_a_skipped_sample_not_a_crash(cifar_small):
    data = load_image_folder(cifar_small, 0.25, 0)
    data.train.paths[3].unlink()  # deleted after the run listed it
    data.train.paths[5].write_bytes(data.train.paths[5].read_bytes()[:40])  # truncated
    sampler = EpochBatches(len(data.train), 9, torch.Generator().manual_seed(0), random_views=True)
    seen = ok = 0
    for batch in make_loader(ViewedImages(data.train, {"student": 32}), batch_sampler=sampler, workers=0):
        seen += len(batch["ok"])
        ok += int(batch["ok"].sum())
    assert seen == len(data.train) and ok == len(data.train) - 2
    batches = list(split_batches(data.train, {"student": 32}))
    assert sum(int((~b["ok"]).sum()) for b in batches) == 2


def test_cutmix_pastes_a_box_of_another_pool_view_into_pool_views_only_at_every_size(cifar_small):
    data = load_image_folder(cifar_small, 0.25, 0)
    images = data.train
    images.labels[6:] = -1  # the first six images labelled, the rest an unlabelled pool
    sizes = {"student": 32, "teacher": 96}
    mixed, plain = ViewedImages(images, sizes, 0.8, cutmix=1.0), ViewedImages(images, sizes, 0.8)
    pool = (images.labels < 0).nonzero().flatten()
    pasted = 0
    for index in range(len(images)):
        for key in ((index, 1, -1), (index, 0, 123)):  # a fixed view and a fresh random view
            seed = fixed_view_seed(1, index) if key[1] else key[2]
            item, own = mixed[key], plain[key]
            partners = []
            paste = draw_paste(seed, pool, 1.0, lambda i: partners.append(i) or images.read(i), 0.8)
            if index < 6:  # labelled: never mixed
                assert all(torch.equal(item[n], own[n]) for n in sizes)
                continue
            assert paste is not None and partners[0] in pool.tolist()
            for name, size in sizes.items():
                y0, x0, y1, x1 = (round(f * size) for f in paste.box)
                partner = render(images.read(partners[0]), paste.view, size)
                assert torch.equal(item[name][:, y0:y1, x0:x1], partner[:, y0:y1, x0:x1])  # the same box of the same view
                outside = torch.ones(size, size, dtype=torch.bool)
                outside[y0:y1, x0:x1] = False
                assert torch.equal(item[name][:, outside], own[name][:, outside])
            pasted += 1
        assert torch.equal(mixed[(index, 0, -1)]["student"], plain[(index, 0, -1)]["student"])  # centre crops: never mixed
    assert pasted == 2 * (len(images) - 6)
    assert torch.equal(mixed[(7, 1, -1)]["teacher"], mixed[(7, 1, -1)]["teacher"])  # reproducible from the key alone
    half = [draw_paste(s, pool, 0.5, lambda i: torch.zeros(3, 32, 32, dtype=torch.uint8)) for s in range(400)]
    areas = [(p.box[2] - p.box[0]) * (p.box[3] - p.box[1]) for p in half if p is not None]
    assert 0.4 < len(areas) / 400 < 0.6 and min(areas) < 0.1 and max(areas) > 0.6  # the share asked; boxes of every size
