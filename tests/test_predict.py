"""`procedge predict`: exported students classify image files through their runtime, as the PyTorch student does."""

import json

import numpy as np
import pytest
from PIL import Image

from procedge.errors import ProcedgeError
from procedge.export import export_run
from procedge.metadata import read_metadata
from procedge.predict import predict
from procedge.run import RunDir

EXPORTS = [("onnx", "fp32"), ("openvino", "fp32"), ("ort", "fp32"), ("ort", "int8")]


@pytest.fixture(scope="module")
def heldout_pngs(trained_run, tmp_path_factory):
    """40 held-out images of the run, written as PNG files at the student's input size, and their labels."""
    heldout = RunDir(trained_run).load_heldout()
    folder = tmp_path_factory.mktemp("pngs")
    paths = []
    for i, image in enumerate(heldout["student"][:40]):
        paths.append(folder / f"{i:02d}.png")
        Image.fromarray(image.transpose(1, 2, 0)).save(paths[-1])
    return paths, heldout["student"][:40]


@pytest.fixture(scope="module")
def pytorch_top1(trained_run, heldout_pngs):
    import torch

    from procedge.models.load import load_trained

    net = load_trained(RunDir(trained_run)).student_net("student")
    with torch.no_grad():
        return net(torch.from_numpy(heldout_pngs[1].astype(np.float32) / 255)).argmax(1).numpy()


@pytest.mark.slow
@pytest.mark.parametrize("fmt,precision", EXPORTS)
def test_predictions_agree_with_the_pytorch_student(trained_run, heldout_pngs, pytorch_top1, fmt, precision):
    export_run(trained_run, fmt, precision)
    result = predict(heldout_pngs[0], run_dir=trained_run, fmt=fmt, precision=precision, top_k=3)
    classes = json.loads((RunDir(trained_run).path / "metrics.json").read_text())["classes"]
    top1 = np.array([classes.index(p["top"][0]["class"]) for p in result["predictions"]])
    agreement = (top1 == pytorch_top1).mean()
    assert agreement >= (1.0 if precision == "fp32" else 0.85), agreement
    scores = [t["score"] for t in result["predictions"][0]["top"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6


@pytest.mark.slow
def test_exported_files_describe_themselves(trained_run, heldout_pngs, pytorch_top1):
    for fmt in ("onnx", "openvino"):
        directory = export_run(trained_run, fmt, "fp32")
        for variant, suffix in (("student", ".onnx" if fmt == "onnx" else ".xml"), ("teacher", ".onnx" if fmt == "onnx" else ".xml")):
            meta = read_metadata(directory / f"{variant}{suffix}")
            assert meta["variant"] == variant and meta["layout"] == "NCHW" and meta["teacher"] == "tf_efficientnet_lite0"
            assert len(json.loads(meta["classes"])) == 10 and int(meta["input_size"]) == 64 and meta["procedge_version"]
            assert meta["method"] == ("linear probe on the frozen teacher" if variant == "teacher" else "proc-kd")
    bare = predict(heldout_pngs[0][:10], model=directory / "student.xml", top_k=1)  # a bare file: its own metadata suffices
    assert [int(p["top"][0]["class"]) for p in bare["predictions"]] == pytorch_top1[:10].tolist()


def test_bad_predict_input_gets_one_line(trained_run, custom_op_onnx, tmp_path):
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    with pytest.raises(ProcedgeError, match="no trt export; run `procedge export"):
        predict([image], run_dir=trained_run, fmt="trt")
    with pytest.raises(ProcedgeError, match="exactly one of --run"):
        predict([image])
    with pytest.raises(ProcedgeError, match="carries no procedge metadata"):
        predict([image], model=custom_op_onnx)
    manifest_path = export_run(trained_run, "onnx", "fp32") / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["files"]["student"]["metadata"]  # an export made by an earlier procedge
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ProcedgeError, match="made before exports carried their class names .*re-export with `procedge export"):
        predict([image], run_dir=trained_run, fmt="onnx")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    export_run(trained_run, "onnx", "fp32")  # re-exported: the metadata is back
    with pytest.raises(ProcedgeError, match="cannot read .*broken.jpg as an image"):
        predict([broken], run_dir=trained_run, fmt="onnx")
