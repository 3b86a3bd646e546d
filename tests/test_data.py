
import pytest
import torch

from procedge.data import ImageFiles, load_embedded_mnist, load_image_folder, stratified_sample, stratified_split, to_model_input
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
    data = load_image_folder(cifar_small, val_fraction=0.25, seed=0)
    assert data.classes == ["airplane", "cat", "ship"]
    assert (len(data.train), len(data.val)) == (27, 9)
    assert isinstance(data.train, ImageFiles)  # the files stay on disk until a batch reads them
    image = data.train.read(0)
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8


def test_split_image_folder(cifar_small, tmp_path):
    root = tmp_path / "split"
    for cls_dir in cifar_small.iterdir():
        files = sorted(cls_dir.iterdir())
        for split, chunk in (("train", files[:8]), ("val", files[8:])):
            (root / split / cls_dir.name).mkdir(parents=True)
            for f in chunk:
                (root / split / cls_dir.name / f.name).write_bytes(f.read_bytes())
    data = load_image_folder(root, val_fraction=0.2, seed=0)
    assert (len(data.train), len(data.val)) == (24, 12)


def test_corrupt_and_non_image_files_are_skipped_and_counted(cifar_small):
    (cifar_small / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (cifar_small / "ship" / "notes.txt").write_text("hello")
    data = load_image_folder(cifar_small, val_fraction=0.25, seed=0)
    assert data.skipped_files == 2
    assert len(data.train) + len(data.val) == 36


def test_all_bad_files_is_an_error(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "x.jpg").write_text("not an image")
    with pytest.raises(ProcedgeError, match="could be read as an image"):
        load_image_folder(tmp_path, 0.2, 0)


@pytest.mark.parametrize("make, message", [
    (lambda root: None, "does not exist"),
    (lambda root: root.mkdir(), "empty or has no class folders"),
    (lambda root: [(root / "a").mkdir(parents=True), (root / "b").mkdir()], "has no images"),
])
def test_bad_data_directories(tmp_path, make, message):
    root = tmp_path / "data"
    make(root)
    with pytest.raises(ProcedgeError, match=message):
        load_image_folder(root, 0.2, 0)


def test_model_input_resizes_and_normalises():
    images = torch.full((2, 3, 28, 28), 255, dtype=torch.uint8)
    x = to_model_input(images, 64, (0.5,) * 3, (0.5,) * 3)
    assert x.shape == (2, 3, 64, 64)
    assert torch.allclose(x, torch.ones_like(x))


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
    data = load_task_data(root, 0.2, 0, unlabeled=pool)
    assert len(data.unlabeled) == 20 and (data.unlabeled.labels == UNLABELED).all()
    assert data.pool.heldout_duplicates == 2 and data.pool.skipped_files == 1 and data.pool.files == 23
    train = data.training_set()
    assert len(train) == len(data.train) + 20 and torch.equal(train.labels[data.labelled_rows()], data.train.labels)
    assert (train.labels >= 0).sum() == len(data.train)
    heldout = {data.val.read(i).numpy().tobytes() for i in range(len(data.val))}
    assert not any(data.unlabeled.read(i).numpy().tobytes() in heldout for i in range(len(data.unlabeled)))


def test_a_pool_is_never_decoded_whole_and_max_unlabeled_keeps_a_seeded_sample(cifar_small, cifar_test, tmp_path, monkeypatch, capsys):
    from procedge import data as data_module

    root = _split_tree(cifar_small, tmp_path / "task")
    pool = _pool(cifar_test, tmp_path / "pool")
    data = data_module.load_task_data(root, 0.2, 0, unlabeled=pool)
    assert isinstance(data.unlabeled, ImageFiles) and len(data.unlabeled) == 20  # files, read per batch: no memory cap needed
    monkeypatch.delenv("PROCEDGE_QUIET", raising=False)
    five = data_module.load_task_data(root, 0.2, 0, unlabeled=pool, max_unlabeled=5)
    assert len(five.unlabeled) == 5 and five.pool.capped == 15
    assert "using 5 of 20 files" in capsys.readouterr().err
    assert five.unlabeled.paths == data_module.load_task_data(root, 0.2, 0, unlabeled=pool, max_unlabeled=5).unlabeled.paths


def test_embedded_pool_duplicates_of_heldout_pixels_are_dropped(tmp_path):
    """With the held-out split in memory (MNIST), a pool file with the same pixels is a duplicate."""
    from PIL import Image

    from procedge.data import load_task_data

    heldout = load_embedded_mnist(0.2, 0).val
    pool = tmp_path / "pool"
    pool.mkdir()
    for i in range(3):
        Image.fromarray(heldout.images[i].permute(1, 2, 0).numpy()).save(pool / f"copy{i}.png")
    Image.fromarray((255 - heldout.images[0]).permute(1, 2, 0).numpy()).save(pool / "other.png")
    data = load_task_data(None, 0.2, 0, unlabeled=pool)
    assert data.pool.heldout_duplicates == 3 and len(data.unlabeled) == 1


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
        load_task_data(cifar_small, 0.25, 0, unlabeled=pool)


def test_keep_labels_moves_the_rest_of_the_training_split_to_the_pool():
    from procedge.data import UNLABELED, load_task_data

    data = load_task_data(None, 0.2, 0, labels_per_class=5)
    assert len(data.train) == 50 and torch.bincount(data.train.labels).tolist() == [5] * 10
    assert len(data.unlabeled) == 3950 and (data.unlabeled.labels == UNLABELED).all()
    assert len(data.val) == 1000
    capped = load_task_data(None, 0.2, 0, labels_per_class=5, max_unlabeled=100)
    assert len(capped.unlabeled) == 100 and torch.equal(capped.train.labels, data.train.labels)
    alone = load_task_data(None, 0.2, 0, labels_per_class=5, max_unlabeled=0)  # the labelled images only
    assert alone.unlabeled is None and alone.pool is None and torch.equal(alone.train.labels, data.train.labels)


def test_every_seed_trains_on_the_same_files_in_the_same_order_so_they_share_the_teacher_cache(cifar_small, tmp_path):
    from procedge.config import TeacherConfig
    from procedge.data import load_task_data
    from procedge.teacher_cache import cache_key

    root = _split_tree(cifar_small, tmp_path / "task")
    first, second = (load_task_data(root, 0.2, seed, labels_per_class=2) for seed in (0, 1))
    assert not torch.equal(first.train.labels, second.train.labels) or first.train.paths != second.train.paths
    one, other = first.training_set(), second.training_set()
    assert one.paths == other.paths == sorted(one.paths, key=str)
    teacher = TeacherConfig(name="tf_efficientnet_lite0", input_size=64, mean=(0.5,) * 3, std=(0.5,) * 3, stages=["blocks.2"])
    assert cache_key(teacher, one, view=1) == cache_key(teacher, other, view=1)
    for data, train in ((first, one), (second, other)):  # each seed's labels where its labelled images sit
        rows = data.labelled_rows()
        assert [train.paths[r] for r in rows.tolist()] == data.train.paths and torch.equal(train.labels[rows], data.train.labels)
        assert (train.labels >= 0).sum() == len(data.train)


def test_a_validation_folder_is_the_heldout_split_and_a_test_folder_beside_it_stays_unseen(cifar_small, tmp_path):
    root = tmp_path / "split"
    for cls_dir in cifar_small.iterdir():
        files = sorted(cls_dir.iterdir())
        for split, chunk in (("train", files[:8]), ("validation", files[8:10]), ("test", files[10:])):
            (root / split / cls_dir.name).mkdir(parents=True)
            for f in chunk:
                (root / split / cls_dir.name / f.name).write_bytes(f.read_bytes())
    data = load_image_folder(root, val_fraction=0.2, seed=0)
    assert (len(data.train), len(data.val)) == (24, 6)
    assert all(p.parent.parent.name == "validation" for p in data.val.paths)


def test_stratified_sample_keeps_every_class_in_proportion():
    labels = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)
    index = stratified_sample(labels, 20, seed=0)
    counts = torch.bincount(labels[index], minlength=3).tolist()
    assert len(index) == 20 and counts[1] >= 1 and counts[2] == 1 and counts[0] >= 16
    assert torch.equal(index, stratified_sample(labels, 20, seed=0)) and torch.equal(index, index.sort().values)
    assert torch.equal(stratified_sample(labels, 500, seed=0), torch.arange(100))
