import pytest

from procedge.io import atomic_dir, atomic_path


def test_atomic_path_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_atomic_dir_replaces_only_when_complete(tmp_path):
    target = tmp_path / "openvino"
    with atomic_dir(target) as tmp:
        (tmp / "a.xml").write_text("1")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "b.xml").write_text("2")
            raise RuntimeError("crash")
    assert [p.name for p in target.iterdir()] == ["a.xml"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["openvino"]


def test_artifacts_get_the_usual_permissions(tmp_path):
    import os
    import stat

    mask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "a.json") as tmp:
            tmp.write_text("{}")
        with atomic_dir(tmp_path / "export") as tmp:
            (tmp / "x").write_text("1")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "export").stat().st_mode) == 0o755
