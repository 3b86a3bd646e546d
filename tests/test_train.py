"""The training loop for real: torchrun with two CPU processes, resume after a SIGKILL, a diverging run, method options."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from procedge.config import RunConfig
from procedge.distill import resolve_config
from procedge.errors import ProcedgeError
from procedge.models.load import build_student, load_trained
from procedge.models.teacher import create_teacher_model
from procedge.run import RunDir
from procedge.train import labelled_passes, labelled_repeats
from test_cli import assert_one_line_error, run_cli

pytestmark = pytest.mark.usefixtures("one_thread")

# The embedded MNIST task at 32 px: about 10 s an epoch on one core.
TINY = ("--target", "intel-cpu", "--student", "resnet10t", "--teacher-size", "32", "--student-size", "32", "--teacher-views", "0")
TORCHRUN = Path(sys.executable).with_name("torchrun")


def subprocess_env(cache_dir: Path, quiet: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PROCEDGE_CACHE_DIR=str(cache_dir))
    if quiet:
        env["PROCEDGE_QUIET"] = "1"
    else:
        env.pop("PROCEDGE_QUIET", None)
    return env


def run_group(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float) -> tuple[int, str]:
    """Run a command in its own process group (torchrun and its workers); on timeout kill that group. Returns (status, output)."""
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"{cmd[0]} ran over {timeout} s:\n{output[-4000:]}")
    return proc.returncode, output


def all_finite(state: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.slow
def test_torchrun_two_cpu_processes_train_one_run_written_by_rank_0(tmp_path):
    out = tmp_path / "runs" / "ddp"
    cache = tmp_path / "cache"  # empty: rank 0 must compute the teacher features, rank 1 must read them
    env = subprocess_env(cache, quiet=False)  # progress lines tell which process ran the teacher
    env["CUDA_VISIBLE_DEVICES"] = ""  # two CPU processes on gloo, also on a machine with one GPU
    cmd = [TORCHRUN, "--standalone", "--nproc_per_node=2", "-m", "procedge", "distill", *TINY, "--epochs", "2", "--out", out]
    returncode, log = run_group([str(c) for c in cmd], env, tmp_path, timeout=500)
    assert returncode == 0, log[-4000:]

    assert log.count("data: mnist") == 2  # both processes ran
    assert log.count("teacher features (train)") == 1, log[-4000:]  # rank 1 read rank 0's cache
    assert log.count("teacher features (held-out)") == 1  # only rank 0 evaluates
    entries = list((cache / "teacher").iterdir())
    assert len(entries) == 2 and not any(e.name.startswith(".") for e in entries), entries  # train and held-out, no leftovers

    # Only rank 0 wrote: the finished artifacts and nothing else, no temporary files beside the run.
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "heldout.npz", "metrics.json", "sizing.json", "student.pt",
                                                     "teacher_probe.pt", "training.png"]
    assert [p.name for p in out.parent.iterdir()] == ["ddp"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["processes"] == 2
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert metrics["train_images"] == 4000 and metrics["heldout_images"] == 1000
    # One process with the same config reaches about 97%; two processes with half of each global batch each should too.
    assert metrics["student_accuracy"] > 0.8, metrics
    assert metrics["history"][1]["heldout_accuracy"] > metrics["history"][0]["heldout_accuracy"] - 0.05

    trained = load_trained(RunDir(out))
    heldout = RunDir(out).load_heldout()
    with torch.no_grad():
        logits = trained.student_net()(torch.from_numpy(heldout["student"]).float() / 255)
    assert logits.shape == (1000, 10)
    accuracy = (logits.argmax(1) == torch.from_numpy(heldout["labels"])).float().mean().item()
    assert abs(accuracy - metrics["student_accuracy"]) < 0.02  # the loaded student is the one that was evaluated


@pytest.mark.slow
def test_resume_after_sigkill_loses_at_most_one_epoch(tmp_path):
    out = tmp_path / "run"
    run = RunDir(out)
    env = subprocess_env(Path(os.environ["PROCEDGE_CACHE_DIR"]))
    log = (tmp_path / "log.txt").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "procedge", "distill", *TINY, "--epochs", "3", "--out", str(out)],
                            env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while not run.last_checkpoint.exists():
            assert proc.poll() is None, (tmp_path / "log.txt").read_text()
            assert time.monotonic() < deadline, "no last.pt after 300 s"
            time.sleep(0.1)
        time.sleep(0.2)  # into epoch 2, which takes about 10 s on 2 CPU cores and 2 s on an H100
    finally:
        proc.kill()
        proc.wait()
        log.close()
    assert proc.returncode == -9, (proc.returncode, (tmp_path / "log.txt").read_text())
    assert not run.student.exists() and not run.metrics.exists()
    before = torch.load(run.last_checkpoint, map_location="cpu", weights_only=True)
    assert before["epoch"] == 0 and [h["epoch"] for h in before["history"]] == [1]  # killed during epoch 2

    # No --target: the run's config says everything. A subprocess with one thread, like the first run: two OpenMP threads
    # spinning on a busy 2-core machine make training many times slower.
    returncode, output = run_group([sys.executable, "-m", "procedge", "distill", "--out", str(out), "--resume"], env, tmp_path, timeout=400)
    assert returncode == 0, output[-4000:]
    metrics = run.read_metrics()
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3]
    assert metrics["history"][0] == before["history"][0]  # epoch 1 kept as recorded before the kill (same seconds)
    # Epoch 2 continued from the checkpoint (CE about 1.0 in epoch 1, 0.16 in epoch 2); from scratch it would be about 1.0 again.
    assert metrics["history"][1]["loss_s"] < 0.5 * metrics["history"][0]["loss_s"], metrics["history"]
    assert metrics["student_accuracy"] > 0.8, metrics
    assert run.student.exists() and not run.last_checkpoint.exists()
    assert RunConfig.load(run.config).train.epochs == 3


def test_diverging_run_stops_in_epoch_2_and_keeps_epoch_1_checkpoint(cifar_small, tmp_path):
    """30 training images and a batch of 64: one step an epoch. A 1e30 peak rate leaves finite but huge weights after
    epoch 1's step, and epoch 2's forward overflows."""
    out = tmp_path / "run"
    run = RunDir(out)
    result = run_cli("distill", "--target", "intel-cpu", "--data", cifar_small, "--student", "resnet10t", "--teacher-size", "32",
                     "--student-size", "32", "--epochs", "2", "--lr", "1e30", "--out", out)
    line = assert_one_line_error(result, "in epoch 2")
    assert re.search(r"loss term '(s|t|a|kl|loc)' became (nan|inf|-inf) in epoch 2", line), line
    assert str(run.last_checkpoint) in line and "lower the learning rate" in line
    assert not run.student.exists() and not run.metrics.exists()
    assert yaml.safe_load(run.config.read_text())["train"]["lr"] == 1e30

    state = torch.load(run.last_checkpoint, map_location="cpu", weights_only=True)
    assert state["epoch"] == 0 and [h["epoch"] for h in state["history"]] == [1]
    assert all_finite(state["backbone"]) and all_finite(state["method"])
    config = RunConfig.load(run.config)
    backbone, method = build_student(config, create_teacher_model(config.teacher.name, config.teacher.weights), 3)
    backbone.load_state_dict(state["backbone"])
    method.load_state_dict(state["method"])


def test_a_weight_that_overflows_its_term_stops_before_the_step(cifar_small, tmp_path):
    out = tmp_path / "run"
    run = RunDir(out)
    result = run_cli("distill", "--target", "intel-cpu", "--data", cifar_small, "--student", "resnet10t", "--teacher-size", "32",
                     "--student-size", "32", "--epochs", "2", "--method", "fitnets", "--method-option", "w_hint=1e39", "--out", out)
    line = assert_one_line_error(result, "loss term 'hint' times its weight 1e+39 became inf in epoch 1")
    assert "none (no epoch finished yet)" in line
    assert not run.last_checkpoint.exists() and not run.student.exists()
    assert yaml.safe_load(run.config.read_text())["method_options"]["w_hint"] == 1e39


@pytest.mark.parametrize("option, fragment", [
    ("w_bogus=1", "option w_bogus: "),
    ("w_hint=-1", "option w_hint: "),
    ("w_hint", "--method-option 'w_hint' is not KEY=VALUE"),
    ("=3", "--method-option '=3' is not KEY=VALUE"),
    ("w_hint=[1", "--method-option 'w_hint=[1': the value is not valid YAML"),
])
def test_bad_method_option_is_one_line(tmp_path, option, fragment):
    out = tmp_path / "r"
    result = run_cli("distill", *TINY, "--method", "fitnets", "--method-option", option, "--out", out)
    assert_one_line_error(result, fragment)
    assert not out.exists()


def test_method_options_lr_and_batch_size_reach_the_config():
    config, _ = resolve_config("intel-cpu", student="resnet10t", method="inverted-projection",
                               method_options={"teacher_free": True, "rank": 4}, lr=1e-3, batch_size=32)
    assert config.method_options["teacher_free"] is True and config.method_options["rank"] == 4
    assert config.method_options["w_ce"] == 1.0  # every option is saved, defaults too: the config pins the run
    assert (config.train.lr, config.train.batch_size) == (1e-3, 32)
    default, _ = resolve_config("intel-cpu", student="resnet10t")
    assert (default.train.lr, default.train.batch_size) == (2e-3, 64)
    with pytest.raises(ProcedgeError, match="option rank: "):
        resolve_config("intel-cpu", student="resnet10t", method="inverted-projection", method_options={"rank": 0})


def test_method_option_values_are_read_as_yaml():
    from procedge.cli import parse_method_options
    from procedge.methods.base import parse_method_config

    options = parse_method_options(("w_hint=0.5", "teacher_free=true", "rank=4", "w_ce=1e-3", "w_hint=2"))
    assert options == {"w_hint": 2, "teacher_free": True, "rank": 4, "w_ce": "1e-3"}  # the last of a repeated key wins
    assert parse_method_config("fitnets", {"w_ce": options["w_ce"]}).w_ce == 1e-3  # YAML 1.1 keeps 1e-3 as text; pydantic reads it


def test_target_is_required_except_for_resume(tmp_path):
    assert_one_line_error(run_cli("distill", "--out", tmp_path / "r"), "--target is required")
    assert_one_line_error(run_cli("distill", "--resume"), "--target is required")
    assert_one_line_error(run_cli("distill", "--resume", "--out", tmp_path / "r"), "nothing to resume")


def test_schedule_is_chosen_from_the_data():
    from procedge.distill import Schedule

    photos = Schedule.for_data(labelled=200, pool=0, image_side=500, native_size=224, embedded=False)
    assert (photos.epochs, photos.teacher_views, photos.teacher_size) == (60, 8, 224)
    cifar_pool = Schedule.for_data(labelled=1000, pool=10_000, image_side=32, native_size=224, embedded=False)
    assert (cifar_pool.epochs, cifar_pool.teacher_views, cifar_pool.teacher_size) == (60, 4, 160)  # small images: 160 px
    large = Schedule.for_data(labelled=50_000, pool=0, image_side=32, native_size=224, embedded=False)
    assert large.teacher_views == 0  # past 20,000 images the teacher passes of cached views cost too much
    mnist = Schedule.for_data(labelled=4000, pool=0, image_side=28, native_size=224, embedded=True)
    assert (mnist.epochs, mnist.teacher_views, mnist.teacher_size) == (6, 4, 128)
    # a pretrained student: 24,000 image-steps at batch 64 and lr 5e-4 with a pool, 48,000 (at most 48 epochs) labelled only
    assert (photos.fine_tuning().epochs, cifar_pool.fine_tuning().epochs) == (48, 5)
    cifar_labelled = Schedule.for_data(labelled=1000, pool=0, image_side=32, native_size=224, embedded=False)
    assert (cifar_labelled.epochs, cifar_labelled.fine_tuning().epochs) == (24, 48)
    assert (cifar_pool.fine_tuning().batch_size, cifar_pool.fine_tuning().lr) == (None, 5e-4)
    clothing = Schedule.for_data(labelled=500, pool=2568, image_side=256, native_size=260, embedded=False, teacher_gflops=1.72)
    assert (clothing.teacher_views, clothing.fine_tuning().epochs) == (3, 8)  # views budgeted in teacher compute: Lite2 @260
    large_teacher = Schedule.for_data(labelled=1000, pool=10_000, image_side=32, native_size=260, embedded=False, teacher_gflops=1.72,
                                      teacher_size=224)  # a given teacher size is what its passes cost: Lite2 @224 affords 1 view
    assert (large_teacher.teacher_size, large_teacher.teacher_views) == (224, 0)
    assert (cifar_pool.batch_size, cifar_pool.lr, photos.batch_size) == (256, 4e-3, None)  # the pool recipe, only with a pool
    demo = Schedule.for_data(labelled=100, pool=3900, image_side=28, native_size=224, embedded=True)
    assert (demo.epochs, demo.teacher_views, demo.batch_size) == (28, 8, 256)  # the embedded pool: 120,000 image-steps,
    assert labelled_passes(100, 3900, demo.labelled_share) == 4  # of 4,300 an epoch: each labelled image 4 times
    big_pool = Schedule.for_data(labelled=1000, pool=40_000, image_side=32, native_size=224, embedded=False)
    assert (big_pool.epochs, big_pool.teacher_views) == (15, 0)  # fewer than 2 views affordable: fresh crops instead
    assert (cifar_pool.labelled_share, photos.labelled_share) == (1 / 11, 0.0)  # labelled images keep 1/11 of a pool's epoch
    once = Schedule.for_data(labelled=1000, pool=40_000, image_side=32, native_size=224, embedded=False, labelled_share=0.0)
    assert once.epochs == 17 and once.labelled_share == 0.0  # asked: every image once an epoch
    assert (photos.crop_area, cifar_pool.crop_area, mnist.crop_area) == (0.35, 0.8, 0.8)  # small images keep their object
    alone = Schedule.for_data(labelled=200, pool=0, image_side=500, native_size=224, embedded=False, reads_teacher=False)
    assert alone.teacher_views == 0  # no teacher targets to keep consistent with fixed views
    live = Schedule.for_data(labelled=1000, pool=10_000, image_side=32, native_size=224, embedded=False, live_teacher=True)
    assert (live.epochs, live.teacher_views, live.batch_size) == (60, 0, 256)  # new views every epoch keep paying for longer
    assert Schedule.for_data(labelled=1000, pool=49_000, image_side=32, native_size=224, embedded=False, live_teacher=True).epochs == 13


def test_labelled_images_keep_their_share_of_an_epoch_however_large_the_pool():
    assert [labelled_passes(1000, pool, 1 / 11) for pool in (0, 5_000, 10_000, 44_000, 100_000)] == [1, 1, 1, 4, 10]
    assert labelled_passes(1000, 44_000, 0.0) == 1 and labelled_passes(0, 44_000, 1 / 11) == 1  # asked once; nothing labelled
    labels = torch.tensor([0, 1] * 5 + [-1] * 200)  # 10 labelled, 200 unlabelled: 2 passes reach 1/11
    repeat = labelled_repeats(labels, 1 / 11)
    assert sorted(repeat.tolist()) == list(range(10)) and len(labelled_repeats(labels, 0.0)) == 0


def test_the_labelled_share_is_saved_in_the_config_and_may_be_turned_off():
    pool = {"student": "resnet10t", "labels_per_class": 5, "device": "cpu"}  # the embedded data: 50 labelled, 3,950 pool
    default, _ = resolve_config("intel-cpu", **pool)
    once, _ = resolve_config("intel-cpu", labelled_share=0.0, **pool)
    assert (default.data.labelled_share, default.train.epochs) == (1 / 11, 28)  # 8 passes of the 50: 4,350 an epoch
    assert (once.data.labelled_share, once.train.epochs) == (0.0, 30)  # 4,000 an epoch
    alone, _ = resolve_config("intel-cpu", method="none", **pool)
    assert alone.data.labelled_share == 0.0  # no pool in its run: nothing to keep a share of


def test_a_pool_run_on_a_gpu_takes_the_teacher_live(cifar_small):
    """Live on every fresh crop where a CUDA device makes it cheap and a pool makes it pay; cached views otherwise. Nothing
    here touches CUDA: the choice reads the --device string (auto: whether PyTorch sees a GPU)."""
    pool = {"student": "resnet10t", "labels_per_class": 5}
    gpu, _ = resolve_config("intel-cpu", device="cuda", **pool)
    assert (gpu.data.live_teacher, gpu.data.teacher_views, gpu.data.augment, gpu.train.epochs) == (True, 0, True, 28)  # the demo's
    cpu, _ = resolve_config("intel-cpu", device="cpu", **pool)
    assert (cpu.data.live_teacher, cpu.data.teacher_views) == (False, 8)
    assert not resolve_config("intel-cpu", device="cuda", teacher_views=2, **pool)[0].data.live_teacher  # views asked for
    assert not resolve_config("intel-cpu", device="cuda", live_teacher=False, **pool)[0].data.live_teacher  # --cached-teacher
    assert not resolve_config("intel-cpu", device="cuda", data=cifar_small, student="resnet10t")[0].data.live_teacher  # no pool
    assert not resolve_config("intel-cpu", device="cuda", method="none", live_teacher=True, **pool)[0].data.live_teacher  # reads no teacher
    asked, _ = resolve_config("intel-cpu", device="cpu", live_teacher=True, **pool)
    assert (asked.data.live_teacher, asked.data.teacher_views) == (True, 0)
    with pytest.raises(ProcedgeError, match="drop --teacher-views"):
        resolve_config("intel-cpu", live_teacher=True, teacher_views=2, **pool)
    with pytest.raises(ValueError, match="live_teacher needs augment"):
        asked.data.model_validate({**asked.data.model_dump(), "teacher_views": 2})


def test_a_live_teacher_run_trains_on_the_pool_without_a_view_cache(tmp_path, monkeypatch):
    import procedge.distill as distill_module

    def no_cache(*args, **kwargs):
        raise AssertionError("a live-teacher run must not cache teacher views")

    monkeypatch.setattr(distill_module, "teaching_cache", no_cache)
    config, _ = resolve_config("intel-cpu", student="resnet10t", teacher_size=32, student_size=32, labels_per_class=3,
                               live_teacher=True, epochs=1)
    metrics = distill_module.distill(config, tmp_path / "run")
    assert (metrics["train_images"], metrics["unlabeled_images"]) == (30, 3970)  # the embedded 4,000 less 3 labels a class
    terms = {k: v for k, v in metrics["history"][0].items() if k.startswith("loss_")}
    assert all(math.isfinite(v) for v in terms.values()) and terms["loss_soft"] > 0 and terms["loss_emb"] > 0  # the live teacher's


def test_every_run_augments_by_default_and_a_distilled_one_on_cached_views(cifar_small):
    alone, _ = resolve_config("intel-cpu", data=cifar_small, method="none", student="resnet10t")
    distilled, _ = resolve_config("intel-cpu", data=cifar_small, method="proc-kd", student="resnet10t")
    assert (alone.data.teacher_views, alone.data.augment) == (0, True)
    assert (distilled.data.teacher_views, distilled.data.augment) == (8, True)
    uncached, _ = resolve_config("intel-cpu", data=cifar_small, method="proc-kd", student="resnet10t", teacher_views=0)
    assert uncached.data.augment  # fresh crops on the teacher's centre-crop targets rather than no augmentation
    plain, _ = resolve_config("intel-cpu", data=cifar_small, method="none", student="resnet10t", augment_data=False)
    assert not plain.data.augment  # --no-augment is kept


def test_user_photos_get_a_pretrained_student_with_a_fine_tuning_schedule(cifar_small):
    """On a user's folder the default teacher is Lite2 (at 160 px for these 32-px images), and an installed Lite weight
    package serves the student, at the largest size timed (on this host's OpenVINO, intel-cpu's runtime) at least the
    asked speedup faster than the teacher. Asked 2x: a margin no machine's timing noise crosses (Lite0 at 96 px, the
    smallest size tried, is about 4x)."""
    config, sizing = resolve_config("intel-cpu", data=cifar_small, method="none", teacher_views=0, speedup=2)
    assert (config.teacher.name, config.teacher.input_size) == ("tf_efficientnet_lite2", 160)
    assert config.student.name.startswith("tf_efficientnet_lite") and config.student.pretrained and sizing["pretrained"]
    assert sizing["timed_speedup"] >= 2 and sizing["asked_speedup"] == 2
    assert config.student.input_size == sizing["input_size"] < 224
    assert config.train.lr == 5e-4 and config.train.epochs == 48  # 29 labelled images, labelled only: capped at 48
    given, _ = resolve_config("intel-cpu", data=cifar_small, method="none", teacher_views=0, lr=1e-3, student="resnet10t")
    assert (given.student.pretrained, given.train.lr) == (False, 1e-3)


def test_a_method_without_label_free_terms_trains_without_the_pool():
    from procedge.methods.base import reads_unlabelled

    assert not reads_unlabelled("none", {})
    assert reads_unlabelled("none", {"w_emb": 1.0}) and reads_unlabelled("pseudo-label", {}) and reads_unlabelled("proc-kd", {})
    assert not reads_unlabelled("pseudo-label", {"w_soft": 0.0})
    config, _ = resolve_config("intel-cpu", student="resnet10t", method="none", labels_per_class=5, teacher_views=0)
    assert config.train.epochs == 60  # 50 labelled images: the schedule's most epochs
    assert config.data.labels_per_class == 5 and config.data.unlabeled is None


def test_cutmix_is_for_a_pool_with_cached_views():
    config, _ = resolve_config("intel-cpu", student="resnet10t", labels_per_class=5, cutmix=0.5, teacher_views=2)
    assert (config.data.cutmix, config.data.teacher_views) == (0.5, 2)
    alone, _ = resolve_config("intel-cpu", student="resnet10t", method="none", labels_per_class=5, cutmix=0.5, teacher_views=0)
    assert alone.data.cutmix == 0.0  # a method without label-free terms has no pool to mix
    with pytest.raises(ProcedgeError, match="--cutmix mixes unlabelled pool images"):
        resolve_config("intel-cpu", student="resnet10t", cutmix=0.5)
    with pytest.raises(ProcedgeError, match="pass --teacher-views 2 or more"):
        resolve_config("intel-cpu", student="resnet10t", labels_per_class=5, cutmix=0.5, teacher_views=0)
    with pytest.raises(ValueError, match="cutmix needs teacher_views"):
        config.data.model_validate({**config.data.model_dump(), "teacher_views": 0})


@pytest.mark.parametrize("args, fragment", [
    (("--workers", "-1"), "--workers -1: pass 0"),
    (("--device", "tpu"), "--device 'tpu' is not a device"),
])
def test_bad_workers_or_device_is_one_line(tmp_path, args, fragment):
    assert_one_line_error(run_cli("distill", *TINY, "--epochs", "1", "--out", tmp_path / "r", *args), fragment)


def test_files_deleted_or_truncated_after_the_listing_are_skipped_and_counted(cifar_small, tmp_path, monkeypatch):
    """A run lists its files, then two of them go bad before they are read: the run finishes and counts them each epoch."""
    import procedge.distill as distill_module

    listed = distill_module.load_task_data

    def list_then_damage(*args, **kwargs):
        data = listed(*args, **kwargs)
        data.train.paths[0].unlink()
        data.train.paths[1].write_bytes(data.train.paths[1].read_bytes()[:30])
        return data

    monkeypatch.setattr(distill_module, "load_task_data", list_then_damage)
    out = tmp_path / "run"
    result = run_cli("distill", "--target", "intel-cpu", "--data", cifar_small, "--student", "resnet10t", "--teacher-size", "32",
                     "--student-size", "32", "--epochs", "2", "--method", "none", "--augment", "--workers", "0", "--out", out)
    assert result.exit_code == 0, result.output
    metrics = RunDir(out).read_metrics()
    assert [h["skipped_images"] for h in metrics["history"]] == [2, 2]
    assert metrics["skipped_files_while_training"] == 4


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions; run as a user to check this")
def test_files_without_read_permission_are_skipped_and_counted(cifar_small):
    from procedge.data import load_image_folder

    for path in sorted((cifar_small / "cat").iterdir())[:3]:
        path.chmod(0)
    data = load_image_folder(cifar_small, 0.25, 0)
    assert data.skipped_files == 3 and len(data.train) + len(data.val) == 33


def test_a_saved_config_reproduces_its_run_with_overrides(tmp_path):
    """`distill --config` runs from a saved config.yaml; the options given override it, the rest is the file's."""
    config, _ = resolve_config("intel-cpu", student="resnet10t", method="none", labels_per_class=5, teacher_size=32, student_size=32,
                               teacher_views=0, epochs=3)
    config.save(tmp_path / "config.yaml")
    result = run_cli("distill", "--config", tmp_path / "config.yaml", "--epochs", "1", "--seed", "3", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    rerun = RunConfig.load(tmp_path / "r" / "config.yaml")
    assert rerun == config.model_copy(update={"train": config.train.model_copy(update={"epochs": 1, "seed": 3})})
    assert len(json.loads((tmp_path / "r" / "metrics.json").read_text())["history"]) == 1


@pytest.mark.parametrize("args, fragment", [
    (["--student", "resnet18"], "--student cannot override --config"),
    (["--resume"], "--config starts a new run"),
    (["--method-option", "w_nope=1"], "w_nope"),
])
def test_config_overrides_that_cannot_apply(tmp_path, args, fragment):
    config, _ = resolve_config("intel-cpu", student="resnet10t", method="none", teacher_size=32, student_size=32, teacher_views=0, epochs=1)
    config.save(tmp_path / "config.yaml")
    assert_one_line_error(run_cli("distill", "--config", tmp_path / "config.yaml", *args, "--out", tmp_path / "r"), fragment)


def test_a_damaged_config_file_names_the_field(tmp_path):
    config, _ = resolve_config("intel-cpu", student="resnet10t", method="none", teacher_size=32, student_size=32, teacher_views=0, epochs=1)
    raw = config.model_dump(mode="json")
    raw["train"]["epochs"] = 0
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    assert_one_line_error(run_cli("distill", "--config", tmp_path / "config.yaml", "--out", tmp_path / "r"), "train.epochs")
    (tmp_path / "config.yaml").write_text("{not: [yaml")
    assert_one_line_error(run_cli("distill", "--config", tmp_path / "config.yaml", "--out", tmp_path / "r"), "unreadable or invalid")
