"""Shared fixtures: real data from ../shared/data extracted once, and one small trained run."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
os.environ.setdefault("PROCEDGE_QUIET", "1")
os.environ.setdefault("PROCEDGE_CACHE_DIR", tempfile.mkdtemp(prefix="procedge-test-cache-"))  # teacher features, per session


def _extract(archive: Path, dest: Path, members=None) -> Path:
    if not archive.exists():
        pytest.skip(f"{archive} is absent (real test data lives in ../shared/data)")
    with tarfile.open(archive) as tar:
        tar.extractall(dest, members=members, filter="data")
    return dest


@pytest.fixture
def one_thread():
    """One torch thread: two OpenMP threads spin badly (many times slower) when other jobs share the 2 cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def imagenet_val(tmp_path_factory) -> Path:
    """1,300 ILSVRC2012 validation images with `dataset.txt` labels."""
    return _extract(SHARED_DATA / "imagenet-val1300.tar.gz", tmp_path_factory.mktemp("imagenet"))


@pytest.fixture(scope="session")
def cifar_test(tmp_path_factory) -> Path:
    """CIFAR-10's test split as JPEG files, test/<class>/NNNN.jpg."""
    dest = tmp_path_factory.mktemp("cifar")
    archive = SHARED_DATA / "cifar10-jpg.tar.gz"
    if not archive.exists():
        pytest.skip(f"{archive} is absent (real test data lives in ../shared/data)")
    with tarfile.open(archive) as tar:
        tar.extractall(dest, members=[m for m in tar.getmembers() if m.name.startswith("test/")], filter="data")
    return dest / "test"


@pytest.fixture
def cifar_small(cifar_test, tmp_path) -> Path:
    """A flat ImageFolder of real CIFAR-10 images: 3 classes x 12 images."""
    root = tmp_path / "cifar-small"
    for cls in ("airplane", "cat", "ship"):
        (root / cls).mkdir(parents=True)
        for src in sorted((cifar_test / cls).iterdir())[:12]:
            shutil.copy(src, root / cls / src.name)
    return root


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A real ProC-KD run on the embedded MNIST data, small enough for CI (about a minute)."""
    from procedge.distill import distill, resolve_config

    out = tmp_path_factory.mktemp("runs") / "mnist"
    config, sizing = resolve_config("intel-cpu", student="resnet10t", epochs=1, teacher_size=64, student_size=64, teacher_views=0)
    distill(config, out, sizing)
    return out


@pytest.fixture
def custom_op_onnx(tmp_path) -> Path:
    """custom.onnx: Relu, then an op from a private domain that no runtime knows (node fancy_pool_1)."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", ["input"], ["r"], name="relu_0"),
             helper.make_node("FancyPool", ["r"], ["logits"], name="fancy_pool_1", domain="com.example")]
    graph = helper.make_graph(nodes, "custom", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)], ir_version=8)
    path = tmp_path / "custom.onnx"
    path.write_bytes(model.SerializeToString())
    return path
