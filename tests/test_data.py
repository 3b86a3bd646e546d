
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


def _split_tree(cifar_small, root):
    """root/{train,val}/<class>: 8 train and 4 val real CIFAR images a class."""
    for cls_dir in sorted(cifar_small.iterdir()):
        files = sorted(cls_dir.iterdir())
        for split, chunk in (("train", files[:8]), ("val", files[8:])):
            (root / split / cls_dir.name).mkdir(parents=True)
            for f in chunk:
                (root / split / cls_dir.name / f.name).write_bytes(f.read_bytes())
    return root


def _pool(cifar_test, root, count=20):
    """`count` real CIFAR test images at any depth, from classes the task does not even have."""
    files = sorted((cifar_test / "dog").iterdir())[:count // 2] + sorted((cifar_test / "truck").iterdir())[:count - count // 2]
    for i, f in enumerate(files):
        dest = root / ("a/b" if i % 2 else "c") / f"{f.parent.name}-{f.name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(f.read_bytes())
    return root


def test_unlabelled_pool_at_any_depth_drops_heldout_copies_and_skips_unreadable_files(cifar_small, cifar_test, tmp_path):
    from procedge.data import UNLABELED, load_task_data

    root = _split_tree(cifar_small, tmp_path / "task")
    pool = _pool(cifar_test, tmp_path / "pool")
    for f in sorted((root / "val" / "cat").iterdir())[:2]:  # two held-out images also in the pool
        (pool / f"copy-{f.name}").write_bytes(f.read_bytes())
    (pool / "c" / "broken.jpg").write_bytes(b"\xff\xd8 not an image")
    data = load_task_data(root, 64, 0.2, 0, unlabeled=pool)
    assert len(data.unlabeled) == 20 and (data.unlabeled.labels == UNLABELED).all()
    assert data.pool.heldout_duplicates == 2 and data.pool.skipped_files == 1 and data.pool.files == 23
    train = data.training_set()
    assert len(train) == len(data.train) + 20 and (train.labels[:len(data.train)] >= 0).all()
    heldout = {bytes(img.numpy().tobytes()) for img in data.val.images}
    assert not any(bytes(img.numpy().tobytes()) in heldout for img in data.unlabeled.images)


def test_pool_larger_than_memory_allows_is_capped_with_a_message(cifar_small, cifar_test, tmp_path, monkeypatch, capsys):
    from procedge import data as data_module

    root = _split_tree(cifar_small, tmp_path / "task")
    pool = _pool(cifar_test, tmp_path / "pool")
    monkeypatch.setattr(data_module, "available_memory", lambda: 12 * 3 * 32 * 32 * 4)  # room for 12 images at a quarter share
    monkeypatch.delenv("PROCEDGE_QUIET", raising=False)
    data = data_module.load_task_data(root, 64, 0.2, 0, unlabeled=pool)
    assert len(data.unlabeled) == 12 and data.pool.capped == 8
    assert "using 12 of 20 files" in capsys.readouterr().err
    assert len(data_module.load_task_data(root, 64, 0.2, 0, unlabeled=pool, max_unlabeled=5).unlabeled) == 5


@pytest.mark.parametrize("make, fragment", [
    (lambda p: None, "does not exist"),
    (lambda p: p.mkdir(), "holds no files"),
    (lambda p: (p.mkdir(), (p / "x.jpg").write_bytes(b"junk")), "could be read as an image"),
])
def test_bad_unlabelled_folder_is_one_error(cifar_small, tmp_path, make, fragment):
    from procedge.data import load_task_data

    pool = tmp_path / "pool"
    make(pool)
    with pytest.raises(ProcedgeError, match=fragment):
        load_task_data(cifar_small, 64, 0.25, 0, unlabeled=pool)


def test_keep_labels_moves_the_rest_of_the_training_split_to_the_pool():
    from procedge.data import UNLABELED, load_task_data

    data = load_task_data(None, 28, 0.2, 0, labels_per_class=5)
    assert len(data.train) == 50 and torch.bincount(data.train.labels).tolist() == [5] * 10
    assert len(data.unlabeled) == 3950 and (data.unlabeled.labels == UNLABELED).all()
    assert len(data.val) == 1000
