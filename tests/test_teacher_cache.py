"""The on-disk teacher cache: read back instead of recomputed, keyed by teacher and pixels, robust to damage."""

import pytest
import torch

from procedge.config import TeacherConfig
from procedge.data import ImageSet, load_embedded_mnist
from procedge.models.teacher import EMBEDDED_TEACHER, FrozenTeacher, create_teacher_model
from procedge.teacher_cache import TeacherCache, cache_dir, cache_key, teacher_outputs

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


def assert_same(a: TeacherCache, b: TeacherCache):
    assert len(a.stages) == len(b.stages) == 2
    for x, y in zip(a.stages + [a.pooled, a.logits], b.stages + [b.pooled, b.logits]):
        assert x.dtype == y.dtype == torch.float16 and torch.equal(x, y)


def test_second_request_reads_the_disk(teacher, images, calls):
    first = teacher_outputs(teacher, images, config(), "train")
    assert calls[0] == 1  # 40 images, one batch
    files = list(cache_dir().glob("*.pt"))
    assert [f.name for f in files] == [f"{cache_key(config(), images)}.pt"]
    second = teacher_outputs(teacher, images, config(), "train")
    assert calls[0] == 1  # not run again
    assert_same(first, second)
    assert first.stages[0].shape == (40, 112, 2, 2) and first.stages[1].shape == (40, 320, 1, 1)
    assert first.pooled.shape == (40, 1280) and first.logits.shape == (40, 1000)
    # Same pixels in another tensor: same key, still read from disk.
    copy = ImageSet(images.images.clone(), images.labels.clone())
    assert_same(teacher_outputs(teacher, copy, config(), "train"), first)
    assert calls[0] == 1


def test_key_covers_pixels_input_size_and_normalisation(images):
    key = cache_key(config(), images)
    changed = images.images.clone()
    changed[7, 0, 3, 3] ^= 1  # one pixel of one image, off by one grey level
    assert cache_key(config(), ImageSet(changed, images.labels)) != key
    assert cache_key(config(), images.subset(torch.arange(39))) != key
    assert cache_key(config(48), images) != key
    other_norm = config().model_copy(update={"mean": (0.485, 0.456, 0.406)})
    assert cache_key(other_norm, images) != key
    assert cache_key(config().model_copy(update={"stages": ["blocks.6"]}), images) != key
    assert cache_key(config(), ImageSet(images.images, images.labels.flip(0))) == key  # labels do not change features


def test_changed_input_size_computes_anew(teacher, images, calls):
    small = teacher_outputs(teacher, images, config(32), "train")
    large = teacher_outputs(teacher, images, config(48), "train")
    assert calls[0] == 2 and len(list(cache_dir().glob("*.pt"))) == 2
    assert small.stages[1].shape[-1] == 1 and large.stages[1].shape[-1] == 2


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_cache_file_is_recomputed(teacher, images, calls, damage):
    reference = teacher_outputs(teacher, images, config(), "train")
    path = cache_dir() / f"{cache_key(config(), images)}.pt"
    data = path.read_bytes()
    path.write_bytes({"garbage": b"not a torch file" * 100, "truncated": data[: len(data) // 2], "empty": b""}[damage])
    again = teacher_outputs(teacher, images, config(), "train")
    assert calls[0] == 2  # recomputed, not trusted
    assert_same(again, reference)
    assert_same(TeacherCache(**torch.load(path, weights_only=True)), reference)  # and the file is whole again
    teacher_outputs(teacher, images, config(), "train")
    assert calls[0] == 2


def test_batch_flips_exactly_the_flipped_rows(teacher, images):
    cache = teacher_outputs(teacher, images, config(64), "train")  # 4x4 and 2x2 maps: a flip shows
    assert [s.shape[-1] for s in cache.stages] == [4, 2]
    index = torch.tensor([5, 0, 17, 33, 2, 9])
    flipped = torch.tensor([True, False, False, True, True, False])
    out = cache.batch(index, flipped)
    plain = cache.batch(index)
    for stage, full in zip(out.stages, cache.stages):
        assert stage.dtype == torch.float32 and stage.shape[0] == len(index)
        for row, (i, f) in enumerate(zip(index.tolist(), flipped.tolist())):
            expected = full[i].float().flip(-1) if f else full[i].float()
            assert torch.equal(stage[row], expected)
            if f:  # real feature maps are not mirror-symmetric: the flip is visible
                assert not torch.equal(stage[row], full[i].float())
    for stage, ref in zip(plain.stages, cache.stages):
        assert torch.equal(stage, ref[index].float())
    # Pooled features and logits describe the whole image; no flip applies to them.
    assert torch.equal(out.pooled, cache.pooled[index].float()) and torch.equal(out.logits, cache.logits[index].float())
    none_flipped = cache.batch(index, torch.zeros(len(index), dtype=torch.bool))
    assert all(torch.equal(a, b) for a, b in zip(none_flipped.stages, plain.stages))


def test_cache_matches_the_teacher_on_the_same_batch(teacher, images):
    """The cached fp16 features are the teacher's own outputs for those images, in split order."""
    from procedge.data import to_model_input

    cache = teacher_outputs(teacher, images, config(), "train")
    with torch.no_grad():
        live = teacher(to_model_input(images.images[[3, 21]], 32, (0.5,) * 3, (0.5,) * 3))
    for cached, fresh in zip(cache.batch(torch.tensor([3, 21])).stages, live.stages):
        torch.testing.assert_close(cached, fresh, atol=2e-2, rtol=1e-2)
    torch.testing.assert_close(cache.batch(torch.tensor([3, 21])).logits, live.logits, atol=2e-2, rtol=1e-2)


def test_views_are_the_images_the_student_trains_on(teacher, images, calls):
    """Consistent teaching: the cached output of view v of image i is the teacher's output on that very augmented image."""
    from procedge.data import to_model_input
    from procedge.teacher_cache import teacher_views

    views = teacher_views(teacher, images, config(), 3)
    assert views.count == 3 and views.params.shape == (3, len(images), 3)
    assert not torch.equal(views.params[0], views.params[1])  # distinct views
    index, view = torch.tensor([3, 21, 5]), torch.tensor([2, 0, 1])
    student_images = views.images(images.images, index, view)
    with torch.no_grad():
        live = teacher(to_model_input(student_images, 32, (0.5,) * 3, (0.5,) * 3))
    torch.testing.assert_close(views.batch(index, view).logits, live.logits, atol=2e-2, rtol=1e-2)
    before = calls[0]
    again = teacher_views(teacher, images, config(), 3)  # same seeded views: read back, the teacher does not run
    assert calls[0] == before and torch.equal(again.params, views.params)
