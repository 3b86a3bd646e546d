import numpy as np
import pytest
import timm
import torch
from PIL import Image

from procedge.errors import ProcedgeError
from procedge.models.teacher import (
    EMBEDDED_TEACHER,
    FrozenTeacher,
    create_teacher_model,
    default_mean_std,
    default_stages,
    read_state_dict,
)


def _imagenet_batch(root, files):
    xs = []
    for name in files:
        with Image.open(root / name) as im:  # 227 px, centre-crop to 224 as the TF preprocessing does
            im = im.convert("RGB")
            w, h = im.size
            im = im.crop(((w - 224) // 2, (h - 224) // 2, (w - 224) // 2 + 224, (h - 224) // 2 + 224))
            xs.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1))
    return torch.stack(xs).float().div(255).sub(0.5).div(0.5)


@pytest.mark.slow
def test_embedded_lite0_is_really_imagenet_lite0(imagenet_val):
    """The remapped EfficientNet-PyTorch weights reach >= 80% top-1 on 1,300 ILSVRC2012 val images."""
    model = create_teacher_model(EMBEDDED_TEACHER, None)
    rows = [line.split(",") for line in (imagenet_val / "dataset.txt").read_text().split("\n") if line.strip()]
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(rows), 100):
            chunk = rows[start:start + 100]
            x = _imagenet_batch(imagenet_val, [r[0].strip() for r in chunk])
            correct += (model(x).argmax(1) == torch.tensor([int(r[1]) for r in chunk])).sum().item()
    top1 = correct / len(rows)
    assert len(rows) == 1300
    assert top1 >= 0.80, top1


def test_embedded_teacher_uses_tf_normalisation_and_last_two_stages():
    model = create_teacher_model(EMBEDDED_TEACHER, None)
    assert default_mean_std(EMBEDDED_TEACHER, model) == ((0.5,) * 3, (0.5,) * 3)
    assert default_stages(model) == ["blocks.4", "blocks.6"]


def test_frozen_teacher_taps_stages_and_stays_in_eval():
    teacher = FrozenTeacher(create_teacher_model(EMBEDDED_TEACHER, None), ["blocks.4", "blocks.6"])
    teacher.train()
    assert not teacher.model.training
    out = teacher(torch.rand(2, 3, 96, 96))
    assert [tuple(s.shape) for s in out.stages] == [(2, 112, 6, 6), (2, 320, 3, 3)]
    assert out.pooled.shape == (2, 1280) and out.logits.shape == (2, 1000)
    assert not any(p.requires_grad for p in teacher.parameters())


def test_user_checkpoint_round_trip_with_other_label_space(tmp_path):
    model = timm.create_model("resnet18", pretrained=False, num_classes=7)
    from safetensors.torch import save_file

    save_file(model.state_dict(), tmp_path / "r18.safetensors")
    loaded = create_teacher_model("resnet18", tmp_path / "r18.safetensors")
    assert loaded.num_classes == 7
    assert torch.equal(loaded.fc.weight, model.fc.weight)


def test_mismatching_checkpoint_names_the_first_bad_tensor(tmp_path):
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ProcedgeError, match="unexpected tensor 'conv1.weight'"):
        create_teacher_model(EMBEDDED_TEACHER, tmp_path / "r18.pth")


def test_shape_mismatch_is_named(tmp_path):
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    state["conv1.weight"] = torch.zeros(8, 3, 7, 7)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(ProcedgeError, match="'conv1.weight' has shape"):
        create_teacher_model("resnet18", tmp_path / "bad.pth")


@pytest.mark.parametrize("payload", [[1, 2, 3], {"epoch": 3}])
def test_checkpoint_that_is_not_a_state_dict(tmp_path, payload):
    torch.save(payload, tmp_path / "x.pth")
    with pytest.raises(ProcedgeError, match="not a state dict"):
        read_state_dict(tmp_path / "x.pth")


def test_garbage_checkpoint_file(tmp_path):
    (tmp_path / "x.pth").write_text("hello")
    with pytest.raises(ProcedgeError, match="cannot read checkpoint"):
        read_state_dict(tmp_path / "x.pth")


def test_unknown_timm_name():
    with pytest.raises(ProcedgeError, match="unknown timm model 'resnet1800'"):
        create_teacher_model("resnet1800", None)
