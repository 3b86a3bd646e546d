"""Students and teachers from pretrained weights: a checkpoint file, the local Hugging Face cache, or one line offline."""

import shutil

import huggingface_hub.constants
import pytest
import timm
import torch
from safetensors.torch import save_file

from procedge.distill import distill, resolve_config
from procedge.errors import ProcedgeError
from procedge.models.student import create_backbone, offline_pretrained
from procedge.models.teacher import create_teacher_model

LITE0 = "tf_efficientnet_lite0"


@pytest.fixture(scope="module")
def lite0_safetensors(tmp_path_factory):
    """The embedded ImageNet Lite0, with its 1,000-class classifier, in timm's key names, as a .safetensors file."""
    path = tmp_path_factory.mktemp("weights") / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in create_teacher_model(LITE0, None).state_dict().items()}, str(path))
    return path


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, offline: only what a test puts in it can be found."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return tmp_path / "hub"


def put_in_cache(cache, name, weights):
    """Lay `weights` out as the hub download of timm's default pretrained tag of `name` would be cached."""
    hub_id = timm.create_model(name, pretrained=False).pretrained_cfg["hf_hub_id"]
    repo = cache / f"models--{hub_id.replace('/', '--')}"
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    shutil.copy(weights, repo / "snapshots" / ("0" * 40) / "model.safetensors")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)


def test_student_from_a_checkpoint_replaces_the_head(lite0_safetensors):
    teacher = create_teacher_model(LITE0, None)
    backbone = create_backbone(LITE0, weights=lite0_safetensors)
    for name, tensor in backbone.state_dict().items():
        assert torch.equal(tensor, teacher.state_dict()[name]), name
    assert not any(k.startswith("classifier.") for k in backbone.state_dict())


def test_a_student_checkpoint_of_another_network_names_the_tensor(lite0_safetensors):
    with pytest.raises(ProcedgeError, match=r"does not fit the model: .*tensor '[^']+'.*; check the --student name"):
        create_backbone("mobilenetv3_small_050", weights=lite0_safetensors)


def test_pretrained_weights_come_from_the_local_cache(lite0_safetensors, hf_cache):
    put_in_cache(hf_cache, LITE0, lite0_safetensors)
    embedded = create_teacher_model(LITE0, None).state_dict()
    student = create_backbone("tf_efficientnet_lite0.in1k", pretrained=True)  # a tagged name: no weight package has it
    assert all(torch.equal(t, embedded[k]) for k, t in student.state_dict().items())
    teacher = create_teacher_model("tf_efficientnet_lite0.in1k", None)  # a timm name other than the embedded one, no file
    assert all(torch.equal(t, embedded[k]) for k, t in teacher.state_dict().items())


def test_the_installed_weight_package_serves_offline(hf_cache):
    # Lite0's and Lite2's weight packages are installed (the full extra); Lite1's is not, nor is resnet10t in the cache
    assert offline_pretrained((LITE0, "tf_efficientnet_lite1", "tf_efficientnet_lite2", "resnet10t")) == (LITE0, "tf_efficientnet_lite2")
    student = create_backbone(LITE0, pretrained=True)
    teacher = create_teacher_model(LITE0, None).state_dict()
    assert all(torch.equal(t, teacher[k]) for k, t in student.state_dict().items())


def test_offline_without_the_weights_says_which_option_to_pass(hf_cache):
    with pytest.raises(ProcedgeError, match="not in the local Hugging Face cache .*pass --student-weights FILE"):
        create_backbone("resnet10t", pretrained=True)
    with pytest.raises(ProcedgeError, match="pass --teacher-weights FILE"):
        create_teacher_model("resnet50", None)


@pytest.mark.slow
def test_a_pretrained_student_learns_a_real_task_faster(lite0_safetensors, cifar_test, tmp_path):
    """The same network, same data and schedule: from the ImageNet checkpoint it beats itself from scratch."""
    root = tmp_path / "cifar"
    for cls in ("airplane", "automobile", "bird", "cat", "ship"):
        (root / cls).mkdir(parents=True)
        for src in sorted((cifar_test / cls).iterdir())[:50]:
            shutil.copy(src, root / cls / src.name)
    accuracy = {}
    for label, weights in (("scratch", None), ("pretrained", lite0_safetensors)):
        config, _ = resolve_config("intel-cpu", data=root, student=LITE0, student_weights=weights, method="none", epochs=4,
                                   teacher_size=64, student_size=64, teacher_views=0)
        accuracy[label] = distill(config, tmp_path / label)["student_accuracy"]
    assert accuracy["pretrained"] >= accuracy["scratch"] + 0.15, accuracy
