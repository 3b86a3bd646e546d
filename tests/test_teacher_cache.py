"""The on-disk teacher cache: read back per batch instead of recomputed, keyed by teacher, images and view, robust to damage."""

import pytest
import torch

from procedge.config import TeacherConfig
from procedge.data import ImageSet, load_embedded_mnist, to_model_input
from procedge.loader import ViewedImages, centre_box, fixed_view_seed, random_view, render
from procedge.models.teacher import EMBEDDED_TEACHER, FrozenTeacher, create_teacher_model
from procedge.io import cache_dir
from procedge.teacher_cache import TeacherCache, cache_key, teacher_outputs, teaching_cache, view_rows

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images() -> ImageSet:
    data = load_embedded_mnist(0.2, 0)
    return data.train.subset(torch.arange(40))


@pytest.fixture(scope="module")
def teacher() -> FrozenTeacher:
    return FrozenTeacher(create_teacher_model(EMBEDDED_TEACHER, None), ["blocks.4", "blocks.6"])


@pytest.fixture
def calls(teacher):
    """How many batches the teacher has run since the test began."""
    count = [0]
    handle = teacher.register_forward_hook(lambda *_: count.__setitem__(0, count[0] + 1))
    yield count
    handle.remove()


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PROCEDGE_CACHE_DIR", str(tmp_path / "cache"))


def config(size: int = 32) -> TeacherConfig:
    return TeacherConfig(name=EMBEDDED_TEACHER, input_size=size, mean=(0.5,) * 3, std=(0.5,) * 3, stages=["blocks.4", "blocks.6"])


def everything(cache: TeacherCache) -> list[torch.Tensor]:
    rows = torch.arange(len(cache))
    return [f.read(rows) for f in cache.stages + [cache.pooled, cache.logits]]


def assert_same(a: TeacherCache, b: TeacherCache):
    assert len(a.stages) == len(b.stages) == 2
    for x, y in zip(everything(a), everything(b)):
        assert x.dtype == y.dtype == torch.float16 and torch.equal(x, y)


def test_second_request_reads_the_disk(teacher, images, calls):
    first = teacher_outputs(teacher, images, config(), "train")
    assert calls[0] == 1  # 40 images, one batch
    assert [d.name for d in cache_dir("teacher").iterdir()] == [cache_key(config(), images)]
    second = teacher_outputs(teacher, images, config(), "train")
    assert calls[0] == 1  # not run again
    assert_same(first, second)
    assert first.stages[0].shape == (40, 112, 2, 2) and first.stages[1].shape == (40, 320, 1, 1)
    assert first.pooled.shape == (40, 1280) and first.logits.shape == (40, 1000)
    copy = ImageSet(images.images.clone(), images.labels.clone())  # same pixels in another tensor: same key
    assert_same(teacher_outputs(teacher, copy, config(), "train"), first)
    assert calls[0] == 1


def test_key_covers_pixels_input_size_normalisation_and_view(images):
    key = cache_key(config(), images)
    changed = images.images.clone()
    changed[7, 0, 3, 3] ^= 1  # one pixel of one image, off by one grey level
    assert cache_key(config(), ImageSet(changed, images.labels)) != key
    assert cache_key(config(), images.subset(torch.arange(39))) != key
    assert cache_key(config(48), images) != key
    assert cache_key(config().model_copy(update={"mean": (0.485, 0.456, 0.406)}), images) != key
    assert cache_key(config().model_copy(update={"stages": ["blocks.6"]}), images) != key
    assert cache_key(config(), images, view=2) != key
    assert cache_key(config(), images, view=2, crop_area=0.8) != cache_key(config(), images, view=2)  # a fixed view's crop
    assert cache_key(config(), images, crop_area=0.8) == key  # the centre crop does not depend on it
    assert cache_key(config(), ImageSet(images.images, images.labels.flip(0))) == key  # labels do not change features


def test_key_of_files_follows_their_content_on_disk(cifar_small):
    from procedge.data import load_image_folder

    files = load_image_folder(cifar_small, 0.25, 0).train
    key = cache_key(config(), files)
    path = files.paths[4]
    path.write_bytes(path.read_bytes() + b"\0")  # the file changed after the cache was made
    assert cache_key(config(), files) != key


@pytest.mark.parametrize("damage", ["garbage-meta", "truncated-rows", "missing-rows"])
def test_a_damaged_cache_entry_is_recomputed(teacher, images, calls, damage):
    reference = teacher_outputs(teacher, images, config(), "train")
    entry = cache_dir("teacher") / cache_key(config(), images)
    if damage == "garbage-meta":
        (entry / "meta.json").write_text("{not json")
    elif damage == "truncated-rows":
        data = (entry / "stage1.bin").read_bytes()
        (entry / "stage1.bin").write_bytes(data[: len(data) // 2])
    else:
        (entry / "logits.bin").unlink()
    again = teacher_outputs(teacher, images, config(), "train")
    assert calls[0] == 2  # recomputed, not trusted
    assert_same(again, reference)
    teacher_outputs(teacher, images, config(), "train")
    assert calls[0] == 2  # and the entry is whole again


def test_batch_reads_rows_and_crops_the_maps_to_the_students_view(teacher, images):
    cache = teacher_outputs(teacher, images, config(64), "train")  # 4x4 and 2x2 maps
    rows = torch.tensor([5, 0, 17, 33])
    plain = cache.batch(rows)
    assert all(torch.equal(s, f.read(rows).float()) for s, f in zip(plain.stages, cache.stages))
    whole = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 4)
    flips = torch.tensor([True, False, False, True])
    mirrored = cache.batch(rows, boxes=whole, flips=flips)
    for got, ref in zip(mirrored.stages, plain.stages):
        torch.testing.assert_close(got[1:3], ref[1:3], atol=1e-5, rtol=1e-5)  # the whole image: the map itself
        torch.testing.assert_close(got[0], ref[0].flip(-1), atol=1e-5, rtol=1e-5)
    left_half = cache.batch(rows, boxes=torch.tensor([[0.0, 0.0, 0.5, 1.0]] * 4)).stages[0]
    assert not torch.allclose(left_half, plain.stages[0])  # a crop of the map, resized back to its grid
    assert torch.equal(mirrored.pooled, plain.pooled) and torch.equal(mirrored.logits, plain.logits)


def test_cache_matches_the_teacher_on_the_same_images(teacher, images):
    """The cached fp16 features are the teacher's own outputs for those images, in split order."""
    cache = teacher_outputs(teacher, images, config(), "train")
    shown = torch.stack([render(images.images[i], centre_box(28, 28), 32) for i in (3, 21)])  # what the loader gives it
    with torch.no_grad():
        live = teacher(to_model_input(shown, 32, (0.5,) * 3, (0.5,) * 3))
    for cached, fresh in zip(cache.batch(torch.tensor([3, 21])).stages, live.stages):
        torch.testing.assert_close(cached, fresh, atol=2e-2, rtol=1e-2)
    torch.testing.assert_close(cache.batch(torch.tensor([3, 21])).logits, live.logits, atol=2e-2, rtol=1e-2)


def test_fixed_views_are_the_images_the_student_trains_on(teacher, images, calls):
    """Consistent teaching: the cached output of view v of image i is the teacher's output on that very crop."""
    cache = teaching_cache(teacher, images, config(), 3)
    assert len(cache) == 3 * 40
    index, view = torch.tensor([3, 35, 5]), torch.tensor([2, 3, 1])
    student = torch.stack([ViewedImages(images, {"s": 32})[(i, v, -1)]["s"] for i, v in zip(index.tolist(), view.tolist())])
    for i, v, shown in zip(index.tolist(), view.tolist(), student):
        assert torch.equal(shown, render(images.images[i], random_view(28, 28, fixed_view_seed(v, i)), 32))
    with torch.no_grad():
        live = teacher(to_model_input(student, 32, (0.5,) * 3, (0.5,) * 3))
    torch.testing.assert_close(cache.batch(view_rows(index, view, 40)).logits, live.logits, atol=2e-2, rtol=1e-2)
    before = calls[0]
    teaching_cache(teacher, images, config(), 3)
    assert calls[0] == before  # read back: the teacher does not run


def test_cutmix_views_are_cached_as_the_student_sees_them(teacher, images, calls):
    """The teacher's cached output of a mixed pool view is its output on the very mixed image the student trains on."""
    pooled = ImageSet(images.images, images.labels.clone())
    pooled.labels[20:] = -1  # the second half is the unlabelled pool
    assert cache_key(config(), pooled, view=1, cutmix=0.5) != cache_key(config(), pooled, view=1)
    assert cache_key(config(), pooled, view=1, cutmix=0.5) != cache_key(config(), images, view=1, cutmix=0.5)  # which images are the pool
    cache = teaching_cache(teacher, pooled, config(), 2, cutmix=1.0)
    index, view = torch.tensor([25, 3, 38]), torch.tensor([1, 2, 2])
    shown = ViewedImages(pooled, {"s": 32}, cutmix=1.0)
    student = torch.stack([shown[(i, v, -1)]["s"] for i, v in zip(index.tolist(), view.tolist())])
    plain = ViewedImages(pooled, {"s": 32})
    assert not torch.equal(student[0], plain[(25, 1, -1)]["s"]) and torch.equal(student[1], plain[(3, 2, -1)]["s"])  # pool mixed only
    with torch.no_grad():
        live = teacher(to_model_input(student, 32, (0.5,) * 3, (0.5,) * 3))
    torch.testing.assert_close(cache.batch(view_rows(index, view, 40)).logits, live.logits, atol=2e-2, rtol=1e-2)
