
import pytest
import torch

from procedge.data import augment, load_embedded_mnist, load_image_folder, stratified_split, to_model_input
from procedge.errors import ProcedgeError


def test_embedded_mnist_is_stratified_and_three_channel():
    data = load_embedded_mnist(0.2, seed=0)
    assert (len(data.train), len(data.val)) == (4000, 1000)
    assert data.train.images.shape[1:] == (3, 28, 28) and data.train.images.dtype == torch.uint8
    per_class = torch.bincount(data.val.labels)
    assert per_class.min() >= 90 and per_class.max() <= 115  # ~20% of each class


def test_split_is_seeded_and_disjoint():
    labels = torch.arange(100) % 4
    a = stratified_split(labels, 0.25, seed=1)
    b = stratified_split(labels, 0.25, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not set(a[0].tolist()) & set(a[1].tolist())


def test_flat_image_folder_of_real_jpegs(cifar_small):
    data = load_image_folder(cifar_small, size=64, val_fraction=0.25, seed=0)
    assert data.classes == ["airplane", "cat", "ship"]
    assert (len(data.train), len(data.val)) == (27, 9)
    assert data.train.images.shape[1:] == (3, 32, 32)  # small images are kept at their own size


def test_split_image_folder(cifar_small, tmp_path):
    root = tmp_path / "split"
    for cls_dir in cifar_small.iterdir():
        files = sorted(cls_dir.iterdir())
        for split, chunk in (("train", files[:8]), ("val", files[8:])):
            (root / split / cls_dir.name).mkdir(parents=True)
            for f in chunk:
                (root / split / cls_dir.name / f.name).write_bytes(f.read_bytes())
    data = load_image_folder(root, size=64, val_fraction=0.2, seed=0)
    assert (len(data.train), len(data.val)) == (24, 12)


def test_corrupt_and_non_image_files_are_skipped_and_counted(cifar_small):
    (cifar_small / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (cifar_small / "ship" / "notes.txt").write_text("hello")
    data = load_image_folder(cifar_small, size=64, val_fraction=0.25, seed=0)
    assert data.skipped_files == 2
    assert len(data.train) + len(data.val) == 36


def test_all_bad_files_is_an_error(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "x.jpg").write_text("not an image")
    with pytest.raises(ProcedgeError, match="could be read as an image"):
        load_image_folder(tmp_path, 64, 0.2, 0)


@pytest.mark.parametrize("make, message", [
    (lambda root: None, "does not exist"),
    (lambda root: root.mkdir(), "empty or has no class folders"),
    (lambda root: [(root / "a").mkdir(parents=True), (root / "b").mkdir()], "has no images"),
])
def test_bad_data_directories(tmp_path, make, message):
    root = tmp_path / "data"
    make(root)
    with pytest.raises(ProcedgeError, match=message):
        load_image_folder(root, 64, 0.2, 0)


def test_model_input_resizes_and_normalises():
    images = torch.full((2, 3, 28, 28), 255, dtype=torch.uint8)
    x = to_model_input(images, 64, (0.5,) * 3, (0.5,) * 3)
    assert x.shape == (2, 3, 64, 64)
    assert torch.allclose(x, torch.ones_like(x))


def test_augment_is_seeded_shift_and_flip():
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).view(2, 3, 8, 8)
    a, flipped_a = augment(images, torch.Generator().manual_seed(3))
    b, flipped_b = augment(images, torch.Generator().manual_seed(3))
    assert a.shape == images.shape and a.dtype == torch.uint8
    assert torch.equal(a, b) and torch.equal(flipped_a, flipped_b)
    assert flipped_a.dtype == torch.bool and flipped_a.shape == (2,)


def test_augment_is_draw_then_apply():
    from procedge.data import apply_augmentations, draw_augmentations

    images = torch.arange(4 * 3 * 16 * 16, dtype=torch.uint8).view(4, 3, 16, 16)
    out, flipped = augment(images, torch.Generator().manual_seed(5))
    params = draw_augmentations(4, 16, torch.Generator().manual_seed(5))
    assert torch.equal(out, apply_augmentations(images, params)) and torch.equal(flipped, params[:, 2].bool())
    still = apply_augmentations(images, torch.tensor([[2, 2, 0]] * 4))  # the centre crop of the padded image, unflipped
    assert torch.equal(still, images)
