"""Teacher assessment on real CIFAR-10 images: the ImageNet teacher ranks ahead of a random one; CLI and bad input."""

import json
from pathlib import Path

import pytest
import timm
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from procedge.assess import TeacherSpec, assess_teachers, parse_teacher_specs
from procedge.cli import main
from procedge.errors import ProcedgeError

LITE0 = "tf_efficientnet_lite0"


def save_random(name: str, path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    save_file({k: v.contiguous() for k, v in timm.create_model(name, pretrained=False).state_dict().items()}, str(path))
    return path


def test_parse_teacher_specs():
    assert parse_teacher_specs(f"{LITE0}, resnet18=ck/r18.safetensors") == [TeacherSpec(LITE0), TeacherSpec("resnet18", Path("ck/r18.safetensors"))]
    for text, fragment in (("", "empty"), (" , ", "empty"), ("=w.pt", "no model name"), (f"{LITE0}=", "no checkpoint"),
                           (f"{LITE0},,resnet18=x", "empty entry")):
        with pytest.raises(ProcedgeError, match=fragment):
            parse_teacher_specs(text)


def test_imagenet_teacher_ranks_ahead_of_a_random_one(cifar_small, tmp_path):
    random_lite0 = save_random(LITE0, tmp_path / "random-lite0.safetensors")
    result = assess_teachers(cifar_small, [TeacherSpec(LITE0, random_lite0), TeacherSpec(LITE0)], input_size=64, max_images=24, seed=0)
    assert result["images"] == 24 and result["classes"] == 3 and result["task"] == str(cifar_small)
    first, second = result["ranking"]
    assert (first["rank"], first["weights"]) == (1, None) and (second["rank"], second["weights"]) == (2, str(random_lite0))
    assert 0 < first["score"] < second["score"] - 0.02 and first["seconds"] > 0
    json.dumps(result)


def test_teacher_without_a_linear_classifier(cifar_small, tmp_path):
    checkpoint = save_random("dla46_c", tmp_path / "dla.safetensors")  # DLA's classifier is a 1x1 Conv2d
    with pytest.raises(ProcedgeError, match="Conv2d classifier, not a Linear"):
        assess_teachers(cifar_small, [TeacherSpec("dla46_c", checkpoint)], input_size=32, max_images=6, seed=0)


def test_checks_before_reading_data(tmp_path):
    with pytest.raises(ProcedgeError, match="needs a checkpoint"):
        assess_teachers(tmp_path / "nope", [TeacherSpec("resnet18")])
    with pytest.raises(ProcedgeError, match="does not exist"):
        assess_teachers(tmp_path / "nope", [TeacherSpec(LITE0, tmp_path / "missing.safetensors")])


def test_cli_assess_writes_json_and_prints_the_ranking(cifar_small, tmp_path):
    assert CliRunner().invoke(main, ["assess", "--help"]).exit_code == 0
    out = tmp_path / "assess.json"
    result = CliRunner().invoke(main, ["assess", "--data", str(cifar_small), "--teachers", LITE0, "--input-size", "64",
                                       "--max-images", "12", "--out", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    ranking = json.loads(out.read_text())["ranking"]
    assert [(r["rank"], r["teacher"], r["weights"]) for r in ranking] == [(1, LITE0, None)]
    assert LITE0 in result.output and "embedded" in result.output and f"{ranking[0]['score']:.4f}" in result.output


@pytest.mark.parametrize("teachers, fragment", [("", "empty"), ("=weights.pt", "no model name"), (f"{LITE0},", "empty entry")])
def test_cli_malformed_teachers(tmp_path, teachers, fragment):
    result = CliRunner().invoke(main, ["assess", "--teachers", teachers, "--out", str(tmp_path / "a.json")])
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "a.json").exists()
